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
from mindspore import nn

from ..models.layers.init import is_buffer, named_params
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


def shardable_names(net: nn.Cell) -> Set[str]:
    """The parameters ZeRO-3 shards: every weight of every ShardableLayer, trained or frozen (a LoRA
    base, a frozen reference: no rank holds a 30B base whole); parameters model code reads directly
    and buffers stay whole."""
    names = {id(p): n for n, p in named_params(net)}
    out = set()
    for _, cell in net.cells_and_names():
        if isinstance(cell, ShardableLayer):
            for attr in cell.shardable:
                p = getattr(cell, attr, None)
                if p is not None and not is_buffer(p):
                    out.add(names[id(p)])
    return out


def install_gathers(net: nn.Cell, mesh, shapes: Dict[str, tuple], sharded: Set[str]) -> Set[int]:
    """On every ShardableLayer whose parameters hold their local segments (the `sharded` names,
    filled so by vgen.models.weights.fill_parameters), read them through an all-gather of their
    full `shapes`; returns the ids of the sharded parameters."""
    names = {id(p): n for n, p in named_params(net)}
    gather = AllGather(mesh.world)
    ids = set()
    for _, cell in net.cells_and_names():
        if not isinstance(cell, ShardableLayer):
            continue
        sources = None
        for attr in cell.shardable:
            p = getattr(cell, attr, None)
            if p is None or names[id(p)] not in sharded:
                continue
            shape = tuple(shapes[names[id(p)]])
            if sources is None:
                sources = Sources()
            setattr(sources, attr, Gathered(gather, shape, int(np.prod(shape)) if shape else 1))
            ids.add(id(p))
        if sources is not None:
            cell.sources = sources
    return ids
