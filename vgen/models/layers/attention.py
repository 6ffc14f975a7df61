"""Attention layers. `AttentionCore` is the one place softmax(q k^T) v is computed: it is the
unit that sequence parallelism wraps (Ulysses all-to-all around it) and that recompute may leave
out. Layouts are [B, H, N, D] throughout; masks are key masks [B, Nk] with 1 = attend."""
import math
import os

import mindspore as ms
from mindspore import nn, ops

from .linear import Linear
from .norms import LayerNorm, RMSNorm

NEG_INF = -1e9  # added in fp32 to masked logits; a row always keeps one valid key


def attention_backend() -> str:
    """'flash' (fused kernel, Ascend only) or 'math' (matmul-softmax-matmul, every device)."""
    forced = os.environ.get("VGEN_ATTENTION")
    if forced:
        return forced
    return "flash" if ms.get_context("device_target") == "Ascend" else "math"


class AttentionCore(nn.Cell):
    """softmax(scale * q k^T + mask) v, the softmax in fp32 whatever the compute dtype."""

    def __init__(self, head_dim: int, scale: float = None):
        super().__init__()
        self.head_dim = head_dim
        self.scale = scale if scale is not None else head_dim ** -0.5
        self.backend = attention_backend()
        # The fused kernel needs head dims that are multiples of 16: pad with zeros (q.k and the
        # first head_dim outputs are unchanged) and slice the padding off again.
        self.pad_to = int(math.ceil(head_dim / 16.0) * 16)

    def construct(self, q, k, v, key_mask=None):
        if self.backend == "flash":
            return self._flash(q, k, v, key_mask)
        return self._math(q, k, v, key_mask)

    def _math(self, q, k, v, key_mask):
        dtype = q.dtype
        logits = ops.matmul(q * self.scale, k.swapaxes(-1, -2)).astype(ms.float32)
        if key_mask is not None:
            bias = (1.0 - key_mask.astype(ms.float32)) * NEG_INF  # [B, Nk]
            logits = logits + bias[:, None, None, :]
        attn = ops.softmax(logits, -1).astype(dtype)
        return ops.matmul(attn, v)

    def _flash(self, q, k, v, key_mask):
        b, h, nq, d = q.shape
        nk = k.shape[2]
        if self.pad_to != d:
            pad = ((0, 0), (0, 0), (0, 0), (0, self.pad_to - d))
            q, k, v = ops.pad(q, pad), ops.pad(k, pad), ops.pad(v, pad)
        attn_mask = None
        if key_mask is not None:  # the kernel's mask marks what to DROP
            drop = (key_mask == 0).astype(ms.uint8)
            attn_mask = ops.broadcast_to(drop[:, None, None, :], (b, 1, nq, nk))
        out = ops.flash_attention_score(q, k, v, h, attn_mask=attn_mask, scalar_value=self.scale,
                                        input_layout="BNSD")
        return out[..., :d] if self.pad_to != d else out


def make_qk_norm(kind, head_dim: int, eps: float = 1e-6):
    if kind in (None, "none", False):
        return None
    if kind == "rms":
        return RMSNorm(head_dim, eps)
    if kind == "layer":
        return LayerNorm(head_dim, eps, affine=True)
    raise ValueError(f"unknown qk_norm {kind!r} (none | rms | layer)")


def split_heads(x, heads: int):
    """[B, N, H*D] -> [B, H, N, D]."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """[B, H, N, D] -> [B, N, H*D]."""
    b, h, n, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


class SelfAttention(nn.Cell):
    """Multi-head self-attention with a fused qkv projection laid out (3, heads, head_dim).

    `rope` (optional) is a callable applied to q and k ([B, H, N, D]) before the q/k norm when
    `rope_before_norm`, else after it (families differ: OpenSora 1.1 before, HunyuanVideo after).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm=None, rope_before_norm=True):
        super().__init__()
        assert dim % num_heads == 0, "dim must be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.rope_before_norm = rope_before_norm
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = make_qk_norm(qk_norm, self.head_dim)
        self.k_norm = make_qk_norm(qk_norm, self.head_dim)
        self.core = AttentionCore(self.head_dim)
        self.proj = Linear(dim, dim)

    def construct(self, x, rope=None, key_mask=None):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if rope is not None and self.rope_before_norm:
            q, k = rope(q), rope(k)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None and not self.rope_before_norm:
            q, k = rope(q), rope(k)
        out = self.core(q, k, v, key_mask)
        return self.proj(merge_heads(out))


class CrossAttention(nn.Cell):
    """Queries from x, keys/values from the condition; padded condition tokens are masked out
    (equivalent to the official packing of valid text tokens only)."""

    def __init__(self, dim: int, num_heads: int, qk_norm=None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_linear = Linear(dim, dim)
        self.kv_linear = Linear(dim, dim * 2)
        self.q_norm = make_qk_norm(qk_norm, self.head_dim)
        self.k_norm = make_qk_norm(qk_norm, self.head_dim)
        self.core = AttentionCore(self.head_dim)
        self.proj = Linear(dim, dim)

    def construct(self, x, cond, cond_mask=None):
        b, n, c = x.shape
        q = split_heads(self.q_linear(x), self.num_heads)
        kv = self.kv_linear(cond).reshape(b, cond.shape[1], 2, self.num_heads, self.head_dim)
        kv = kv.transpose(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = self.core(q, k, v, cond_mask)
        return self.proj(merge_heads(out))
