"""Convolutions and GroupNorm with PyTorch's parameter names (MindSpore's own cells call them
differently). On CPU, MindSpore's conv kernels run at ~0.25-0.5 GMAC/s; a convolution written as
one matmul over gathered kernel windows is several times faster from ~10 MMAC up (288 MMAC:
1150 ms vs 86 ms), so large convolutions take that path there. Other devices use the native ops."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from .init import InitFn, new_param, ones, uniform_fan_in, zeros
from .sharding import ShardableLayer

MATMUL_CONV_MIN_MACS = 8_000_000


def along(x, axis: int, start=None, stop=None):
    """x[..., start:stop, ...] on `axis` (>= 0). The index is built without mutating a list: under
    ms.jit a mutated list can leak between call sites and slice the wrong axis."""
    return x[(slice(None),) * axis + (slice(start, stop),)]


def window_offsets(x, axis: int, k: int, s: int):
    """The k shifted views x[d : d + s*(n-1) + 1 : s] (d < k) along `axis`, n = (L - k) // s + 1.
    Strided ones are gathered by index: the CPU backward of a strided slice fails (MindSpore 2.10).
    Plain loops, not comprehensions: ms.jit mis-compiles comprehensions over tensors."""
    n = (x.shape[axis] - k) // s + 1
    views = []
    for d in range(k):
        if s == 1:
            views.append(along(x, axis, d, d + n))
        else:
            views.append(ops.gather(x, Tensor(np.arange(d, d + s * n, s, dtype=np.int32)), axis))
    return views


def conv_by_matmul(x, weight, bias, stride):
    """A valid (unpadded) N-d convolution ([B, C, *spatial], weight [O, C, *k]) as one matmul over
    the gathered kernel windows, gathered one axis at a time (k + k (+ k) views, not k^N)."""
    nd = weight.ndim - 2
    o = weight.shape[0]
    to_last = (0,) + tuple(range(2, nd + 2)) + (1,)
    cols = x.transpose(to_last)  # [B, *spatial, C]: each window offset is one contiguous C-vector
    for i in range(nd - 1, -1, -1):  # last spatial axis first
        k, s = weight.shape[2 + i], stride[i]
        if k == 1 and s == 1:
            continue
        shifted = window_offsets(cols, 1 + i, k, s)
        # offsets go in front of what is already gathered: features end up in (k0, k1, .., c) order
        cols = shifted[0] if k == 1 else ops.cat(shifted, -1)
    wmat = weight.transpose((0,) + tuple(range(2, nd + 2)) + (1,)).reshape(o, -1)
    out = ops.dense(cols, wmat, bias)
    return out.transpose((0, nd + 1) + tuple(range(1, nd + 1)))


def _macs(x_shape, w_shape, stride) -> int:
    out = [(n - k) // s + 1 for n, k, s in zip(x_shape[2:], w_shape[2:], stride)]
    return int(x_shape[0] * np.prod(out) * np.prod(w_shape))


def _zero_pad(x, padding: tuple):
    """Symmetric zero padding of the last len(padding) axes, padding[i] on each side of axis i
    (concatenation: portable, differentiable)."""
    first = x.ndim - len(padding)
    for i, p in enumerate(padding):
        if p:
            axis = first + i
            z = ops.zeros(x.shape[:axis] + (p,) + x.shape[axis + 1:], x.dtype)
            x = ops.cat((z, x, z), axis)
    return x


class ConvNd(ShardableLayer):
    nd = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, zero: bool = False, init: InitFn = None):
        """padding: one int for every axis or one per axis; zero: weights start at zero (the
        official zero_module), else `init` or PyTorch's default init."""
        super().__init__()
        k = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * self.nd
        self.stride = tuple(stride) if isinstance(stride, (tuple, list)) else (stride,) * self.nd
        self.padding = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,) * self.nd
        self.padded = any(self.padding)
        fan_in = in_channels * int(np.prod(k))
        default = zeros if zero else uniform_fan_in(fan_in)
        self.weight = new_param((out_channels, in_channels) + k, init or default)
        self.bias = new_param((out_channels,), default) if bias else None
        self.on_cpu = ms.get_context("device_target") == "CPU"

    def _native(self, x, w, b, padding):
        raise NotImplementedError  # Conv2d / Conv3d

    def construct(self, x):
        return self.conv(x)

    def conv(self, x):
        w, b = self.read("weight", self.weight), self.read("bias", self.bias)
        if self.on_cpu:
            if self.padded:
                x = _zero_pad(x, self.padding)
            if _macs(x.shape, w.shape, self.stride) >= MATMUL_CONV_MIN_MACS:
                return conv_by_matmul(x, w, b, self.stride)
            return self._native(x, w, b, None)
        return self._native(x, w, b, self.padding if self.padded else None)


class Conv2d(ConvNd):
    """torch.nn.Conv2d: weight [out, in, kh, kw], bias [out], symmetric zero padding, PyTorch init."""

    nd = 2

    def _native(self, x, w, b, padding):
        if padding is not None:  # one per axis
            return ops.conv2d(x, w, b, stride=self.stride, pad_mode="pad", padding=padding)
        return ops.conv2d(x, w, b, stride=self.stride, pad_mode="valid")


class Conv3d(ConvNd):
    """torch.nn.Conv3d: weight [out, in, kt, kh, kw], bias [out], symmetric zero padding, PyTorch init."""

    nd = 3

    def _native(self, x, w, b, padding):
        if padding is not None:  # one per axis
            return ops.conv3d(x, w, b, stride=self.stride, pad_mode="pad", padding=padding)
        return ops.conv3d(x, w, b, stride=self.stride, pad_mode="valid")


class GroupNorm(ShardableLayer):
    """torch.nn.GroupNorm (affine) over [B, C, ...], computed in fp32 whatever the compute dtype."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.weight = new_param((num_channels,), ones)
        self.bias = new_param((num_channels,), zeros)

    def construct(self, x):
        w = self.read("weight", self.weight).astype(ms.float32)
        b = self.read("bias", self.bias).astype(ms.float32)
        return ops.group_norm(x.astype(ms.float32), self.num_groups, w, b, self.eps).astype(x.dtype)
