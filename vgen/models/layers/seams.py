"""Seams: the points of a model's forward where its tokens may be split across workers and
gathered again. A seam is an identity cell; the model always calls it, never asks whether it
runs in parallel. Sequence parallelism (vgen.parallel.plan.parallelize) replaces every seam by
the cell that splits or gathers along the seam's axis, as it wraps the attention cores."""
from mindspore import nn


class SplitSeam(nn.Cell):
    """Where dim `axis` is split (identity here)."""

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def construct(self, x):
        return x

    def valid(self, length: int, dtype):
        """1 for this rank's real positions, 0 for padding ([local length]); None: nothing is padded."""
        return None


class GatherSeam(nn.Cell):
    """Where the split dim `axis` of an `ndim`-dim tensor is gathered back to `length` (identity here)."""

    def __init__(self, axis: int, ndim: int = 4):
        super().__init__()
        self.axis, self.ndim = axis, ndim

    def construct(self, x, length: int):
        return x
