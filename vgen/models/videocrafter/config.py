"""Schema of the VideoCrafter2 family's model group (no MindSpore imports here)."""
from dataclasses import dataclass, field
from typing import List, Optional

from ...config.models import IDDPMConfig, ModelConfig, TextEncoderConfig, VAEConfig


def vc2_ddpm() -> IDDPMConfig:
    """lvdm's LatentDiffusion: eps-prediction, betas (linspace(sqrt 0.00085, sqrt 0.012, 1000))^2
    (diffusers' scaled_linear), a fixed variance; sampled with DDIM (50 steps at lvdm's uniform
    timesteps 1, 21, .., 981; CFG 12 as VideoCrafter2's inference scripts)."""
    return IDDPMConfig(noise_schedule="scaled_linear", learn_sigma=False, sampling_steps=50, cfg_scale=12.0,
                       sampler="ddim", ddim_timesteps="leading")


@dataclass
class VC2Config(ModelConfig):
    """VideoCrafter2's UNet (1,413,284,420 parameters; T2V-Turbo's student adds time_cond_proj)."""

    family: str = "videocrafter2"
    input_size: List[int] = field(default_factory=lambda: [16, 40, 64])  # latent (T, H, W) of 16 x 320 x 512
    in_channels: int = 4
    model_channels: int = 320
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    attention_resolutions: List[int] = field(default_factory=lambda: [4, 2, 1])
    head_channels: int = 64
    context_dim: int = 1024  # OpenCLIP ViT-H/14 text width
    init_attn_heads: int = 8
    norm_groups: int = 32  # GroupNorm groups (the tiny config: 8, so that groups hold several channels)
    time_cond_proj_dim: Optional[int] = None  # T2V-Turbo's student: 256 (the embedded guidance)
    train_guidance: float = 7.5  # the student's embedded guidance when fine-tuned as a denoiser (its sampling w)
    text_len: int = 77
    text_dropout: float = 0.2  # lvdm's uncond_prob default; dropped captions are the empty prompt's states
    objective: IDDPMConfig = field(default_factory=vc2_ddpm)
    text_encoder: TextEncoderConfig = field(
        default_factory=lambda: TextEncoderConfig(name="open-clip-vit-h-14", max_length=77))
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(name="sd-vae-ft-ema"))
