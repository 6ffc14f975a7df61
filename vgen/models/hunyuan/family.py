"""HunyuanVideo built as a family (declared in spec.py): the 13B dual/single-stream DiT trained
with rectified flow, and how a batch's named fields reach it."""
import numpy as np

from ...objectives.rectified_flow import RectifiedFlow
from ..encoders import vae_spec
from ..family import Family, LatentSpec, TextSpec
from .dit import build_hunyuan_dit
from .spec import DIT

FIELDS = ("text_emb", "text_mask", "text_pooled", "guidance")


def denoise(net, x_t, t, b):
    return net(x_t, t, b["text_emb"], b["text_mask"], b["text_pooled"], b["guidance"])


def prepare_fields(train_guidance: float):
    """The float text mask and the guidance scale fed to guidance_in (0 without guidance_embed)."""

    def prepare(batch):
        b = batch["text_emb"].shape[0]
        return {"text_mask": batch["text_mask"].astype(np.float32),
                "guidance": np.full(b, train_guidance, np.float32)}

    return prepare


def text_spec(cfg) -> TextSpec:
    """The text inputs, named by the configured encoders: officially model.text_encoder =
    llava-llama-3-8b (hidden_states[-3], 256 states after the template crop) and model.text_encoder_2
    = clip-vit-large-patch14 (pooled, 768); the tiny stand-ins in hunyuan_tiny."""
    return TextSpec(cfg.text_encoder.name, cfg.text_dim, cfg.text_len, cfg.text_dropout, pooled_dim=cfg.clip_dim,
                    pooled_encoder=cfg.text_encoder_2.name, drop_to="empty")


def latent_spec(cfg) -> LatentSpec:
    """The latents of model.vae (officially hunyuan-vae-884-16c: 4x8x8, scale 0.476986, no shift)."""
    vae = vae_spec(cfg.vae.name)
    return LatentSpec(cfg.vae.name, cfg.in_channels, tuple(cfg.input_size), vae.compression, vae.scale, vae.shift)


def build(cfg) -> Family:
    net = build_hunyuan_dit(in_channels=cfg.in_channels, patch_size=tuple(cfg.patch_size), hidden_size=cfg.hidden_size,
                            num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, depth_double=cfg.depth_double,
                            depth_single=cfg.depth_single, rope_dims=tuple(cfg.rope_dims), rope_theta=cfg.rope_theta,
                            text_dim=cfg.text_dim, clip_dim=cfg.clip_dim, refiner_depth=cfg.refiner_depth,
                            guidance_embed=cfg.guidance_embed)
    net.text_len = cfg.text_len  # the joint SP plan keeps the last text_len tokens whole
    return Family(name=cfg.name, net=net, objective=RectifiedFlow.from_config(cfg.objective), text=text_spec(cfg),
                  latent=latent_spec(cfg),
                  denoise=denoise, fields=FIELDS,
                  prepare=prepare_fields(cfg.train_guidance if cfg.guidance_embed else 0.0), spec=DIT)
