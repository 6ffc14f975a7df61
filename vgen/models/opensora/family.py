"""OpenSora 1.0 STDiT and 1.1 STDiT2 as vgen families."""
import numpy as np

from ...objectives.iddpm import IDDPM
from ...parallel.sequence import SequenceGather, SequenceSplit, UlyssesAttention
from ..encoders import vae_spec
from ..family import Family, LatentSpec, TextSpec
from ..layers.init import declare_only
from ..registry import register
from .stdit import STDiT
from .stdit2 import build_stdit2


def text_cond(batch):
    """(y [B, 1, L, C], mask [B, L], drop [B]) as STDiT takes them."""
    return batch["text_emb"][:, None], batch["text_mask"].astype(np.int32), batch["text_drop"]


def specs(cfg):
    vae = vae_spec(cfg.vae.name)
    text = TextSpec(cfg.text_encoder.name, cfg.caption_channels, cfg.model_max_length, cfg.class_dropout_prob)
    latent = LatentSpec(cfg.vae.name, cfg.in_channels, tuple(cfg.input_size), vae.compression, vae.scale, vae.shift)
    return text, latent


def objective(cfg):
    o = cfg.objective
    return IDDPM(o.diffusion_steps, o.noise_schedule, o.learn_sigma and cfg.pred_sigma, o.sampling_steps,
                 o.cfg_scale)


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
    text, latent = specs(cfg)
    return Family(name=cfg.name, net=net, objective=objective(cfg), text=text, latent=latent, cond_inputs=text_cond,
                  blocks=lambda: list(net.blocks), sp_plan=sp_plan)


def frame_mask(rng, frames: int, ratios) -> np.ndarray:
    """One OpenSora 1.1 training mask [frames] (True = denoised, False = given), keyed draws."""
    mask = np.ones(frames, bool)
    u, acc, name = rng.random(), 0.0, "mask_no"
    for key, p in ratios.items():
        acc += p
        if u < acc:
            name = key
            break
    if frames <= 1 or name == "mask_no":
        return mask
    size = 1 if name.startswith("mask_image") else int(rng.integers(1, max(1, frames // 4) + 1))
    where = name.rsplit("_", 1)[-1] if not name.endswith("head_tail") else "head_tail"
    if where == "random":
        start = int(rng.integers(0, frames - size + 1))
        mask[start:start + size] = False
    if where in ("head", "head_tail"):
        mask[:size] = False
    if where in ("tail", "head_tail"):
        mask[-size:] = False
    return mask


def stdit2_cond(cfg, latent_spec):
    ratios = dict(cfg.mask_ratios)
    _, hc, wc = latent_spec.compression

    def cond(batch):
        latent = batch["latent"]
        b, _, t, h, w = latent.shape
        meta = lambda key, default: np.asarray(batch.get(key, np.full(b, default)), np.float32)
        height, width = meta("height", h * hc), meta("width", w * wc)
        x_mask = np.stack([frame_mask(r, t, ratios) for r in batch["rngs"]["frame_mask"]])
        return (batch["text_emb"][:, None], batch["text_mask"].astype(np.int32), batch["text_drop"], x_mask,
                height, width, meta("fps", 24.0), meta("num_frames", t * latent_spec.compression[0]), width / height)

    return cond


@register("opensora_stdit2")
def build_v1_1(cfg) -> Family:
    net = build_stdit2(in_channels=cfg.in_channels, patch_size=tuple(cfg.patch_size), hidden_size=cfg.hidden_size,
                       depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                       caption_channels=cfg.caption_channels, model_max_length=cfg.model_max_length,
                       pred_sigma=cfg.pred_sigma, input_sq_size=cfg.input_sq_size,
                       latent_downsample=vae_spec(cfg.vae.name).compression[1])
    text, latent = specs(cfg)
    obj = objective(cfg)
    return Family(name=cfg.name, net=net, objective=obj, text=text, latent=latent, cond_inputs=stdit2_cond(cfg, latent),
                  blocks=lambda: list(net.blocks), extra_streams=("frame_mask",),
                  loss_cell=lambda n: obj.loss_cell(n, frame_mask_arg=3),
                  no_decay_patterns=("embedding", "pos_embed", "scale_shift_table", "rope"))
