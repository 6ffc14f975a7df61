"""The one module that calls mindspore.communication.

Collectives are Cells usable inside compiled steps. On Ascend/GPU they are the native ops. On CPU,
MindSpore runs only AllReduce(sum) on sub-groups (AllGather/Broadcast on the world group alone,
no ReduceScatter or AlltoAll), so each collective is built from AllReduce on its group:
  all-gather     = each rank writes its chunk into a zero buffer, then all-reduce;
  reduce-scatter = all-reduce, then keep the own chunk;
  all-to-all     = every rank writes its chunks into a [src, dst] zero buffer, all-reduce, keep
                   column `rank`.
Same numbers as the native ops (sums of the same terms; the zeros add exactly), and autodiff
through them gives the native gradients (all-gather <-> reduce-scatter, all-to-all <-> its reverse).
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import mindspore as ms
from mindspore import nn, ops

_GROUPS: Dict[str, List[int]] = {}


@dataclass(frozen=True)
class Group:
    """A communication group as this rank sees it."""

    name: Optional[str]  # None: the world group
    ranks: tuple
    rank: int  # this process's index inside the group

    @property
    def size(self) -> int:
        return len(self.ranks)


def in_distributed_job() -> bool:
    return int(os.environ.get("MS_WORKER_NUM", "1") or 1) > 1


def init_distributed():
    """Initialise communication (once); returns (rank, world size)."""
    from mindspore.communication import get_group_size, get_rank, init

    init()
    return get_rank(), get_group_size()


def make_group(name: str, ranks, rank: int, world_size: int) -> Group:
    """The group of `ranks` containing this rank (created on first use; the world group needs none)."""
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) == 1:  # a group of one needs no communication
        return Group(f"self{rank}", ranks, 0)
    if len(ranks) == world_size:
        return Group(None, ranks, ranks.index(rank))
    if name not in _GROUPS:
        from mindspore.communication import create_group

        create_group(name, list(ranks))
        _GROUPS[name] = list(ranks)
    return Group(name, ranks, ranks.index(rank))


def native_collectives() -> bool:
    return ms.get_context("device_target") != "CPU" and os.environ.get("VGEN_COMPOSITE_COLLECTIVES") != "1"


def _group_kw(group: Group) -> dict:
    return {} if group.name is None else {"group": group.name}


def _all_reduce_op(group: Group):
    return ops.AllReduce(ops.ReduceOp.SUM, **_group_kw(group))


class AllReduce(nn.Cell):
    """Sum over the group."""

    def __init__(self, group: Group):
        super().__init__()
        self.single = group.size == 1
        self.op = None if self.single else _all_reduce_op(group)

    def construct(self, x):
        return x if self.single else self.op(x)


def _place(x, index: int, count: int):
    """[count, *x.shape] zeros with x at row `index`."""
    parts = []
    if index > 0:
        parts.append(ops.zeros((index,) + x.shape, x.dtype))
    parts.append(x[None])
    if index < count - 1:
        parts.append(ops.zeros((count - 1 - index,) + x.shape, x.dtype))
    return ops.cat(parts, 0) if len(parts) > 1 else parts[0]


class AllGather(nn.Cell):
    """Concatenate every rank's x along dim 0 (in group-rank order)."""

    def __init__(self, group: Group):
        super().__init__()
        self.n, self.rank = group.size, group.rank
        self.native = native_collectives()
        if self.n > 1:
            self.op = ops.AllGather(**_group_kw(group)) if self.native else _all_reduce_op(group)

    def construct(self, x):
        if self.n == 1:
            return x
        if self.native:
            return self.op(x)
        return self.op(_place(x, self.rank, self.n)).reshape((self.n * x.shape[0],) + x.shape[1:])


class ReduceScatter(nn.Cell):
    """Sum over the group, then this rank's chunk of dim 0."""

    def __init__(self, group: Group):
        super().__init__()
        self.n, self.rank = group.size, group.rank
        self.native = native_collectives()
        if self.n > 1:
            self.op = ops.ReduceScatter(ops.ReduceOp.SUM, **_group_kw(group)) if self.native \
                else _all_reduce_op(group)

    def construct(self, x):
        if self.n == 1:
            return x
        if self.native:
            return self.op(x)
        c = x.shape[0] // self.n
        return self.op(x)[self.rank * c:(self.rank + 1) * c]


class AllToAll(nn.Cell):
    """Split x (of `ndim` dims) into n chunks along `split_dim`, send chunk j to rank j, and
    concatenate the chunks received from every rank along `concat_dim` (Ulysses: sequence <-> heads)."""

    def __init__(self, group: Group, split_dim: int, concat_dim: int, ndim: int = 4):
        super().__init__()
        self.n, self.rank = group.size, group.rank
        self.split_dim, self.concat_dim = split_dim, concat_dim
        # permutations of the chunked [.., n, c, ..] tensor (fixed at build time: graph mode)
        self.to_front = move_to_front(split_dim, ndim + 1)
        self.from_front = move_from_front(concat_dim, ndim + 1)
        self.native = native_collectives()
        if self.n > 1:
            self.op = ops.AlltoAll(self.n, split_dim, concat_dim, **_group_kw(group)) if self.native \
                else _all_reduce_op(group)

    def construct(self, x):
        if self.n == 1:
            return x
        if self.native:
            return self.op(x)
        n, d, cd = self.n, self.split_dim, self.concat_dim
        shape = x.shape
        # chunks: [n_dst, *chunk] (chunk j, destined to rank j, at row j)
        chunks = x.reshape(shape[:d] + (n, shape[d] // n) + shape[d + 1:]).transpose(self.to_front)
        received = self.op(_place(chunks, self.rank, n))[:, self.rank]  # [n_src, *chunk]
        # put the source index just before the concat dim, then merge the two
        received = received.transpose(self.from_front)
        cshape = received.shape
        return received.reshape(cshape[:cd] + (n * cshape[cd + 1],) + cshape[cd + 2:])


def move_to_front(axis: int, ndim: int) -> tuple:
    return (axis,) + tuple(i for i in range(ndim) if i != axis)


def move_from_front(axis: int, ndim: int) -> tuple:
    rest = list(range(1, ndim))
    return tuple(rest[:axis] + [0] + rest[axis:])


def barrier(group: Optional[Group] = None):
    """A small all-reduce: ranks that finish early must not leave peers in a collective."""
    import numpy as np

    op = ops.AllReduce(ops.ReduceOp.SUM) if group is None else _all_reduce_op(group)
    return float(op(ms.Tensor(np.ones(1, np.float32))).asnumpy()[0])
