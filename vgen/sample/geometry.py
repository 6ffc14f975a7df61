"""What a sample is: the latent to draw and the pixel clip it decodes to, from the sample settings
(sample.num_frames, sample.resolution) or, by default, the model's training latent (model.input_size)."""
from dataclasses import dataclass
from typing import Tuple

from ..config.validate import ConfigError


@dataclass(frozen=True)
class Geometry:
    latent: Tuple[int, int, int, int]  # (C, T, h, w)
    frames: int
    height: int
    width: int


def sample_geometry(sample_cfg, latent_spec) -> Geometry:
    """The latent of sample.num_frames x sample.resolution pixels; a size the VAE cannot produce
    exactly (e.g. 20 frames for a 4x causal VAE, which decodes 4k + 1) names the nearest one."""
    t, h, w = latent_spec.size
    ct, ch, cw = latent_spec.compression
    height, width = sample_cfg.resolution or (h * ch, w * cw)
    frames = sample_cfg.num_frames or latent_spec.pixel_frames(t)
    shape = latent_spec.latent_shape(frames, height, width)
    if height % ch or width % cw or shape[1] < 1 or latent_spec.pixel_frames(shape[1]) != frames:
        near = latent_spec.pixel_frames(max(shape[1], 1))
        raise ConfigError(f"sample.num_frames={frames}, sample.resolution=[{height}, {width}]: the VAE of "
                          f"{latent_spec.vae} decodes clips of {near} frames near that and sizes divisible by "
                          f"{ch}x{cw}; set sample.num_frames={near} and a resolution of multiples of {ch}x{cw}")
    return Geometry(shape, frames, height, width)
