"""OpenSora 1.0 STDiT and 1.1 STDiT2 built as families (declared in spec.py): the denoiser, its
objective, and how a batch's named fields reach the denoiser."""
import numpy as np

from ...objectives.iddpm import IDDPM
from ..encoders import vae_spec
from ..family import Family, LatentSpec, TextSpec
from ..layers.init import declare_only
from .spec import STDIT, STDIT2
from .stdit import STDiT
from .stdit2 import build_stdit2

TEXT_FIELDS = ("text_emb", "text_mask", "text_drop")
STDIT2_FIELDS = TEXT_FIELDS + ("frame_mask", "height", "width", "fps", "num_frames", "ar")


def stdit_denoise(net, x_t, t, b):
    """STDiT takes y [B, 1, L, C], the token mask [B, L] and the caption-dropout flags [B]."""
    return net(x_t, t, b["text_emb"][:, None], b["text_mask"], b["text_drop"])


def stdit2_denoise(net, x_t, t, b):
    return net(x_t, t, b["text_emb"][:, None], b["text_mask"], b["text_drop"], b["frame_mask"], b["height"],
               b["width"], b["fps"], b["num_frames"], b["ar"])


def int_mask(batch):
    return {"text_mask": batch["text_mask"].astype(np.int32)}


def specs(cfg):
    vae = vae_spec(cfg.vae.name)
    text = TextSpec(cfg.text_encoder.name, cfg.caption_channels, cfg.model_max_length, cfg.class_dropout_prob)
    latent = LatentSpec(cfg.vae.name, cfg.in_channels, tuple(cfg.input_size), vae.compression, vae.scale, vae.shift)
    return text, latent


def objective(cfg):
    o = cfg.objective
    return IDDPM(o.diffusion_steps, o.noise_schedule, o.learn_sigma and cfg.pred_sigma, o.sampling_steps,
                 o.cfg_scale)


def build_stdit(cfg) -> Family:
    with declare_only():
        net = STDiT(input_size=tuple(cfg.input_size), in_channels=cfg.in_channels, patch_size=tuple(cfg.patch_size),
                    hidden_size=cfg.hidden_size, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                    caption_channels=cfg.caption_channels, model_max_length=cfg.model_max_length,
                    pred_sigma=cfg.pred_sigma, space_scale=cfg.space_scale, time_scale=cfg.time_scale)
    text, latent = specs(cfg)
    return Family(name=cfg.name, net=net, objective=objective(cfg), text=text, latent=latent,
                  denoise=stdit_denoise, fields=TEXT_FIELDS, prepare=int_mask, spec=STDIT)


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


def frame_masks(ratios):
    """The keyed draws of the `frame_mask` stream: one mask per sample over its latent frames."""

    def draw(rngs, latent_shape):
        return {"frame_mask": np.stack([frame_mask(r, latent_shape[1], ratios) for r in rngs["frame_mask"]])}

    return draw


def stdit2_prepare(latent_spec):
    """The size / fps conditioning (the clip's, or the latent's size in pixels)."""
    ct, hc, wc = latent_spec.compression

    def prepare(batch):
        b, _, t, h, w = batch["latent"].shape
        meta = lambda key, default: np.asarray(batch.get(key, np.full(b, default)), np.float32)
        height, width = meta("height", h * hc), meta("width", w * wc)
        return {"text_mask": batch["text_mask"].astype(np.int32), "height": height, "width": width,
                "fps": meta("fps", 24.0), "num_frames": meta("num_frames", t * ct), "ar": width / height}

    return prepare


def build_stdit2_family(cfg) -> Family:
    net = build_stdit2(in_channels=cfg.in_channels, patch_size=tuple(cfg.patch_size), hidden_size=cfg.hidden_size,
                       depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                       caption_channels=cfg.caption_channels, model_max_length=cfg.model_max_length,
                       pred_sigma=cfg.pred_sigma, input_sq_size=cfg.input_sq_size,
                       latent_downsample=vae_spec(cfg.vae.name).compression[1])
    text, latent = specs(cfg)
    return Family(name=cfg.name, net=net, objective=objective(cfg), text=text, latent=latent,
                  denoise=stdit2_denoise, fields=STDIT2_FIELDS, draw=frame_masks(dict(cfg.mask_ratios)),
                  prepare=stdit2_prepare(latent), spec=STDIT2,
                  no_decay_patterns=("embedding", "pos_embed", "scale_shift_table", "rope"))
