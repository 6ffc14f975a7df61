"""Gradient synchronisation of the flat buckets, per ZeRO stage (used inside compiled steps).

Gradients are summed over the whole world (SP ranks hold partial gradients of the same samples,
DP ranks different samples) and divided by dp: the gradient of the mean loss over the global
batch. The loss each rank differentiates is divided by sp (see train/step.py), so cotangents
stay partial sums across an SP group everywhere and every collective's native gradient is right.

  stage 0  all-reduce the bucket; every rank updates the whole bucket (shards = 1)
  stage 1  all-reduce, keep row `rank` of the rank-major vector; all-gather after the update
  stage 2  reduce-scatter instead of all-reduce (and per micro-step under accumulation)
  stage 3  sharded parameters: gradients arrive reduced from the gather's backward
"""
import mindspore as ms
from mindspore import ops

from .comm import AllGather, AllReduce, ReduceScatter


class GradSync:
    def __init__(self, mesh=None, zero_stage: int = 0):
        self.size = mesh.size if mesh is not None else 1
        self.dp = mesh.dp if mesh is not None else 1
        self.sp = mesh.sp if mesh is not None else 1
        self.rank = mesh.rank if mesh is not None else 0
        self.zero_stage = zero_stage if self.size > 1 else 0
        self.shards = self.size if self.zero_stage >= 1 else 1
        self.shard_rank = self.rank if self.shards > 1 else 0
        world = mesh.world if mesh is not None else None
        self.all_reduce = AllReduce(world) if self.size > 1 else None
        self.reduce_scatter = ReduceScatter(world) if self.size > 1 and self.zero_stage >= 2 else None
        self.all_gather = AllGather(world) if self.shards > 1 else None

    @property
    def sharded_norm(self) -> bool:
        """Each rank holds a different part of the gradient: the norm needs an all-reduce."""
        return self.shards > 1

    def reduce(self, full):
        """Rank-major flat gradient [shards * L] of a replicated bucket -> this rank's [L], averaged."""
        if self.size == 1:
            return full
        if self.reduce_scatter is not None:
            local = self.reduce_scatter(full)
        else:
            summed = self.all_reduce(full)
            local = summed if self.shards == 1 else summed.reshape(self.shards, -1)[self.rank]
        return local / self.dp

    def reduced_shard(self, local):
        """Gradients of sharded parameters were summed over ranks by the gather's backward."""
        return local / self.dp if self.size > 1 else local

    def gather(self, local):
        """[L] local master -> [shards, L] (identity without sharding)."""
        if self.all_gather is None:
            return local[None]
        return self.all_gather(local[None])

    def total(self, x):
        """Sum of a scalar over ranks (the squared norm of sharded gradients)."""
        return self.all_reduce(x) if self.sharded_norm else x

    def mean_over_dp(self, x):
        """The global-batch mean of a per-rank scalar (every SP rank holds the same value)."""
        if self.size == 1:
            return x
        return self.all_reduce(x.astype(ms.float32)) / self.size


def _f32_flat(g):
    g = g.reshape(-1)
    return g if g.dtype == ms.float32 else g.astype(ms.float32)


def flatten_rank_major(grads, layout, shards: int):
    """Per-parameter gradients -> [shards * L], each parameter padded and split by rank."""
    if shards == 1:  # no padding, no reordering: one concatenation
        flat = [_f32_flat(g) for g in grads]
        return ops.cat(flat) if len(flat) > 1 else flat[0]
    rows = []
    for g, (numel, s, _) in zip(grads, layout):
        flat = g.astype(ms.float32).reshape(-1)
        pad = shards * s - numel
        if pad:
            flat = ops.cat([flat, ops.zeros(pad, ms.float32)])
        rows.append(flat.reshape(shards, s))
    return (ops.cat(rows, 1) if len(rows) > 1 else rows[0]).reshape(-1)


def flatten_local(grads):
    """Shard gradients of sharded parameters -> [L]."""
    flat = [_f32_flat(g) for g in grads]
    return ops.cat(flat) if len(flat) > 1 else flat[0]
