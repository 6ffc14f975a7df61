"""HunyuanVideo as a vgen family: the 13B dual/single-stream DiT trained with rectified flow."""
import numpy as np

from ...objectives.rectified_flow import RectifiedFlow
from ...parallel.sequence import JointUlyssesAttention, SequenceGather, SequenceSplit
from ..encoders import vae_spec
from ..family import Family, LatentSpec, TextSpec
from ..lora import HUNYUAN_BLOCK_TARGETS
from ..registry import register
from .dit import build_hunyuan_dit


def sp_plan(net, group):
    """Image tokens split across the SP group; text tokens whole on every rank; every joint
    attention of the double and single blocks wrapped (the token refiner sees text only: local)."""
    net.sp_split = SequenceSplit(group, axis=1)
    net.sp_split_rows = SequenceSplit(group, axis=0)
    net.sp_gather = SequenceGather(group, axis=1, ndim=3)
    for block in list(net.double_blocks) + list(net.single_blocks):
        block.core = JointUlyssesAttention(block.core, group, net.text_len)


def cond_inputs(train_guidance: float):
    def cond(batch):
        b = batch["text_emb"].shape[0]
        guidance = np.full(b, train_guidance, np.float32)
        return batch["text_emb"], batch["text_mask"].astype(np.float32), batch["text_pooled"], guidance

    return cond


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


@register("hunyuan")
def build(cfg) -> Family:
    net = build_hunyuan_dit(in_channels=cfg.in_channels, patch_size=tuple(cfg.patch_size), hidden_size=cfg.hidden_size,
                            num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, depth_double=cfg.depth_double,
                            depth_single=cfg.depth_single, rope_dims=tuple(cfg.rope_dims), rope_theta=cfg.rope_theta,
                            text_dim=cfg.text_dim, clip_dim=cfg.clip_dim, refiner_depth=cfg.refiner_depth,
                            guidance_embed=cfg.guidance_embed)
    net.text_len = cfg.text_len
    o = cfg.objective
    objective = RectifiedFlow(o.timestep_sampling, o.logit_mean, o.logit_std, o.shift, o.sample_shift,
                              o.sampling_steps)
    return Family(
        name=cfg.name, net=net, objective=objective,
        text=text_spec(cfg),
        latent=latent_spec(cfg),
        cond_inputs=cond_inputs(cfg.train_guidance if cfg.guidance_embed else 0.0),
        blocks=lambda: list(net.double_blocks) + list(net.single_blocks),
        block_kinds=lambda: {"double": list(net.double_blocks), "single": list(net.single_blocks)},
        sp_plan=sp_plan,
        lora_targets=HUNYUAN_BLOCK_TARGETS,
    )
