"""Checks that span several fields, run on the composed config before any work (no MindSpore)."""
import os
import re
from typing import Callable, Dict, List

from omegaconf import DictConfig


class ConfigError(ValueError):
    """A config that cannot run; the message names the key(s) and the fix."""


RECOMPUTE_RE = re.compile(r"^(none|all|first:\d+|every:\d+)$")


def parse_recompute(spec: str):
    """'none' | 'all' | 'first:N' | 'every:n' -> (kind, n)."""
    spec = str(spec).strip()
    if not RECOMPUTE_RE.match(spec):
        raise ConfigError(f"parallel.recompute={spec!r}: expected none, all, first:<N> or every:<n>")
    if ":" in spec:
        kind, n = spec.split(":")
        return kind, int(n)
    return spec, 0


def _model_checks_stdit(m, cfg, err):
    if m.hidden_size % m.num_heads:
        err(f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
    for i, axis in enumerate("THW"):
        if m.input_size[i] % m.patch_size[i]:
            err(f"model.input_size[{i}]={m.input_size[i]} ({axis}) is not divisible by model.patch_size[{i}]="
                f"{m.patch_size[i]}")
    sp = cfg.parallel.sp
    if m.num_heads % sp:
        divisors = [d for d in range(1, m.num_heads + 1) if m.num_heads % d == 0]
        err(f"parallel.sp={sp} does not divide model.num_heads={m.num_heads}: Ulysses splits the heads; "
            f"choose sp among {divisors}")


def _model_checks_stdit2(m, cfg, err):
    if m.hidden_size % m.num_heads:
        err(f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
    if m.hidden_size % 12:
        err(f"model.hidden_size={m.hidden_size} must be divisible by 12 (size conditioning splits it in 3, "
            f"2D sin-cos positions in 4)")
    from .models import OPENSORA_MASK_RATIOS

    unknown = sorted(set(m.mask_ratios) - set(OPENSORA_MASK_RATIOS))
    if unknown:
        err(f"model.mask_ratios has unknown mask(s) {unknown}; known: {sorted(OPENSORA_MASK_RATIOS)}")
    if abs(sum(m.mask_ratios.values()) - 1.0) > 1e-6:
        err(f"model.mask_ratios sum to {sum(m.mask_ratios.values())}, not 1")
    if cfg.parallel.sp > 1:
        err("parallel.sp > 1: STDiT2 has no sequence-parallel plan yet (its temporal RoPE needs global "
            "frame positions); use parallel.sp=1 with ZeRO or data parallel")


def _model_checks_hunyuan(m, cfg, err):
    if m.text_len != m.text_encoder.max_length:
        err(f"model.text_len={m.text_len} differs from model.text_encoder.max_length={m.text_encoder.max_length} "
            "(the DiT reads exactly the tokens the text encoder keeps after the template crop)")
    if m.text_encoder_2.max_length > 77:
        err(f"model.text_encoder_2.max_length={m.text_encoder_2.max_length}: CLIP has 77 positions")
    if m.hidden_size % m.num_heads:
        err(f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
    elif sum(m.rope_dims) != m.hidden_size // m.num_heads:
        err(f"model.rope_dims={list(m.rope_dims)} must sum to the head dim {m.hidden_size // m.num_heads}")
    sp = cfg.parallel.sp
    if m.num_heads % sp:
        divisors = [d for d in range(1, m.num_heads + 1) if m.num_heads % d == 0]
        err(f"parallel.sp={sp} does not divide model.num_heads={m.num_heads}: Ulysses splits the heads; "
            f"choose sp among {divisors}")


def _model_checks_vae(m, cfg, err):
    if m.preset not in ("884-16c", "tiny"):
        err(f"model.preset={m.preset!r}: expected 884-16c or tiny")
    t, h, w = m.input_size
    if (t - 1) % 4 or h % 8 or w % 8:
        err(f"model.input_size={list(m.input_size)}: the causal VAE needs 4k+1 frames and sizes divisible by 8")
    weights = {k: m.loss[k] for k in ("l1", "kl", "lpips", "gan", "gan_start_step")}
    for k, v in weights.items():
        if v < 0:
            err(f"model.loss.{k}={v}: must be >= 0")
    if m.loss.lpips > 0 and not m.loss.lpips_weights:
        err("model.loss.lpips > 0 needs model.loss.lpips_weights (converted LPIPS VGG16 weights, safetensors)")
    if cfg.data.kind == "video" and not cfg.data.get("buckets"):
        if (cfg.data.num_frames - 1) % 4 or any(x % 8 for x in cfg.data.resolution):
            err(f"data.num_frames={cfg.data.num_frames} / data.resolution={list(cfg.data.resolution)}: the causal "
                "VAE needs 4k+1 frames and sizes divisible by 8")
        if m.loss.gan > 0 and min(cfg.data.resolution) < 3 * 2 ** m.loss.disc_layers:
            err(f"data.resolution={list(cfg.data.resolution)} is too small for a {m.loss.disc_layers}-layer "
                f"discriminator (>= {3 * 2 ** m.loss.disc_layers} px per side)")
    if cfg.parallel.sp > 1:
        err("parallel.sp > 1: autoencoder training has no sequence-parallel plan; use data parallel / ZeRO")
    if cfg.data.kind != "video":
        err(f"data={cfg.data.kind}: an autoencoder trains on clips: use data=video (or data=webvid)")


MODEL_CHECKS: Dict[str, Callable] = {"hunyuan": _model_checks_hunyuan, "hunyuan_vae": _model_checks_vae, "opensora_stdit": _model_checks_stdit, "opensora_stdit2": _model_checks_stdit2}


def validate(cfg: DictConfig) -> None:
    errors: List[str] = []
    err = errors.append
    s = cfg.schedule

    def positive(group, key, value, allow_zero=False):
        if value < 0 or (value == 0 and not allow_zero):
            err(f"{group}.{key}={value}: must be {'>= 0' if allow_zero else '> 0'}")

    for key in ("max_steps", "batch_size", "grad_accum", "log_every", "ckpt_every", "keep_last"):
        positive("schedule", key, s[key])
    positive("schedule", "lr", s.lr)
    for key in ("min_lr", "warmup_steps", "weight_decay", "grad_clip", "eps"):
        positive("schedule", key, s[key], allow_zero=True)
    if s.min_lr > s.lr:
        err(f"schedule.min_lr={s.min_lr} exceeds schedule.lr={s.lr}")
    for key in ("beta1", "beta2", "ema_decay"):
        if not 0.0 <= s[key] < 1.0:
            err(f"schedule.{key}={s[key]}: must be in [0, 1)")
    if s.decay_steps is not None and s.decay_steps <= s.warmup_steps:
        err(f"schedule.decay_steps={s.decay_steps} must exceed schedule.warmup_steps={s.warmup_steps}")

    pr = cfg.precision
    if pr.loss_scale <= 0:
        err(f"precision.loss_scale={pr.loss_scale}: must be > 0")
    if pr.loss_scale_factor <= 1:
        err(f"precision.loss_scale_factor={pr.loss_scale_factor}: must be > 1")
    if pr.loss_scale_window < 1:
        err(f"precision.loss_scale_window={pr.loss_scale_window}: must be >= 1")

    p = cfg.parallel
    if p.workers < 1:
        err(f"parallel.workers={p.workers}: must be >= 1")
    if p.sp < 1:
        err(f"parallel.sp={p.sp}: must be >= 1")
    elif p.workers % p.sp:
        err(f"parallel.workers={p.workers} is not divisible by parallel.sp={p.sp} (world = dp x sp)")
    if p.zero_stage not in (0, 1, 2, 3):
        err(f"parallel.zero_stage={p.zero_stage}: must be 0, 1, 2 or 3")
    if p.nodes < 1 or p.workers % p.nodes:
        err(f"parallel.workers={p.workers} must be a multiple of parallel.nodes={p.nodes}")
    if not 0 <= p.node_rank < max(1, p.nodes):
        err(f"parallel.node_rank={p.node_rank}: must be in [0, parallel.nodes={p.nodes})")
    for key, spec in [("recompute", p.recompute)] + [(f"recompute_kinds.{k}", v) for k, v in p.recompute_kinds.items()]:
        try:
            parse_recompute(spec)
        except ConfigError as e:
            err(str(e).replace("parallel.recompute=", f"parallel.{key}="))

    d = cfg.data
    if d.get("text_dropout") is not None and not 0.0 <= d.text_dropout <= 1.0:
        err(f"data.text_dropout={d.text_dropout}: must be in [0, 1]")
    if d.kind == "synthetic" and d.num_samples < 1:
        err(f"data.num_samples={d.num_samples}: must be >= 1")

    check = MODEL_CHECKS.get(cfg.model.family)
    if check is None:
        err(f"model.family={cfg.model.family!r} is unknown; known: {sorted(MODEL_CHECKS)}")
    else:
        check(cfg.model, cfg, err)

    if cfg.resume not in ("auto", "none") and not os.path.isdir(cfg.resume):
        err(f"resume={cfg.resume!r}: expected auto, none or an existing checkpoint directory")

    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
