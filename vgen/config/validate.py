"""Checks that span several fields, run on the composed config before any work (no MindSpore)."""
import os
import re
from typing import Dict, List

from omegaconf import DictConfig

from .models import DDIM_TIMESTEPS, IDDPM_SAMPLERS, IMAGE_REWARDS, LORA_STYLES, VIDEO_REWARDS


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


def check_heads(m, err) -> bool:
    """model.hidden_size divisible by model.num_heads (True when it is)."""
    if m.hidden_size % m.num_heads:
        err(f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
        return False
    return True


def check_patches(m, err) -> None:
    for i, axis in enumerate("THW"):
        if m.input_size[i] % m.patch_size[i]:
            err(f"model.input_size[{i}]={m.input_size[i]} ({axis}) is not divisible by model.patch_size[{i}]="
                f"{m.patch_size[i]}")


def check_sp_heads(num_heads: int, sp: int, err, key: str = "model.num_heads") -> None:
    """Ulysses splits the heads: sp must divide them."""
    if num_heads % sp:
        divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
        err(f"parallel.sp={sp} does not divide {key}={num_heads}: Ulysses splits the heads; "
            f"choose sp among {divisors}")


def check_unet(m, err, channels: Dict[str, int], groups_key: str, head_key: str, downsamplings: int) -> None:
    """A latent-diffusion UNet's cross-field checks: the channels of its levels ({config key:
    channels}) split into GroupNorm groups and whole heads, the latent's H and W survive every
    downsampling, the text length is the encoder's."""
    groups, head = m[groups_key], m[head_key]
    for key, ch in channels.items():
        if ch % groups:
            err(f"model.{key}: {ch} channels do not split into model.{groups_key}={groups} GroupNorm groups")
        elif ch % head:
            err(f"model.{key}: {ch} channels are not a whole number of model.{head_key}={head}-channel heads")
    for i, axis in ((1, "H"), (2, "W")):
        if m.input_size[i] % 2 ** downsamplings:
            err(f"model.input_size[{i}]={m.input_size[i]} ({axis}) must be divisible by {2 ** downsamplings} "
                f"({downsamplings} downsamplings)")
    if m.text_len != m.text_encoder.max_length:
        err(f"model.text_len={m.text_len} differs from model.text_encoder.max_length={m.text_encoder.max_length}")


def check_family(cfg: DictConfig, err) -> None:
    """What the model's family declares: its own cross-field checks, SP support, block kinds."""
    from ..models.registry import family_specs

    specs = family_specs()
    spec = specs.get(cfg.model.family)
    if spec is None:
        err(f"model.family={cfg.model.family!r} is unknown; known: {sorted(specs)}")
        return
    if spec.check is not None:
        spec.check(cfg.model, cfg, err)
    if cfg.parallel.sp > 1 and spec.sp is None:
        err(f"parallel.sp={cfg.parallel.sp}: model family {spec.name}: {spec.sp_missing}; use parallel.sp=1 "
            "with ZeRO or data parallel")
    unknown = sorted(set(cfg.parallel.recompute_kinds) - set(spec.blocks))
    if unknown:
        err(f"parallel.recompute_kinds names block kind(s) {unknown}; model family {spec.name} has "
            f"{sorted(spec.blocks)}")


DPO_REFERENCES = ("auto", "adapters_off", "frozen_copy")


def check_lora(cfg: DictConfig, err) -> None:
    o = cfg.model.lora
    if o.rank < 0:
        err(f"model.lora.rank={o.rank}: must be >= 0 (0 trains the full model)")
    if not 0.0 <= o.dropout < 1.0:
        err(f"model.lora.dropout={o.dropout}: must be in [0, 1)")
    if o.style not in LORA_STYLES:
        err(f"model.lora.style={o.style!r}: expected one of {list(LORA_STYLES)}")


def check_dpo(cfg: DictConfig, err) -> None:
    o = cfg.get("dpo")
    if o is None or not o.enabled:
        return
    if o.beta <= 0:
        err(f"dpo.beta={o.beta}: must be > 0")
    if o.reference not in DPO_REFERENCES:
        err(f"dpo.reference={o.reference!r}: expected one of {list(DPO_REFERENCES)}")
    elif o.reference == "adapters_off" and cfg.model.lora.rank < 1:
        err("dpo.reference=adapters_off needs LoRA adapters (model.lora.rank > 0); without LoRA use frozen_copy")
    if cfg.data.kind != "video":
        err(f"dpo.enabled: preference pairs come from a video CSV (data=video with data.csv_path listing "
            f"caption, chosen and rejected clips); data.kind={cfg.data.kind!r}")
    if cfg.model.objective.get("kind") != "rectified_flow":
        err(f"dpo.enabled: model {cfg.model.name} trains with {cfg.model.objective.get('kind')}; the preference "
            f"loss is defined here for flow-matching families (HunyuanVideo, Step-Video)")


DISTILL_TARGETS = ("online", "ema")


def check_distill(cfg: DictConfig, err) -> None:
    o = cfg.get("distill")
    if o is None or not o.enabled:
        return
    m, obj = cfg.model, cfg.model.get("objective") or {}
    if obj.get("kind") != "iddpm" or obj.get("learn_sigma", True):
        err(f"distill.enabled: consistency distillation needs an eps-prediction diffusion model (VideoCrafter2, "
            f"ModelScope); model {m.name} trains with {obj.get('kind')}"
            f"{' and a learned variance' if obj.get('kind') == 'iddpm' else ''}")
    if not m.get("time_cond_proj_dim"):
        err(f"distill.enabled: the student embeds the guidance scale; model {m.name} has no guidance embedding "
            "(use model=vc2_turbo or model=ms_turbo, or set model.time_cond_proj_dim=256)")
    if o.solver_steps < 1 or (obj.get("diffusion_steps") and o.solver_steps > obj.diffusion_steps):
        err(f"distill.solver_steps={o.solver_steps}: must be in [1, model.objective.diffusion_steps]")
    if o.skip is not None and o.skip < 1:
        err(f"distill.skip={o.skip}: must be >= 1")
    if not 0 < o.w_min <= o.w_max:
        err(f"distill.w_min={o.w_min}, distill.w_max={o.w_max}: need 0 < w_min <= w_max")
    if o.huber_c <= 0:
        err(f"distill.huber_c={o.huber_c}: must be > 0")
    if o.target not in DISTILL_TARGETS:
        err(f"distill.target={o.target!r}: expected one of {list(DISTILL_TARGETS)}")
    elif o.target == "ema" and cfg.schedule.ema_decay <= 0:
        err("distill.target=ema distils towards the EMA of the student: set schedule.ema_decay (LCM: 0.95)")
    if m.lora.rank < 1 and not m.get("pretrained"):
        err("distill.enabled without LoRA: the teacher is a frozen copy of model.pretrained; set model.pretrained "
            "(or train adapters with model.lora.rank > 0, the teacher then being their base)")
    if cfg.get("dpo") is not None and cfg.dpo.enabled:
        err("distill.enabled with dpo.enabled: one objective per stage; run them as separate stages")
    if cfg.data.get("holdout", 0):
        err("data.holdout with distill.enabled: the distillation loss needs the teacher's step, which validation "
            "does not run; leave data.holdout=0 (validation videos with sample.method=lcm work)")
    workers = cfg.parallel.workers
    check_ranks("distill.ranks", o.ranks, workers, err)
    check_reward(o.image_reward, "distill.image_reward", IMAGE_REWARDS, workers, err)
    check_reward(o.video_reward, "distill.video_reward", VIDEO_REWARDS, workers, err)


def check_reward(r, key: str, models, workers: int, err) -> None:
    if not r.model:
        return
    if r.model not in models:
        err(f"{key}.model={r.model!r}: expected one of {list(models)} (or empty: no reward)")
    if r.scale <= 0:
        err(f"{key}.scale={r.scale}: must be > 0 (leave {key}.model empty for no reward)")
    for name in ("frames", "samples"):
        if r[name] < 1:
            err(f"{key}.{name}={r[name]}: must be >= 1")
    check_ranks(f"{key}.ranks", r.ranks, workers, err)


def check_ranks(key: str, ranks, workers: int, err) -> None:
    bad = [r for r in ranks if not 0 <= r < workers]
    if bad:
        err(f"{key}={list(ranks)}: ranks {bad} are not in [0, parallel.workers={workers})")


SAMPLE_METHODS = ("default", *IDDPM_SAMPLERS)


def check_sample(cfg: DictConfig, err) -> None:
    """The sampling settings (vgen-sample, and validation when schedule.val_every > 0)."""
    s = cfg.get("sample")
    if s is None:
        return
    kind = cfg.model.get("objective", {}).get("kind") if cfg.model.get("objective") is not None else None
    if s.method not in SAMPLE_METHODS:
        err(f"sample.method={s.method!r}: expected one of {list(SAMPLE_METHODS)}")
    elif s.method != "default" and kind != "iddpm":
        err(f"sample.method={s.method}: IDDPM families choose iddpm, ddim or lcm; {cfg.model.name} samples with its "
            f"Euler flow (leave sample.method=default)")
    if s.shift is not None and kind != "rectified_flow":
        err(f"sample.shift={s.shift}: the shift of a flow schedule; {cfg.model.name} is not a flow model")
    for key in ("steps", "num_frames"):
        if s[key] is not None and s[key] < 1:
            err(f"sample.{key}={s[key]}: must be >= 1")
    if s.batch_size < 1:
        err(f"sample.batch_size={s.batch_size}: must be >= 1")
    if s.get("teacache", 0) < 0:
        err(f"sample.teacache={s.teacache}: a threshold >= 0 (0: off)")
    elif s.get("teacache", 0) > 0 and cfg.parallel.sp > 1:
        err(f"sample.teacache={s.teacache} with parallel.sp={cfg.parallel.sp}: TeaCache decides per step from "
            "all image tokens, which no rank holds under SP; sample with parallel.sp=1 (ZeRO-3 and DP work)")
    if s.resolution is not None and (len(s.resolution) != 2 or min(s.resolution) < 1):
        err(f"sample.resolution={list(s.resolution)}: expected [height, width]")


def check_validation(cfg: DictConfig, err) -> None:
    """schedule.val_every: videos of the sample group's prompts and/or the loss on data.holdout samples."""
    every, levels = cfg.schedule.get("val_every", 0), list(cfg.schedule.get("val_levels", []))
    holdout = cfg.data.get("holdout", 0)
    s = cfg.get("sample")
    prompts = s is not None and bool(s.prompts or s.prompt_file)
    if every < 0:
        err(f"schedule.val_every={every}: must be >= 0 (0: no validation)")
    elif every and not (prompts or holdout):
        err("schedule.val_every > 0 validates with videos of fixed prompts (sample.prompts or sample.prompt_file), "
            "the loss on held-out samples (data.holdout=<n>), or both: set one")
    if holdout < 0:
        err(f"data.holdout={holdout}: must be >= 0")
    if holdout and cfg.get("dpo") is not None and cfg.dpo.enabled:
        err("data.holdout with dpo.enabled: the preference loss needs the reference's errors, which validation "
            "does not compute; hold out pairs in a CSV of their own and leave data.holdout=0")
    if holdout and cfg.data.kind == "synthetic" and holdout >= cfg.data.num_samples:
        err(f"data.holdout={holdout} leaves no training samples of data.num_samples={cfg.data.num_samples}")
    if holdout and (not levels or any(not 0.0 <= v <= 1.0 for v in levels)):
        err(f"schedule.val_levels={levels}: noise levels in [0, 1] (0 data, 1 noise), at least one")


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
    if s.get("epochs") is not None:
        positive("schedule", "epochs", s.epochs)
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

    o = cfg.model.get("objective")
    if o is not None and o.get("kind") == "iddpm" and o.ddim_timesteps not in DDIM_TIMESTEPS:
        err(f"model.objective.ddim_timesteps={o.ddim_timesteps!r}: expected one of {list(DDIM_TIMESTEPS)}")
    check_family(cfg, err)
    check_lora(cfg, err)
    check_dpo(cfg, err)
    check_distill(cfg, err)
    check_sample(cfg, err)
    check_validation(cfg, err)

    if cfg.resume not in ("auto", "none") and not os.path.isdir(cfg.resume):
        err(f"resume={cfg.resume!r}: expected auto, none or an existing checkpoint directory")

    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
