"""Trainable parameters grouped into flat fp32 buckets.

Each bucket holds, as flat fp32 vectors, the master weights, the AdamW moments and the EMA of a
group of parameters: one bucket per repeated block of the family (the unit of ZeRO-3 gathering)
and the remaining parameters in chunks. Flat buckets keep the compiled update small (the graph
compiler is superlinear in node count, and identical blocks share one compiled update), make
gradient communication one fused collective per bucket, and are what ZeRO shards: a bucket is
padded to a multiple of the shard count and each rank keeps its contiguous slice.
Checkpoints are written per parameter name, so they do not depend on the bucketing."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor

MAX_PARAMS_PER_BUCKET = 24  # for parameters outside the blocks


@dataclass(frozen=True)
class Slot:
    name: str
    shape: Tuple[int, ...]
    offset: int
    size: int


class Bucket:
    def __init__(self, index: int, names: Sequence[str], params: Sequence[Parameter], decay: Sequence[bool], *,
                 shards: int = 1, shard_rank: int = 0, ema: bool = False, accumulate: bool = False,
                 init: Optional[Dict[str, np.ndarray]] = None):
        self.index = index
        self.names, self.params = list(names), list(params)
        offset, slots = 0, []
        for n, p in zip(names, params):
            size = int(np.prod(p.shape)) if len(p.shape) else 1
            slots.append(Slot(n, tuple(p.shape), offset, size))
            offset += size
        self.slots, self.numel = slots, offset
        self.shards, self.shard_rank = shards, shard_rank
        self.padded = -(-offset // shards) * shards
        self.shard_size = self.padded // shards
        self.lo, self.hi = shard_rank * self.shard_size, (shard_rank + 1) * self.shard_size

        values = init or {}
        full = self.flatten_host({n: values[n] if n in values else p.asnumpy() for n, p in zip(names, params)})
        mask = np.zeros(self.padded, np.float32)
        for s, d in zip(slots, decay):
            mask[s.offset:s.offset + s.size] = 1.0 if d else 0.0
        tag = f"bucket{index}"
        self.master = Parameter(Tensor(full[self.lo:self.hi]), name=f"{tag}.master", requires_grad=False)
        self.m = Parameter(Tensor(np.zeros(self.shard_size, np.float32)), name=f"{tag}.adam_m", requires_grad=False)
        self.v = Parameter(Tensor(np.zeros(self.shard_size, np.float32)), name=f"{tag}.adam_v", requires_grad=False)
        self.ema = (Parameter(Tensor(full[self.lo:self.hi]), name=f"{tag}.ema", requires_grad=False) if ema else None)
        self.decay_mask = Tensor(mask[self.lo:self.hi])
        self.grad_acc = (Parameter(Tensor(np.zeros(self.padded, np.float32)), name=f"{tag}.grad_acc",
                                   requires_grad=False) if accumulate else None)

    # ---- host-side views, by parameter name (checkpoints) ------------------------------------

    def flatten_host(self, arrays: Dict[str, np.ndarray]) -> np.ndarray:
        flat = np.zeros(self.padded, np.float32)
        for s in self.slots:
            flat[s.offset:s.offset + s.size] = np.asarray(arrays[s.name], np.float32).reshape(-1)
        return flat

    def unflatten_host(self, flat: np.ndarray) -> Dict[str, np.ndarray]:
        return {s.name: flat[s.offset:s.offset + s.size].reshape(s.shape) for s in self.slots}

    def local_arrays(self, which: str) -> Dict[str, np.ndarray]:
        """This rank's part of master / m / v / ema as {name: array}; with shards > 1 use
        shard tensors instead (see parallel.zero)."""
        assert self.shards == 1, "per-name arrays of a sharded bucket need all shards"
        return self.unflatten_host(getattr(self, which).asnumpy())

    def load_local(self, which: str, arrays: Dict[str, np.ndarray]) -> None:
        flat = self.flatten_host(arrays)
        getattr(self, which).set_data(Tensor(flat[self.lo:self.hi]))


def make_buckets(named: Sequence[Tuple[str, Parameter]], block_params: Sequence[Sequence[Parameter]],
                 decay_fn, **kw) -> List[Bucket]:
    """One bucket per block (the params of each block, in order), then the rest in chunks."""
    by_id = {id(p): (n, p) for n, p in named}
    groups, used = [], set()
    for params in block_params:
        group = [by_id[id(p)] for p in params if id(p) in by_id]
        if group:
            groups.append(group)
            used.update(id(p) for _, p in group)
    rest = [(n, p) for n, p in named if id(p) not in used]
    for i in range(0, len(rest), MAX_PARAMS_PER_BUCKET):
        groups.insert(i // MAX_PARAMS_PER_BUCKET, rest[i:i + MAX_PARAMS_PER_BUCKET])
    return [Bucket(i, [n for n, _ in g], [p for _, p in g], [decay_fn(n, len(p.shape)) for n, p in g], **kw)
            for i, g in enumerate(groups)]
