"""Patch, timestep, caption and sin-cos position embeddings."""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .init import new_param, normal, xavier_uniform, zeros
from .linear import GELUTanh, Linear, Mlp, SiLU
from .sharding import ShardableLayer


class Patchify3D(ShardableLayer):
    """A Conv3d whose stride equals its kernel, computed as patchify + matmul (identical math,
    much faster than a strided conv on CPU). Weight [out, in, pt, ph, pw] as PyTorch's Conv3d."""

    def __init__(self, in_channels: int, out_channels: int, patch_size):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.out_channels = out_channels
        pt, ph, pw = self.patch_size
        fan_in = in_channels * pt * ph * pw
        # the official init treats the patch conv like a Linear on the flattened kernel
        self.weight = new_param((out_channels, in_channels, pt, ph, pw), xavier_uniform(fan_in, out_channels))
        self.bias = new_param((out_channels,), zeros)

    def construct(self, x):
        """[B, C, T, H, W] -> [B, T'*H'*W', out] with tokens in (t, h, w) order."""
        b, c, t, h, w = x.shape
        pt, ph, pw = self.patch_size
        x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
        x = x.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (t // pt) * (h // ph) * (w // pw), c * pt * ph * pw)
        w = self.read("weight", self.weight).reshape(self.out_channels, -1)
        return ops.dense(x, w, self.read("bias", self.bias))


class PatchEmbed3D(nn.Cell):
    def __init__(self, patch_size, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = Patchify3D(in_channels, embed_dim, patch_size)

    def construct(self, x):
        return self.proj(x)


def sinusoid_freqs(dim: int, max_period: float = 10000.0) -> np.ndarray:
    half = dim // 2
    return np.exp(-math.log(max_period) * np.arange(half, dtype=np.float32) / half).astype(np.float32)


def timestep_embedding(t, freqs: Tensor, cos_first: bool = True):
    """GLIDE sinusoid of (fractional) timesteps t [B] -> [B, 2*len(freqs)] in fp32."""
    args = t.astype(ms.float32)[:, None] * freqs[None, :]
    parts = (ops.cos(args), ops.sin(args)) if cos_first else (ops.sin(args), ops.cos(args))
    return ops.cat(parts, -1)


def guidance_freqs(dim: int) -> np.ndarray:
    """exp(-ln(1e4) k / (dim/2 - 1)), k < dim/2: LCM's guidance embedding (note the - 1)."""
    half = dim // 2
    return np.exp(-math.log(10000.0) * np.arange(half) / (half - 1)).astype(np.float32)


def guidance_embedding(w, freqs: Tensor):
    """T2V-Turbo's (LCM's) guidance_scale_embedding of guidance scales w [B]: a sin-first
    sinusoid of 1000 w, [B, 2*len(freqs)]."""
    return timestep_embedding(w * 1000.0, freqs, cos_first=False)


class TimestepEmbedder(nn.Cell):
    """256-d cos-first sinusoid -> Linear -> SiLU -> Linear (names mlp.0, mlp.2)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, max_period: float = 10000.0,
                 init_std: float = 0.02):
        super().__init__()
        self.mlp = nn.SequentialCell([
            Linear(frequency_embedding_size, hidden_size, init=normal(init_std)),
            SiLU(),
            Linear(hidden_size, hidden_size, init=normal(init_std)),
        ])
        self.freqs = Tensor(sinusoid_freqs(frequency_embedding_size, max_period))

    def construct(self, t, dtype=ms.float32):
        return self.mlp(timestep_embedding(t, self.freqs).astype(dtype))


class CaptionEmbedder(nn.Cell):
    """Projects text embeddings [B, 1, L, Cin] with an MLP; dropped captions are replaced by the
    null embedding `y_embedding` (a persistent buffer, as in the official model)."""

    def __init__(self, in_channels: int, hidden_size: int, token_num: int, init_std: float = 0.02):
        super().__init__()
        self.y_proj = Mlp(in_channels, hidden_size, hidden_size, act=GELUTanh())
        self.y_proj.fc1.weight.init_fn = normal(init_std)
        self.y_proj.fc2.weight.init_fn = normal(init_std)
        self.y_embedding = new_param((token_num, in_channels), normal(in_channels ** -0.5), buffer=True)

    def construct(self, y, drop=None):
        if drop is not None:
            null = self.y_embedding.astype(y.dtype)[None, None]
            y = ops.where(drop.reshape(-1, 1, 1, 1), null, y)
        return self.y_proj(y)


# ---- fixed sin-cos tables (numpy; MAE / PixArt conventions) -----------------------------------

def sincos_1d_from_grid(dim: int, pos: np.ndarray) -> np.ndarray:
    """[M] positions -> [M, dim] as [sin | cos]."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.outer(pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_1d(dim: int, length: int, scale: float = 1.0) -> np.ndarray:
    return sincos_1d_from_grid(dim, np.arange(length) / scale).astype(np.float32)


def sincos_2d(dim: int, grid_hw, scale: float = 1.0, base_size=None) -> np.ndarray:
    """[H*W, dim] table, rows in (h, w) order; as the official grid (np.meshgrid(w, h)), the
    first half of each row encodes the w coordinate and the second half the h coordinate."""
    gh, gw = grid_hw
    grid_h = np.arange(gh, dtype=np.float32) / scale
    grid_w = np.arange(gw, dtype=np.float32) / scale
    if base_size is not None:
        grid_h *= base_size / gh
        grid_w *= base_size / gw
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, gh, gw)
    emb_a = sincos_1d_from_grid(dim // 2, grid[0])
    emb_b = sincos_1d_from_grid(dim // 2, grid[1])
    return np.concatenate([emb_a, emb_b], axis=1).astype(np.float32)
