"""ZeRO-3: the parameters of every shardable layer keep only this rank's flat segment and are
all-gathered just before use. Blocks under recompute gather again in backward (the gathered
weights are not kept); without recompute a layer's gathered weights live until its backward. The
gather's backward reduce-scatters the gradient, which therefore arrives summed over ranks and
already sharded.

Sharding is per parameter: a parameter of n elements is flattened, padded to shards x s
(s = ceil(n / shards)) and rank r keeps elements [r*s, (r+1)*s).

ZeRO-1/2 need no change to the model: they live in the flat buckets (train/flat_params.py) and
the gradient synchronisation (sync.py)."""
from typing import Dict, Set

import numpy as np
from mindspore import Tensor, nn

from ..models.layers.init import named_params
from ..models.layers.sharding import Gathered, ShardableLayer
from .comm import AllGather


def shard_size(numel: int, shards: int) -> int:
    return -(-numel // shards)


def local_segment(full: np.ndarray, shards: int, rank: int) -> np.ndarray:
    """This rank's segment of a flattened, zero-padded parameter."""
    flat = np.asarray(full, np.float32).reshape(-1)
    s = shard_size(flat.size, shards)
    seg = np.zeros(s, np.float32)
    part = flat[rank * s:(rank + 1) * s]
    seg[:part.size] = part
    return seg


class Sources(nn.Cell):
    """Holds a layer's Gathered readers, one attribute per parameter name."""


def shard_parameters(net: nn.Cell, mesh, full_values: Dict[str, np.ndarray]) -> Set[int]:
    """Replace every trainable parameter of every ShardableLayer by its local segment; returns
    the ids of the sharded parameters."""
    names = {id(p): n for n, p in named_params(net)}
    gather = AllGather(mesh.world)
    sharded = set()
    for _, cell in net.cells_and_names():
        if not isinstance(cell, ShardableLayer):
            continue
        sources = None
        for attr in cell.shardable:
            p = getattr(cell, attr, None)
            if p is None or not p.requires_grad:
                continue
            full = full_values[names[id(p)]]
            p.set_data(Tensor(local_segment(full, mesh.size, mesh.rank)), slice_shape=True)
            if sources is None:
                sources = Sources()
            setattr(sources, attr, Gathered(gather, full.shape, int(full.size)))
            sharded.add(id(p))
        if sources is not None:
            cell.sources = sources
    return sharded
