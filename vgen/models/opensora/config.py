"""Schemas of the OpenSora families' model group (no MindSpore imports here)."""
from dataclasses import dataclass, field
from typing import Dict, List

from ...config.models import IDDPMConfig, ModelConfig, TextEncoderConfig, VAEConfig


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
    objective: IDDPMConfig = field(default_factory=IDDPMConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)


# OpenSora 1.1 training frame masks (probabilities summing to 1): "image" masks give one frame,
# "quarter" masks up to a quarter of the frames, at the head, tail, both, or a random position.
OPENSORA_MASK_RATIOS = {
    "mask_no": 0.75, "mask_quarter_random": 0.025, "mask_quarter_head": 0.025, "mask_quarter_tail": 0.025,
    "mask_quarter_head_tail": 0.05, "mask_image_random": 0.025, "mask_image_head": 0.025,
    "mask_image_tail": 0.025, "mask_image_head_tail": 0.05,
}


@dataclass
class STDiT2Config(ModelConfig):
    """OpenSora 1.1 STDiT2 (XL/2 at the official sizes)."""

    family: str = "opensora_stdit2"
    input_size: List[int] = field(default_factory=lambda: [16, 32, 32])  # default latent (T, H, W)
    in_channels: int = 4
    patch_size: List[int] = field(default_factory=lambda: [1, 2, 2])
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    caption_channels: int = 4096
    model_max_length: int = 200
    class_dropout_prob: float = 0.1
    input_sq_size: int = 512
    pred_sigma: bool = True
    mask_ratios: Dict[str, float] = field(default_factory=lambda: dict(OPENSORA_MASK_RATIOS))
    objective: IDDPMConfig = field(default_factory=IDDPMConfig)
    text_encoder: TextEncoderConfig = field(default_factory=lambda: TextEncoderConfig(max_length=200))
    vae: VAEConfig = field(default_factory=VAEConfig)
