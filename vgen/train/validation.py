"""Validation during training (schedule.val_every), with the trained net as it stands (its EMA
weights when the run keeps an EMA, written into the net in place and the master weights written
back after):
  videos   the `sample` group's fixed prompts and seeds, decoded by the family's VAE (built for the
           occasion and freed, so memory returns to the training level), written to
           <run>/samples/step_<n>/ and to TensorBoard as animated images; the prompts are encoded
           once, at setup, and the text encoders freed. Every rank draws every prompt (the net may
           be sharded or sequence-parallel); the first rank writes.
  loss     the family's loss on the data.holdout samples at fixed noise levels (heldout.py)."""
import gc
import logging
import time
from contextlib import nullcontext
from pathlib import Path

from ..runtime import memory_gb
from .flat_params import weights_held

log = logging.getLogger("vgen")


class Validation:
    def __init__(self, cfg, family, buckets, sync, mesh, data):
        s = cfg.sample
        self.cfg, self.family, self.buckets, self.sync, self.is_main = cfg, family, buckets, sync, mesh.is_main
        self.use_ema = all(b.ema is not None for b in buckets) and cfg.schedule.ema_decay > 0
        self.prompts, self.batches = [], []
        if s.prompts or s.prompt_file:
            from ..sample.conditioning import encoded_batches
            from ..sample.run import read_prompts
            from ..sample.sampler import Sampler

            self.prompts = read_prompts(s)
            self.sampler = Sampler(family, cfg.model, s, jit=cfg.jit)
            self.batches = encoded_batches(family, cfg.model, cfg.seed, self.prompts, list(range(len(self.prompts))),
                                           self.sampler.geometry, s, jit=False)  # encoded once: no compile
        self.heldout = None
        if cfg.data.get("holdout", 0) > 0:
            from .heldout import HeldOutLoss

            self.heldout = HeldOutLoss(cfg, family, data, mesh, sync)

    def _weights(self):
        """The net holds the EMA weights inside the block (when the run keeps one), its masters after."""
        return weights_held(self.buckets, "ema", self.sync.gather) if self.use_ema else nullcontext()

    def __call__(self, step: int, run_dir: Path, metrics=None) -> dict:
        """Scores the held-out samples and draws, decodes and writes the videos of `step`; returns
        what it measured."""
        s, t0, before = self.cfg.sample, time.perf_counter(), memory_gb()
        with self._weights():
            losses = self.heldout() if self.heldout is not None else {}
            drawn = [(index, self.sampler.latents(cond, uncond, [s.seed + i for i in index]))
                     for index, cond, uncond in self.batches]
        peak = memory_gb()
        folder = run_dir / "samples" / f"step_{step}"
        if drawn:
            peak = self._write_videos(step, drawn, folder, metrics)
        gc.collect()
        after = memory_gb()
        weights = "ema" if self.use_ema else "model"
        out = {**losses, "val_videos": len(self.prompts), "val_time_s": time.perf_counter() - t0,
               "val_rss_before_gb": before, "val_rss_peak_gb": max(peak, memory_gb()), "val_rss_after_gb": after}
        if self.is_main:
            loss = f"loss {losses['val_loss']:.5f} on {len(self.heldout.shapes)} held-out samples; " if losses else ""
            videos = f"{len(self.prompts)} videos -> {folder}; " if drawn else ""
            log.info("validation at step %d (%s weights): %s%s%.1f s; RSS %.2f GB before, %.2f peak, %.2f after",
                     step, weights, loss, videos, out["val_time_s"], before, out["val_rss_peak_gb"], after)
        return out

    def _write_videos(self, step: int, drawn, folder: Path, metrics) -> float:
        """Decodes and writes the drawn latents; returns the peak RSS seen while decoding."""
        from ..models.encoders import build_vae
        from ..sample.output import video_name, write_sample
        from ..sample.sampler import Decoder

        s = self.cfg.sample
        # PyNative: a graph compiled for a VAE built per validation would stay in MindSpore's cache
        decoder = Decoder(build_vae(self.cfg.model.vae, self.cfg.seed), self.family.latent,
                          self.cfg.model.vae.frames_per_call, jit=False)
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
        return peak
