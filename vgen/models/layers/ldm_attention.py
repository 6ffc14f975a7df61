"""The attention and feed-forward of latent-diffusion UNets, with the names lvdm (VideoCrafter)
and diffusers share: `to_q`, `to_k`, `to_v` (no bias), `to_out.0`; a GEGLU feed-forward
`net.0.proj` (value half first, then the gate) -> `net.2`. Tokens [B, N, C]."""
from mindspore import nn, ops

from .attention import AttentionCore, merge_heads, split_heads
from .init import zeros
from .linear import Linear, torch_default_linear


class CrossAttention(nn.Cell):
    """Multi-head attention of x to `context` (to itself when context is None), scale d^-0.5."""

    def __init__(self, query_dim: int, context_dim: int = None, heads: int = 8, dim_head: int = 64):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = torch_default_linear(query_dim, inner, bias=False)
        self.to_k = torch_default_linear(context_dim, inner, bias=False)
        self.to_v = torch_default_linear(context_dim, inner, bias=False)
        self.to_out = nn.CellList([torch_default_linear(inner, query_dim)])  # .1 is a parameterless Dropout
        self.core = AttentionCore(dim_head)

    def construct(self, x, context=None):
        context = x if context is None else context
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(context), self.heads)
        return self.to_out[0](merge_heads(self.core(q, k, v)))


class GEGLU(nn.Cell):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = torch_default_linear(dim_in, dim_out * 2)

    def construct(self, x):
        value, gate = ops.chunk(self.proj(x), 2, -1)
        return value * ops.gelu(gate, approximate="none")


class FeedForward(nn.Cell):
    """GEGLU(dim -> mult * dim) -> Linear back (`net.0.proj`, `net.2`; .1 is a parameterless Dropout)."""

    def __init__(self, dim: int, mult: int = 4, dim_out: int = None):
        super().__init__()
        inner = dim * mult
        self.net = nn.CellList([GEGLU(dim, inner), nn.Identity(), torch_default_linear(inner, dim_out or dim)])

    def construct(self, x):
        return self.net[2](self.net[0](x))


def zero_linear(dim_in: int, dim_out: int, bias: bool = True) -> Linear:
    """A Linear whose weights start at zero (the official zero_module)."""
    return Linear(dim_in, dim_out, bias, init=zeros)
