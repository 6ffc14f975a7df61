"""Schemas of the model group: one dataclass per family (no MindSpore imports here)."""
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class IDDPMConfig:
    kind: str = "iddpm"
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"  # linear (betas 1e-4..0.02) | squaredcos_cap_v2
    learn_sigma: bool = True  # learned-range variance trained by the VLB term
    sampling_steps: int = 100  # respaced steps of the sampler
    cfg_scale: float = 7.0


@dataclass
class ModelConfig:
    family: str = MISSING
    name: str = MISSING
    pretrained: Optional[str] = None  # safetensors file in the official layout
    dtype_exempt: List[str] = field(default_factory=list)  # name patterns kept in fp32 under bf16/fp16


@dataclass
class STDiTConfig(ModelConfig):
    """OpenSora 1.0 STDiT (XL/2 at the official sizes)."""

    family: str = "opensora_stdit"
    input_size: List[int] = field(default_factory=lambda: [16, 32, 32])  # latent (T, H, W)
    in_channels: int = 4
    patch_size: List[int] = field(default_factory=lambda: [1, 2, 2])
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    caption_channels: int = 4096
    model_max_length: int = 120
    class_dropout_prob: float = 0.1
    space_scale: float = 0.5  # 0.5 at 256px, 1.0 at 512px
    time_scale: float = 1.0  # 2/3 for 64 frames
    pred_sigma: bool = True
    latent_scale: float = 0.18215  # sd-vae-ft-ema scaling of cached latents
    objective: IDDPMConfig = field(default_factory=IDDPMConfig)
