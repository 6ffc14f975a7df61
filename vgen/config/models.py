"""The parts of the model group that families share: the base schema, frozen encoders, LoRA and
the objectives' settings. Each family's own schema lives in its folder (vgen/models/<family>/config.py).
No MindSpore imports here."""
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING


IDDPM_SAMPLERS = ("iddpm", "ddim", "lcm")  # lcm: a consistency-distilled student (objectives/consistency.py)
DDIM_TIMESTEPS = ("respaced", "leading")


@dataclass
class IDDPMConfig:
    kind: str = "iddpm"
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"  # linear (betas 1e-4..0.02) | scaled_linear (latent diffusion) | squaredcos_cap_v2
    learn_sigma: bool = True  # learned-range variance trained by the VLB term
    sampling_steps: int = 100  # respaced steps of the sampler
    cfg_scale: float = 7.0
    sampler: str = "iddpm"  # what sample.method=default draws with: one of IDDPM_SAMPLERS
    # DDIM's timesteps: respaced (IDDPM's spacing, OpenSora) | leading (lvdm / diffusers: 1, 1 + T/n, ..)
    ddim_timesteps: str = "respaced"


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


LORA_STYLES = ("peft", "lora_diffusion")


# model config keys of the text encoders, in order: the states encoder, then an optional pooled one
TEXT_ENCODER_KEYS = ("text_encoder", "text_encoder_2")


def seeded(name: str) -> bool:
    """Tiny encoders and reward models (names ending in -tiny) start from their seed: no weights file."""
    return str(name).endswith("-tiny")

IMAGE_REWARDS = ("hpsv2.1", "hpsv2.1-tiny")  # distill.image_reward.model (vgen/models/rewards/hps.py)
VIDEO_REWARDS = ("internvideo2-s2", "internvideo2-s2-tiny")  # distill.video_reward.model (rewards/internvideo2.py)


@dataclass
class LoRAConfig:
    """Low-rank adapters on the family's Linear / Conv layers; rank 0 trains the full model."""

    rank: int = 0
    alpha: Optional[float] = None  # scale alpha / rank; default: rank (scale 1)
    targets: List[str] = field(default_factory=list)  # module-path patterns; default: the family's
    dropout: float = 0.0
    # peft (down kaiming-uniform, dropout on the input) | lora_diffusion (T2V-Turbo's: down
    # N(0, 1/r), dropout on the update, none on Conv3d); see vgen/models/lora.py
    style: str = "peft"
    # the adapters to start from: a safetensors of them (our names), e.g. a released LoRA converted by
    # tools/convert_lora.py, or a LoRA run / checkpoint directory (a previous stage); a resumed
    # checkpoint's adapters take precedence
    pretrained: Optional[str] = None


@dataclass
class ModelConfig:
    family: str = MISSING
    name: str = MISSING
    pretrained: Optional[str] = None  # safetensors file in the official layout
    dtype_exempt: List[str] = field(default_factory=list)  # name patterns kept in fp32 under bf16/fp16
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class RectifiedFlowConfig:
    kind: str = "rectified_flow"
    timestep_sampling: str = "logit_normal"  # logit_normal | uniform (see objectives/rectified_flow.py)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # training-time shift of s towards noise
    sample_shift: float = 7.0  # the official sampler's shift (7 at 720p, 5 in predict())
    sampling_steps: int = 50
    cfg_scale: float = 1.0  # classifier-free guidance of the sampler (HunyuanVideo embeds its guidance instead)
    # the family's convention: False, timestep 1000 s and velocity noise - x0 (HunyuanVideo); True,
    # t = 1 - s runs from noise 0 to data 1, velocity x0 - noise (Step-Video)
    data_at_one: bool = False
    timestep_scale: float = 1000.0  # the denoiser's timestep per unit of t (Step-Video's DiT scales by 1000 itself: 1)
