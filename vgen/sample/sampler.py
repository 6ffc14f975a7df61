"""Noise -> latents -> frames with a built family whose weights are in place: the noise of video i
from its seed alone (keyed_rng(seed, 0, 0, "noise"); the ancestral noise of IDDPM from the
"sampler_noise" stream), so a video does not depend on the batch it was drawn in; the family's
own sampler (IDDPM / DDIM respaced, Euler flow with its shift) on the guided model; decoding
with the family's VAE (latent / scale + shift, its tiled decode_video)."""
from typing import Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..config.models import IDDPM_SAMPLERS
from ..config.validate import ConfigError
from ..models.family import resolve
from ..rng import keyed_rng
from .geometry import sample_geometry
from .guidance import GuidedModel


class Sampler:
    def __init__(self, family, model_cfg, sample_cfg, jit: bool = True):
        self.family = family
        if family.input_kind != "latent":
            raise ConfigError(f"model.family={family.spec.name}: an autoencoder, not a denoiser; vgen-sample draws "
                              "videos with the generative families (check a VAE with tools/eval_vae.py)")
        o = model_cfg.objective
        self.kind = o.kind
        self.geometry = sample_geometry(sample_cfg, family.latent)
        self.method = o.get("sampler", "iddpm") if sample_cfg.method == "default" else sample_cfg.method
        # a consistency student: 4 steps, its guidance embedded (no classifier-free guidance) unless told
        lcm = self.method == "lcm"
        self.steps = int(sample_cfg.steps or (4 if lcm else o.sampling_steps))
        default_cfg = 1.0 if lcm else o.cfg_scale
        self.cfg_scale = float(default_cfg if sample_cfg.cfg_scale is None else sample_cfg.cfg_scale)
        self.shift = None
        if self.kind == "rectified_flow":
            self.shift = float(o.sample_shift if sample_cfg.shift is None else sample_cfg.shift)
        elif self.method not in IDDPM_SAMPLERS:
            raise ConfigError(f"sample.method={sample_cfg.method!r}: IDDPM families sample with one of "
                              f"{list(IDDPM_SAMPLERS)} (lcm: a consistency-distilled student)")
        elif lcm and "guidance" not in family.fields:
            raise ConfigError(f"sample.method=lcm samples a consistency-distilled student, which embeds its "
                              f"guidance; model {model_cfg.name} has none (e.g. model=vc2_turbo or ms_turbo)")
        self.teacache = float(sample_cfg.get("teacache", 0.0) or 0.0)
        runner = None
        if self.teacache > 0:
            if not family.spec.teacache:
                raise ConfigError(f"sample.teacache={self.teacache}: family {family.spec.name} has no TeaCache "
                                  "(its rescaling coefficients are published for HunyuanVideo)")
            runner = resolve(family.spec.teacache)(family.net, self.teacache, self.steps, jit)
        self.model = GuidedModel(family, self.cfg_scale, self.geometry.latent[0], jit, runner)

    def settings(self) -> dict:
        """What decided the videos (written beside each)."""
        g = self.geometry
        out = {"sampler": self.method if self.kind == "iddpm" else "euler_flow", "steps": self.steps,
               "cfg_scale": self.cfg_scale, "num_frames": g.frames, "resolution": [g.height, g.width],
               "latent_shape": list(g.latent)}
        if self.shift is not None:
            out["shift"] = self.shift
        if self.teacache > 0:
            out["teacache"] = self.teacache
        return out

    def noise(self, seeds: Sequence[int]) -> np.ndarray:
        return np.stack([keyed_rng(int(s), 0, 0, "noise").standard_normal(self.geometry.latent, dtype=np.float32)
                         for s in seeds])

    def latents(self, cond: dict, uncond: dict, seeds: Sequence[int]) -> np.ndarray:
        """The model-space latents [B, C, T, h, w] of B prompts' inputs, one seed each."""
        model = self.model.condition(cond, uncond)
        noise = self.noise(seeds)
        objective = getattr(self.family.objective, "base", self.family.objective)  # a DPO / distillation stage's
        if self.kind == "iddpm":
            rngs = [keyed_rng(int(s), 0, 0, "sampler_noise") for s in seeds]
            return objective.sample(model, noise, rngs, self.steps, self.method)
        return np.asarray(objective.sample(model, noise, self.steps, self.shift), np.float32)


class Decoder:
    """Model-space latents -> uint8 frames [B, T, H, W, 3] through the family's VAE."""

    def __init__(self, vae, latent_spec, frames_per_call: int = 1, jit: bool = True):
        self.vae, self.spec, self.frames_per_call = vae, latent_spec, frames_per_call
        self.run = ms.jit(self._decode) if jit else self._decode

    def _decode(self, z):
        return self.vae.decode_video(z, self.frames_per_call)

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        z = latents / self.spec.scale + self.spec.shift
        video = np.concatenate([self.run(Tensor(z[i:i + 1].astype(np.float32))).asnumpy() for i in range(len(z))])
        return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 4, 1)
