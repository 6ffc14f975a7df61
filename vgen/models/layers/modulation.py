"""adaLN-single modulation (PixArt) shared by the OpenSora DiTs."""
from mindspore import nn

from .init import new_param, normal, zeros
from .linear import Linear
from .norms import LayerNorm


def t2i_modulate(x, shift, scale):
    return x * (1 + scale) + shift


def split_rows(table, n: int):
    """[B, n, C] -> n tensors [B, 1, C] (slicing: the split kernels are missing on CPU under jit)."""
    return tuple(table[:, i:i + 1] for i in range(n))


class T2IFinalLayer(nn.Cell):
    """PixArt's final layer: LayerNorm (no affine) modulated by `scale_shift_table` + t, then Linear."""

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size, 1e-6, affine=False)
        self.linear = Linear(hidden_size, num_patch * out_channels, init=zeros)
        self.scale_shift_table = new_param((2, hidden_size), normal(hidden_size ** -0.5))

    def construct(self, x, t):
        shift, scale = split_rows(self.scale_shift_table[None] + t[:, None], 2)
        return self.linear(t2i_modulate(self.norm_final(x), shift, scale))
