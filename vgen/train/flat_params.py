"""Trainable parameters grouped into flat fp32 buckets, sharded for ZeRO.

A bucket holds, as flat fp32 vectors, the master weights, AdamW moments and EMA of a group of
parameters: one bucket per repeated block of the family (the unit of ZeRO-3) and the remaining
parameters in chunks. Flat buckets keep the compiled update small (identical blocks share their
compiled functions), make gradient communication one collective per bucket, and are what ZeRO
shards.

Sharding is per parameter: a parameter of n elements is flattened, padded to shards x s
(s = ceil(n / shards)) and rank r keeps elements [r*s, (r+1)*s). A bucket's local vector is the
concatenation of its parameters' local segments. Gradients are laid out rank-major ([shards, L]),
so one all-reduce (row r) or reduce-scatter gives every rank its local gradient, and one
all-gather of the local vectors gives back every full parameter. With shards = 1 the local
vector is simply the concatenation of the parameters.

Two kinds of bucket: `replicated` parameters are whole on every rank (ZeRO 0-2, and the few
parameters model code reads directly under ZeRO-3); `sharded` parameters hold only their local
segment (ZeRO-3), their gradients arrive already summed over ranks (the gather's backward).
Checkpoints are written per parameter name, so they do not depend on bucketing or sharding."""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from mindspore import Parameter, Tensor, ops

from ..parallel.zero import local_segment, shard_size

MAX_PARAMS_PER_BUCKET = 24  # for parameters outside the blocks
STATE_KINDS = {"model": "master", "adam_m": "m", "adam_v": "v", "ema": "ema"}


@dataclass(frozen=True)
class Slot:
    name: str
    shape: Tuple[int, ...]  # the full parameter's shape
    numel: int
    shard: int  # elements of the local segment
    offset: int  # where the local segment starts in the bucket's local vector


