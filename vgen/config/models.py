"""Schemas of the model group: one dataclass per family (no MindSpore imports here)."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

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
class TextEncoderConfig:
    """The frozen text encoder that makes the model's text embeddings (cache tools, online training)."""

    name: str = "t5-v1_1-xxl"
    path: Optional[str] = None  # converted weights (.safetensors or a directory with model.safetensors)
    tokenizer: Optional[str] = None  # tokenizer.json / spiece.model (or their directory)
    max_length: int = 120


@dataclass
class VAEConfig:
    """The frozen VAE that makes the model's latents (cache tools, online training)."""

    name: str = "sd-vae-ft-ema"
    path: Optional[str] = None
    # frames encoded per call by a per-frame VAE (bounds memory); a causal 3D VAE encodes a clip
    # whole, its memory bounded by the tiling of its preset instead
    frames_per_call: int = 8


@dataclass
class LoRAConfig:
    """Low-rank adapters on the family's Linear layers; rank 0 trains the full model."""

    rank: int = 0
    alpha: Optional[float] = None  # scale alpha / rank; default: rank (scale 1)
    targets: List[str] = field(default_factory=list)  # module-path patterns; default: the family's
    dropout: float = 0.0


@dataclass
class ModelConfig:
    family: str = MISSING
    name: str = MISSING
    pretrained: Optional[str] = None  # safetensors file in the official layout
    dtype_exempt: List[str] = field(default_factory=list)  # name patterns kept in fp32 under bf16/fp16
    lora: LoRAConfig = field(default_factory=LoRAConfig)


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


@dataclass
class RectifiedFlowConfig:
    kind: str = "rectified_flow"
    timestep_sampling: str = "logit_normal"  # logit_normal | uniform (see objectives/rectified_flow.py)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # training-time shift of s towards noise
    sample_shift: float = 7.0  # the official sampler's shift (7 at 720p, 5 in predict())
    sampling_steps: int = 50


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
