"""Where a layer reads its parameters from. Normally the parameter itself; under ZeRO-3 the
parameter holds only this rank's flat shard and the layer reads the all-gathered full tensor
through `Gathered`, set by vgen.parallel.zero on every layer that derives from `ShardableLayer`.
Parameters that model code reads directly (e.g. a block's scale_shift_table) stay whole."""
from mindspore import nn


class Gathered(nn.Cell):
    """The full parameter from its flat shard: all-gather, drop the padding, reshape."""

    def __init__(self, gather: nn.Cell, shape, numel: int):
        super().__init__()
        self.gather, self.shape, self.numel = gather, tuple(shape), numel

    def construct(self, shard):
        return self.gather(shard)[:self.numel].reshape(self.shape)


class ShardableLayer(nn.Cell):
    """A layer whose parameters (named in `shardable`) may be ZeRO-3 sharded."""

    shardable = ("weight", "bias")

    def __init__(self):
        super().__init__()
        self.sources = None  # a CellDict-like holder set by the ZeRO-3 plan

    def read(self, name: str, p):
        """`p` itself, or its gathered full value under ZeRO-3."""
        if self.sources is None or p is None:
            return p
        return getattr(self.sources, name)(p)
