"""Linear layers and MLPs with PyTorch's parameter names (`weight` [out, in], `bias`)."""
from mindspore import nn, ops

from .init import InitFn, new_param, uniform_fan_in, xavier_uniform, zeros
from .sharding import ShardableLayer


class Linear(ShardableLayer):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: InitFn = None, bias_init: InitFn = zeros):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = new_param((out_features, in_features), init or xavier_uniform())
        self.bias = new_param((out_features,), bias_init) if bias else None

    def construct(self, x):
        return ops.dense(x, self.read("weight", self.weight), self.read("bias", self.bias))


def torch_default_linear(in_features: int, out_features: int, bias: bool = True) -> Linear:
    """A Linear initialised as PyTorch's nn.Linear is (for layers the official code leaves at default)."""
    return Linear(in_features, out_features, bias, init=uniform_fan_in(in_features),
                  bias_init=uniform_fan_in(in_features))


class GELUTanh(nn.Cell):
    def construct(self, x):
        return ops.gelu(x, approximate="tanh")


class SiLU(nn.Cell):
    def construct(self, x):
        return ops.silu(x)


class Mlp(nn.Cell):
    """timm's Mlp: fc1 -> act -> fc2 (names `fc1`, `fc2`)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int = None, act: nn.Cell = None,
                 bias: bool = True):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features, bias)
        self.act = act if act is not None else GELUTanh()
        self.fc2 = Linear(hidden_features, out_features or in_features, bias)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))
