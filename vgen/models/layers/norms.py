"""Normalisation layers computed in fp32 whatever the compute dtype, with PyTorch's names."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from .init import new_param, ones, zeros
from .sharding import ShardableLayer


class LayerNorm(ShardableLayer):
    """LayerNorm over the last dim; `affine=False` matches elementwise_affine=False (no params)."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.affine = affine
        if affine:
            self.weight = new_param((dim,), ones)
            self.bias = new_param((dim,), zeros)
        self.unit = Tensor(np.ones(dim, np.float32))
        self.zero = Tensor(np.zeros(dim, np.float32))
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        dtype = x.dtype
        if self.affine:
            w = self.read("weight", self.weight).astype(ms.float32)
            b = self.read("bias", self.bias).astype(ms.float32)
        else:
            w, b = self.unit, self.zero
        y, _, _ = self.norm(x.astype(ms.float32), w, b)
        return y.astype(dtype)


class RMSNorm(ShardableLayer):
    """x * rsqrt(mean(x^2) + eps) * weight, in fp32."""

    shardable = ("weight",)

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = new_param((dim,), ones)

    def construct(self, x):
        dtype = x.dtype
        xf = x.astype(ms.float32)
        y = xf * ops.rsqrt(ops.mean(xf * xf, -1, keep_dims=True) + self.eps)
        return (y * self.read("weight", self.weight).astype(ms.float32)).astype(dtype)
