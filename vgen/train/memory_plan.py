"""Per-rank bytes of a run's model states, from shapes alone: the model is declared (nothing is
allocated), so any config plans in seconds, the full-size models at any worker count included.

What a rank holds, kind by kind, as the trainer builds it (trainer.py, flat_params.py, step.py):
  params     every parameter in the compute dtype (buffers and exempt names fp32); under ZeRO-3
             the shardable ones as their local segments (ceil(numel / shards) elements)
  grads      one step's gradients as the backward produces them (the trained parameters, in their
             dtype; segments under ZeRO-3), their flat fp32 reduced copies (the local vector: whole
             under ZeRO 0, this rank's shard from ZeRO-1), and the accumulators with grad_accum > 1
  optimizer  the fp32 master weights, AdamW's two moments and the EMA, of the local vector
  gathered   ZeRO-3's working set: the blocks' weights gathered whole while they run (the largest
             recomputed block, plus every block that is not recomputed: those keep theirs until
             their backward)
  encoders   the frozen encoders the run runs online (the VAE and text encoders that encode clips
             and captions, a distillation's reward models), whole, in fp32 on CPU and the compute
             dtype elsewhere
Activations are not planned here (they depend on the bucket, the recompute setting and the
kernels): benchmarks/parallel_memory.py measures them."""
from dataclasses import dataclass, field
from typing import Dict

import numpy as np

ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}
KINDS = ("params", "grads", "optimizer", "gathered", "encoders")


@dataclass
class MemoryPlan:
    workers: int
    zero_stage: int
    dtype: str
    bytes: Dict[str, int] = field(default_factory=dict)  # per rank, by kind (KINDS)
    counts: Dict[str, int] = field(default_factory=dict)  # parameters: all, trained, sharded

    @property
    def model_states(self) -> int:
        """params + grads + optimizer: what benchmarks/parallel_memory.py measures as model states."""
        return sum(self.bytes[k] for k in ("params", "grads", "optimizer"))

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def lines(self):
        gb = 2 ** 30
        yield (f"memory plan per rank ({self.workers} worker(s), ZeRO-{self.zero_stage}, {self.dtype}; "
               f"{self.counts['all']:,} parameters, {self.counts['trained']:,} trained, {self.counts['sharded']:,} "
               f"sharded):")
        for kind in KINDS:
            yield f"  {kind:10s} {self.bytes[kind] / gb:10.3f} GiB"
        yield f"  {'total':10s} {self.total / gb:10.3f} GiB  (+ activations)"


def _numel(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def encoder_params(cfg) -> int:
    """Parameters of the frozen encoders this run builds besides the model (declared, not allocated)."""
    from ..config.models import TEXT_ENCODER_KEYS
    from ..models.encoders import text_encoder_spec, vae_spec
    from ..models.layers.init import count_params, declare_only

    builds = []
    d, m = cfg.data, cfg.model
    if d.get("kind") == "video":
        if d.get("latents", "online") == "online" and m.get("vae") is not None:
            builds.append(vae_spec(m.vae.name).build)
        if d.get("text", "online") == "online":
            builds += [text_encoder_spec(m[key].name).build for key in TEXT_ENCODER_KEYS if m.get(key) is not None]
    distill = cfg.get("distill")
    if distill is not None and distill.enabled:
        from ..models.rewards.hps import build_hps
        from ..models.rewards.internvideo2 import build_internvideo2

        if distill.image_reward.model:
            builds.append(lambda: build_hps(distill.image_reward.model))
        if distill.video_reward.model:
            builds.append(lambda: build_internvideo2(distill.video_reward.model, distill.video_reward.frames))
    total = 0
    for build in builds:
        with declare_only():
            total += count_params(build())[0]
    return total


def plan_memory(cfg, device: str = "Ascend") -> MemoryPlan:
    """The per-rank model-state bytes of a training config on `device` (its compute dtype)."""
    from ..config.validate import parse_recompute
    from ..models.layers.init import declare_only, is_buffer, named_params
    from ..models.lora import adapt_family
    from ..models.registry import build_family
    from .precision import resolve_precision
    from ..parallel.recompute import selected
    from ..parallel.zero import shard_size, shardable_names

    p, s = cfg.parallel, cfg.schedule
    policy = resolve_precision(cfg.precision.dtype, device, cfg.model.get("dtype_exempt", ()))
    c = ITEMSIZE[policy.name]
    family = build_family(cfg.model)
    if cfg.model.lora.rank > 0:
        with declare_only():
            adapt_family(family, cfg.model.lora, cfg.seed)
    shards = p.workers if p.zero_stage >= 1 else 1
    sharded = shardable_names(family.net) if p.zero_stage == 3 and p.workers > 1 else set()
    params = grads = flat = acc = 0
    counts = {"all": 0, "trained": 0, "sharded": 0}
    for name, q in named_params(family.net):
        n = _numel(q.shape)
        item = 4 if is_buffer(q) or policy.keep_fp32(name) else c
        held = shard_size(n, shards) if name in sharded else n
        params += held * item
        counts["all"] += 0 if is_buffer(q) else n
        counts["sharded"] += n if name in sharded else 0
        if not q.requires_grad:
            continue
        counts["trained"] += n
        local = shard_size(n, shards)
        grads += held * item
        flat += local * 4
        if s.grad_accum > 1:  # the whole rank-major gradient under ZeRO 0/1 (nothing sent on micro-steps)
            acc += (local if (name in sharded or p.zero_stage >= 2) else shards * local) * 4
    states = flat // 4 * (3 + (s.ema_decay > 0)) * 4  # master, m, v (+ EMA) of the local vector
    gathered = 0
    if sharded:
        sharded_ids = {id(q) for n, q in named_params(family.net) if n in sharded}
        kinds = family.blocks_by_kind()
        per_kind = dict(p.get("recompute_kinds") or {})
        sizes, recomputed = [], []
        for kind, members in kinds.items():
            chosen = {id(b) for b in selected(members, *parse_recompute(per_kind.get(kind, p.recompute)))}
            for b in members:
                size = sum(_numel(q.shape) * c for q in b.get_parameters() if id(q) in sharded_ids)
                (recomputed if id(b) in chosen else sizes).append(size)
        gathered = sum(sizes) + (max(recomputed) if recomputed else 0)
    enc = encoder_params(cfg) * (4 if device == "CPU" else c)
    return MemoryPlan(p.workers, p.zero_stage, policy.name,
                      {"params": params, "grads": grads + flat + acc, "optimizer": states, "gathered": gathered,
                       "encoders": enc}, counts)
