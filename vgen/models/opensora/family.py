"""OpenSora 1.0 STDiT as a vgen family."""
import numpy as np

from ...objectives.iddpm import IDDPM
from ...parallel.sequence import SequenceGather, SequenceSplit, UlyssesAttention
from ..family import Family, LatentSpec, TextSpec
from ..layers.init import declare_only
from ..registry import register
from .stdit import STDiT

T5_XXL = "t5-v1_1-xxl"
SD_VAE = "sd-vae-ft-ema"


def text_cond(batch):
    """(y [B, 1, L, C], mask [B, L], drop [B]) as STDiT takes them."""
    return batch["text_emb"][:, None], batch["text_mask"].astype(np.int32), batch["text_drop"]


def sp_plan(net, group):
    """Frames are split across the SP group: spatial attention, cross-attention and MLPs are
    local; temporal attention trades the frame split for a head split (Ulysses)."""
    net.sp_split = SequenceSplit(group, axis=1)
    net.sp_gather = SequenceGather(group, axis=1)
    for block in net.blocks:
        block.attn_temp.core = UlyssesAttention(block.attn_temp.core, group)


@register("opensora_stdit")
def build(cfg) -> Family:
    with declare_only():
        net = STDiT(input_size=tuple(cfg.input_size), in_channels=cfg.in_channels, patch_size=tuple(cfg.patch_size),
                    hidden_size=cfg.hidden_size, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                    caption_channels=cfg.caption_channels, model_max_length=cfg.model_max_length,
                    pred_sigma=cfg.pred_sigma, space_scale=cfg.space_scale, time_scale=cfg.time_scale)
    o = cfg.objective
    objective = IDDPM(o.diffusion_steps, o.noise_schedule, o.learn_sigma and cfg.pred_sigma, o.sampling_steps,
                      o.cfg_scale)
    return Family(
        name=cfg.name,
        net=net,
        objective=objective,
        text=TextSpec(T5_XXL, cfg.caption_channels, cfg.model_max_length, cfg.class_dropout_prob),
        latent=LatentSpec(SD_VAE, cfg.in_channels, tuple(cfg.input_size), (1, 8, 8), cfg.latent_scale),
        cond_inputs=text_cond,
        blocks=lambda: list(net.blocks),
        sp_plan=sp_plan,
    )
