"""Schemas of the HunyuanVideo families' model group (no MindSpore imports here)."""
from dataclasses import dataclass, field
from typing import List, Optional

from ...config.models import ModelConfig, RectifiedFlowConfig, TextEncoderConfig, VAEConfig


@dataclass
class HunyuanConfig(ModelConfig):
    """HunyuanVideo DiT (HYVideo-T/2-cfgdistill at the official sizes)."""

    family: str = "hunyuan"
    input_size: List[int] = field(default_factory=lambda: [33, 90, 160])  # latent (T, H, W): 129 x 720 x 1280
    in_channels: int = 16
    patch_size: List[int] = field(default_factory=lambda: [1, 2, 2])
    hidden_size: int = 3072
    num_heads: int = 24
    mlp_ratio: float = 4.0
    depth_double: int = 20
    depth_single: int = 40
    rope_dims: List[int] = field(default_factory=lambda: [16, 56, 56])
    rope_theta: float = 256.0
    text_dim: int = 4096  # LLM hidden states (LLaVA-LLaMA-3-8B hidden_states[-3])
    text_len: int = 256  # tokens after the prompt-template crop
    clip_dim: int = 768  # CLIP-L pooled
    refiner_depth: int = 2
    guidance_embed: bool = True  # the cfg-distilled release embeds the guidance scale
    train_guidance: float = 6.0  # guidance fed to guidance_in while training (the official default)
    text_dropout: float = 0.2  # captions replaced by the cached empty prompt
    objective: RectifiedFlowConfig = field(default_factory=RectifiedFlowConfig)
    # the frozen encoders (cache tools, online training): the LLM's states after the prompt template
    # (max_length = text_len tokens after the crop), CLIP's pooled vector (clip_dim), the causal 3D VAE
    text_encoder: TextEncoderConfig = field(
        default_factory=lambda: TextEncoderConfig(name="llava-llama-3-8b", max_length=256))
    text_encoder_2: TextEncoderConfig = field(
        default_factory=lambda: TextEncoderConfig(name="clip-vit-large-patch14", max_length=77))
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(name="hunyuan-vae-884-16c"))


@dataclass
class VAELossConfig:
    """Weights of the autoencoder training terms (not published for HunyuanVideo: ours follow
    the LDM/SD recipe). 0 disables a term."""

    l1: float = 1.0  # pixel L1 reconstruction
    kl: float = 1e-6  # KL of the posterior to N(0, I)
    lpips: float = 0.0  # perceptual (LPIPS); needs lpips_weights
    lpips_weights: Optional[str] = None  # converted LPIPS (VGG16 + linear heads) safetensors
    gan: float = 0.0  # adversarial weight on the decoder; 0: no discriminator
    gan_start_step: int = 0  # the adversarial terms start after this many steps
    disc_layers: int = 3  # PatchGAN depth


@dataclass
class HunyuanVAEConfig(ModelConfig):
    """Training the HunyuanVideo causal 3D VAE (884-16c at the official sizes)."""

    family: str = "hunyuan_vae"
    preset: str = "884-16c"  # or "tiny"
    input_size: List[int] = field(default_factory=lambda: [17, 256, 256])  # pixel (T, H, W) of training clips
    loss: VAELossConfig = field(default_factory=VAELossConfig)
