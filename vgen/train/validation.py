"""Validation videos during training (schedule.val_every): the `sample` group's fixed prompts and
seeds, drawn with the trained net as it stands (its EMA weights when the run keeps an EMA, written
into the net in place and the master weights written back after), decoded by the family's VAE
(built for the occasion and freed, so memory returns to the training level), written to
<run>/samples/step_<n>/ and to TensorBoard as animated images. The prompts are encoded once, at
setup, and the text encoders freed. Every rank draws every prompt (the net may be sharded or
sequence-parallel); the first rank writes."""
import gc
import logging
import time
from pathlib import Path

from ..runtime import memory_gb

log = logging.getLogger("vgen")


class Validation:
    def __init__(self, cfg, family, buckets, sync, is_main: bool):
        from ..sample.conditioning import encoded_batches
        from ..sample.run import read_prompts
        from ..sample.sampler import Sampler

        s = cfg.sample
        self.cfg, self.family, self.buckets, self.sync, self.is_main = cfg, family, buckets, sync, is_main
        self.prompts = read_prompts(s)
        self.sampler = Sampler(family, cfg.model, s, jit=cfg.jit)
        self.batches = encoded_batches(family, cfg.model, cfg.seed, self.prompts, list(range(len(self.prompts))),
                                       self.sampler.geometry, s, jit=False)  # encoded once: no compile
        self.use_ema = all(b.ema is not None for b in buckets) and cfg.schedule.ema_decay > 0

    def _weights(self, which: str) -> None:
        for b in self.buckets:
            b.write_params(which, self.sync.gather)

    def __call__(self, step: int, run_dir: Path, metrics=None) -> dict:
        """Draws, decodes and writes the videos of `step`; returns what it measured."""
        from ..models.encoders import build_vae
        from ..sample.output import video_name, write_sample
        from ..sample.sampler import Decoder

        s, t0, before = self.cfg.sample, time.perf_counter(), memory_gb()
        if self.use_ema:
            self._weights("ema")
        try:
            drawn = [(index, self.sampler.latents(cond, uncond, [s.seed + i for i in index]))
                     for index, cond, uncond in self.batches]
        finally:
            if self.use_ema:
                self._weights("master")
        # PyNative: a graph compiled for a VAE built per validation would stay in MindSpore's cache
        decoder = Decoder(build_vae(self.cfg.model.vae, self.cfg.seed), self.family.latent,
                          self.cfg.model.vae.frames_per_call, jit=False)
        folder = run_dir / "samples" / f"step_{step}"
        settings = {**self.sampler.settings(), "model": self.cfg.model.name, "step": step,
                    "weights": "ema" if self.use_ema else "model", "fps": s.fps}
        peak = memory_gb()
        for index, latents in drawn:
            frames = decoder(latents)
            peak = max(peak, memory_gb())
            if not self.is_main:
                continue
            for j, i in enumerate(index):
                meta = {**settings, "prompt": self.prompts[i], "index": i, "seed": s.seed + i}
                write_sample(folder, video_name(i, self.prompts[i], s.seed + i), meta, frames[j], s.fps)
                if metrics is not None:
                    metrics.video(f"val/{i:04d}", frames[j], step, fps=s.fps)
        del decoder
        gc.collect()
        after = memory_gb()
        out = {"val_videos": len(self.prompts), "val_time_s": time.perf_counter() - t0, "val_rss_before_gb": before,
               "val_rss_peak_gb": peak, "val_rss_after_gb": after}
        if self.is_main:
            log.info("validation at step %d: %d videos in %.1f s (%s weights) -> %s; RSS %.2f GB before, %.2f peak, "
                     "%.2f after", step, len(self.prompts), out["val_time_s"], settings["weights"], folder, before,
                     peak, after)
        return out
