"""Step-Video-T2V built as a family (declared in spec.py): the 30B DiT trained with flow matching in
Step-Video's convention, and how a batch's named fields reach it."""
import numpy as np

from ...objectives.rectified_flow import RectifiedFlow
from ..family import Family, LatentSpec, TextSpec
from ..layers.init import declare_only
from .dit import StepVideoDiT
from .spec import FAMILY, VAE_CHANNELS, VAE_CHUNK, VAE_COMPRESSION

FIELDS = ("text_emb", "text_mask", "text_pooled")


def denoise(net, x_t, t, b):
    return net(x_t, t, b["text_emb"], b["text_mask"], b["text_pooled"])


def denoise_with_fps(net, x_t, t, b):
    return net(x_t, t, b["text_emb"], b["text_mask"], b["text_pooled"], b["fps"])


def prepare(batch):
    b = batch["text_emb"].shape[0]
    return {"text_mask": batch["text_mask"].astype(np.float32),
            "fps": np.asarray(batch.get("fps", np.full(b, 25.0)), np.float32)}


def text_spec(cfg) -> TextSpec:
    """Step-LLM states (text_emb, text_mask) and HunyuanCLIP's 77 states (text_pooled [77, 1024])."""
    return TextSpec(cfg.text_encoder.name, cfg.caption_channels, cfg.text_len, cfg.text_dropout,
                    pooled_dim=cfg.clip_channels, pooled_encoder=cfg.text_encoder_2.name, pooled_length=cfg.clip_len,
                    drop_to="empty")


def latent_spec(cfg) -> LatentSpec:
    """VAE v2 latents: 64 channels, 16x16 spatial, 17-frame chunks -> 3 latent frames, not normalised."""
    return LatentSpec(cfg.vae.name, cfg.in_channels, tuple(cfg.input_size), VAE_COMPRESSION, 1.0, 0.0,
                      chunk_frames=VAE_CHUNK[0], chunk_latents=VAE_CHUNK[1])


def build(cfg) -> Family:
    if cfg.in_channels != VAE_CHANNELS and cfg.vae.name == "stepvideo-vae-v2":
        raise ValueError(f"model.in_channels={cfg.in_channels}: VAE v2 latents have {VAE_CHANNELS} channels")
    with declare_only():
        net = StepVideoDiT(in_channels=cfg.in_channels, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
                           depth=cfg.depth, patch_size=cfg.patch_size, caption_channels=cfg.caption_channels,
                           clip_channels=cfg.clip_channels, rope_split=tuple(cfg.rope_split),
                           rope_theta=cfg.rope_theta, use_additional_conditions=cfg.use_additional_conditions)
    extra = ("fps",) if cfg.use_additional_conditions else ()
    return Family(name=cfg.name, net=net, objective=RectifiedFlow.from_config(cfg.objective), text=text_spec(cfg),
                  latent=latent_spec(cfg), spec=FAMILY,
                  denoise=denoise_with_fps if cfg.use_additional_conditions else denoise, fields=FIELDS + extra,
                  prepare=prepare)