class Bucket:
    def __init__(self, index: int, names: Sequence[str], params: Sequence[Parameter], decay: Sequence[bool], *,
                 shapes: Dict[str, tuple], shards: int = 1, shard_rank: int = 0, sharded: bool = False,
                 ema: bool = False, accumulate: bool = False, accumulate_full: bool = True):
        """`shapes`: every parameter's full shape. The masters start from the parameters' values, in
        fp32 (taken before any cast): whole parameters, or for a `sharded` bucket the local ZeRO-3
        segments the parameters hold. `accumulate`: keep a gradient accumulator, of the
        rank-major full gradient when `accumulate_full` (nothing communicated on micro-steps),
        else of the local shard."""
        self.index = index
        self.names, self.params = list(names), list(params)
        self.shards, self.rank, self.sharded = shards, shard_rank, sharded
        slots, offset = [], 0
        for n in names:
            shape = tuple(shapes[n])
            numel = int(np.prod(shape)) if shape else 1
            s = shard_size(numel, shards)
            slots.append(Slot(n, shape, numel, s, offset))
            offset += s
        self.slots, self.local_size = slots, offset
        local = self._local_of_params()
        mask = np.concatenate([np.full(s.shard, 1.0 if d else 0.0, np.float32) for s, d in zip(slots, decay)])
        tag = f"bucket{index}"
        self.master = Parameter(Tensor(local), name=f"{tag}.master", requires_grad=False)
        self.m = Parameter(Tensor(np.zeros_like(local)), name=f"{tag}.adam_m", requires_grad=False)
        self.v = Parameter(Tensor(np.zeros_like(local)), name=f"{tag}.adam_v", requires_grad=False)
        self.ema = Parameter(Tensor(local.copy()), name=f"{tag}.ema", requires_grad=False) if ema else None
        self.decay_mask = Tensor(mask)
        acc_size = self.full_grad_size if (accumulate_full and not sharded) else self.local_size
        self.grad_acc = (Parameter(Tensor(np.zeros(acc_size, np.float32)), name=f"{tag}.grad_acc",
                                   requires_grad=False) if accumulate else None)

    @property
    def layout(self):
        """Static description the compiled functions specialise on."""
        return tuple((s.numel, s.shard, s.offset) for s in self.slots)

    @property
    def full_grad_size(self) -> int:
        """Length of the rank-major gradient vector of a replicated bucket."""
        return self.shards * self.local_size

    # ---- host-side views by parameter name (checkpoints) -------------------------------------

    def _local_of_params(self) -> np.ndarray:
        if not self.slots:
            return np.zeros(0, np.float32)
        if self.sharded:  # the parameters hold their local segments
            return np.concatenate([p.asnumpy().astype(np.float32).reshape(-1) for p in self.params])
        return np.concatenate([local_segment(p.asnumpy(), self.shards, self.rank) for p in self.params])

    def segments(self, which: str) -> Dict[str, np.ndarray]:
        """This rank's segment of master / m / v / ema for every parameter."""
        flat = getattr(self, which).asnumpy()
        return {s.name: flat[s.offset:s.offset + s.shard] for s in self.slots}

    def full_arrays(self, which: str) -> Dict[str, np.ndarray]:
        """Whole arrays by name; only without sharding (sharded runs save segments)."""
        assert self.shards == 1, "whole arrays of a sharded bucket need every rank's segments"
        return {n: seg[:s.numel].reshape(s.shape) for (n, seg), s in zip(self.segments(which).items(), self.slots)}

    def load_from(self, which: str, source) -> None:
        """Set master / m / v / ema from a weights source (has / segment by name): this rank's segments."""
        if self.slots:
            local = np.concatenate([source.segment(s.name, self.shards, self.rank) for s in self.slots])
            getattr(self, which).set_data(Tensor(local))

    def write_params(self, which: str, gather=None) -> None:
        """Overwrite the parameters, in place (compiled graphs keep seeing them), with the master
        weights or the EMA: a sharded bucket's local segments as they are, else the whole
        parameters, gathered over the shards first (`gather`: [L] -> [shards, L]) under ZeRO-1/2."""
        flat = getattr(self, which)
        if not self.sharded and self.shards > 1:
            full = gather(flat).asnumpy()
            values = [full[:, s.offset:s.offset + s.shard].reshape(-1)[:s.numel].reshape(s.shape) for s in self.slots]
        else:
            local = flat.asnumpy()
            values = [local[s.offset:s.offset + (s.shard if self.sharded else s.numel)] for s in self.slots]
            if not self.sharded:
                values = [v.reshape(s.shape) for v, s in zip(values, self.slots)]
        for p, v in zip(self.params, values):
            ops.assign(p, Tensor(v).astype(p.dtype))

    # ---- checkpointed state (the checkpoint module owns the file format) ----------------------

    def kinds(self) -> Dict[str, str]:
        """{checkpoint kind: vector}: the fp32 master weights, the AdamW moments, the EMA."""
        return {k: v for k, v in STATE_KINDS.items() if getattr(self, v) is not None}

    def state_dict(self) -> Dict[str, Dict[str, np.ndarray]]:
        """{kind: {name: array}}: whole arrays without sharding, this rank's segments with."""
        view = self.full_arrays if self.shards == 1 else self.segments
        return {kind: view(which) for kind, which in self.kinds().items()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """From {kind: weights source} (read by segments: any worker count or ZeRO stage wrote them);
        the master weights are not read here: they come from the model, loaded before the buckets."""
        for kind, which in self.kinds().items():
            if kind != "model" and kind in state:
                self.load_from(which, state[kind])


def make_buckets(named: Sequence[Tuple[str, Parameter]], block_params: Sequence[Sequence[Parameter]], decay_fn,
                 shapes: Dict[str, tuple], sharded_ids=frozenset(), **kw) -> List[Bucket]:
    """One bucket per block (split in sharded / replicated parameters under ZeRO-3), then the
    parameters outside the blocks in chunks. Parameters keep their order inside a bucket."""
    by_id = {id(p): (n, p) for n, p in named}
    groups, used = [], set()
    for params in block_params:
        group = [by_id[id(p)] for p in params if id(p) in by_id]
        used.update(id(p) for _, p in group)
        for want_sharded in (True, False):
            part = [(n, p) for n, p in group if (id(p) in sharded_ids) == want_sharded]
            if part:
                groups.append((part, want_sharded))
    rest = [(n, p) for n, p in named if id(p) not in used]
    head = []
    for want_sharded in (True, False):
        part = [(n, p) for n, p in rest if (id(p) in sharded_ids) == want_sharded]
        head += [(part[i:i + MAX_PARAMS_PER_BUCKET], want_sharded) for i in range(0, len(part), MAX_PARAMS_PER_BUCKET)]
    groups = head + groups
    return [Bucket(i, [n for n, _ in g], [p for _, p in g], [decay_fn(n, len(shapes[n])) for n, _ in g],
                   shapes=shapes, sharded=sh, **kw) for i, (g, sh) in enumerate(groups)]


@contextmanager
def weights_held(buckets: Sequence[Bucket], which: str, gather=None):
    """Inside the block the parameters hold `which` (e.g. the EMA), the master weights after."""
    for b in buckets:
        b.write_params(which, gather)
    try:
        yield
    finally:
        for b in buckets:
            b.write_params("master", gather)
