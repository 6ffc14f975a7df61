"""Schema of the Step-Video-T2V family's model group (no MindSpore imports here)."""
from dataclasses import dataclass, field
from typing import List

from ...config.models import ModelConfig, RectifiedFlowConfig, TextEncoderConfig, VAEConfig


def step_flow() -> RectifiedFlowConfig:
    """Step-Video's flow matching: t from noise 0 to data 1, the DiT scales t by 1000 itself; the
    official sampler: 50 Euler steps, time shift 13, CFG 9. Training timesteps are not published:
    ours are logit-normal noise levels (shift 1 by default; recipes set theirs)."""
    return RectifiedFlowConfig(data_at_one=True, timestep_scale=1.0, sample_shift=13.0, cfg_scale=9.0,
                               sampling_steps=50)


@dataclass
class StepVideoConfig(ModelConfig):
    """Step-Video-T2V DiT (30B at the official sizes: 29,342,478,400 parameters)."""

    family: str = "stepvideo"
    # latent (F, H, W) of 204 x 544 x 992 frames: 12 chunks of 17 frames -> 36, 16x spatial
    input_size: List[int] = field(default_factory=lambda: [36, 34, 62])
    in_channels: int = 64
    patch_size: int = 1
    num_heads: int = 48
    head_dim: int = 128
    depth: int = 48
    caption_channels: int = 6144  # Step-LLM hidden size
    clip_channels: int = 1024  # HunyuanCLIP (BERT) hidden size
    text_len: int = 320  # Step-LLM tokens
    clip_len: int = 77  # HunyuanCLIP tokens (all attended)
    rope_split: List[int] = field(default_factory=lambda: [64, 32, 32])  # head-dim chunks for (f, h, w)
    rope_theta: float = 1e4
    # resolution / frame-count / fps embedders (not in the released weights)
    use_additional_conditions: bool = False
    text_dropout: float = 0.1  # ours (not published): captions replaced by the empty prompt's embeddings
    objective: RectifiedFlowConfig = field(default_factory=step_flow)
    text_encoder: TextEncoderConfig = field(default_factory=lambda: TextEncoderConfig(name="step-llm", max_length=320))
    text_encoder_2: TextEncoderConfig = field(
        default_factory=lambda: TextEncoderConfig(name="hunyuan-clip", max_length=77))
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(name="stepvideo-vae-v2"))
