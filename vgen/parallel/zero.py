"""ZeRO-3: the parameters of every shardable layer keep only this rank's flat segment and are
all-gathered just before use; the blocks are recomputed in backward, so the gathered weights
are not kept for it (they are gathered again). The gather's backward reduce-scatters the
gradient, which therefore arrives summed over ranks and already sharded.

ZeRO-1/2 need no change to the model: they live in the flat buckets (train/buckets.py) and the
gradient synchronisation (sync.py)."""
from typing import Dict, Set

import numpy as np
from mindspore import Tensor, nn

from ..models.layers.init import named_params
from ..models.layers.sharding import Gathered, ShardableLayer
from ..train.buckets import local_segment
from .comm import AllGather


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
