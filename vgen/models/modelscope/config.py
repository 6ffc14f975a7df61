"""Schema of the ModelScope text-to-video family's model group (no MindSpore imports here)."""
from dataclasses import dataclass, field
from typing import List, Optional

from ...config.models import IDDPMConfig, ModelConfig, TextEncoderConfig, VAEConfig


def ms_ddpm() -> IDDPMConfig:
    """Latent diffusion's eps-prediction on the scaled-linear betas (0.00085..0.012, 1000 steps);
    sampled with DDIM, 50 steps at the scheduler's "leading" timesteps (steps_offset 1: 1, 21, ..,
    981), CFG 9 (diffusers' TextToVideoSDPipeline defaults)."""
    return IDDPMConfig(noise_schedule="scaled_linear", learn_sigma=False, sampling_steps=50, cfg_scale=9.0,
                       sampler="ddim", ddim_timesteps="leading")


@dataclass
class MSConfig(ModelConfig):
    """text-to-video-ms-1.7b's UNet3DConditionModel (1,411,233,860 parameters; T2V-Turbo's student
    adds time_embedding.cond_proj). Every level but the deepest has cross-attention (CrossAttnDown /
    UpBlock3D); the deepest is a plain DownBlock3D / UpBlock3D."""

    family: str = "modelscope"
    input_size: List[int] = field(default_factory=lambda: [16, 32, 32])  # latent (T, H, W) of 16 x 256 x 256
    in_channels: int = 4
    block_out_channels: List[int] = field(default_factory=lambda: [320, 640, 1280, 1280])
    layers_per_block: int = 2
    attention_head_dim: int = 64
    cross_attention_dim: int = 1024
    transformer_in_heads: int = 8
    norm_num_groups: int = 32  # the tiny config: 8 (one channel per group would normalise the time embedding away)
    time_cond_proj_dim: Optional[int] = None  # T2V-Turbo's student: 256 (the embedded guidance)
    train_guidance: float = 7.5  # the student's embedded guidance when fine-tuned as a denoiser
    text_len: int = 77
    text_dropout: float = 0.1  # ours (not published); dropped captions are the empty prompt's states
    objective: IDDPMConfig = field(default_factory=ms_ddpm)
    text_encoder: TextEncoderConfig = field(
        default_factory=lambda: TextEncoderConfig(name="clip-vit-h-14-sd2", max_length=77))
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(name="sd-vae-ft-ema"))
