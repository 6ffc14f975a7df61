"""Parameters that are declared first and filled later.

Models are always built under ``no_init_parameters()``: every parameter is declared with its shape
and an init rule but holds no memory, so even 30B models build (and ``vgen-inspect``) in seconds.
``materialize`` then fills each parameter from a generator keyed by (seed, parameter name): the
same weights on every rank and for every worker count, with no broadcast.
"""
import contextlib
import math
import zlib
from typing import Callable, Iterator, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn
from mindspore.common.initializer import initializer

InitFn = Callable[[Tuple[int, ...], np.random.Generator], np.ndarray]


# ---- init rules: (shape, rng) -> float32 array ----------------------------------------------

def zeros(shape, rng):
    return np.zeros(shape, np.float32)


def ones(shape, rng):
    return np.ones(shape, np.float32)


def normal(std: float) -> InitFn:
    return lambda shape, rng: (rng.standard_normal(shape, dtype=np.float32) * std)


def xavier_uniform(fan_in: Optional[int] = None, fan_out: Optional[int] = None) -> InitFn:
    """Glorot uniform; fans default to a Linear weight [out, in] (a conv weight flattened to 2-D)."""

    def fn(shape, rng):
        fo = fan_out if fan_out is not None else shape[0]
        fi = fan_in if fan_in is not None else int(np.prod(shape[1:]))
        a = math.sqrt(6.0 / (fi + fo))
        return rng.uniform(-a, a, size=shape).astype(np.float32)

    return fn


def uniform_fan_in(fan_in: int) -> InitFn:
    """PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return lambda shape, rng: rng.uniform(-bound, bound, size=shape).astype(np.float32)


def constant(array_fn: Callable[[], np.ndarray]) -> InitFn:
    """A fixed value computed on demand (sin-cos tables, frequency vectors)."""
    return lambda shape, rng: np.asarray(array_fn(), np.float32).reshape(shape)


# ---- declaration and materialisation --------------------------------------------------------

def new_param(shape, init: InitFn, *, buffer: bool = False, derived: bool = False,
              requires_grad: bool = True) -> Parameter:
    """Declare a parameter (or a persistent buffer) without allocating it.

    Buffers are state-dict entries that are not trained (the official ``register_buffer``s):
    they are listed by ``vgen-inspect`` but not counted in ``total_params``. Derived buffers
    (sin-cos tables) are recomputed from the config and never loaded from weights, as the
    official loaders drop them.
    """
    buffer = buffer or derived
    p = Parameter(initializer("zeros", tuple(shape), ms.float32), requires_grad=requires_grad and not buffer)
    p.init_fn = init
    p.is_buffer = buffer
    p.is_derived = derived
    return p


def is_buffer(p: Parameter) -> bool:
    return bool(getattr(p, "is_buffer", False))


def is_derived(p: Parameter) -> bool:
    return bool(getattr(p, "is_derived", False))


@contextlib.contextmanager
def declare_only():
    """Build Cells whose parameters are declared but not allocated."""
    from mindspore.nn.utils import no_init_parameters

    with no_init_parameters():
        yield


def param_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])


def init_value(p: Parameter, name: str, seed: int) -> np.ndarray:
    """The initial value of one parameter, as float32 numpy."""
    fn = getattr(p, "init_fn", None)
    if fn is None:
        raise TypeError(f"parameter {name} was not declared with new_param(); it has no init rule")
    arr = fn(tuple(p.shape), param_rng(seed, name))
    if tuple(arr.shape) != tuple(p.shape):
        raise ValueError(f"init rule of {name} produced {arr.shape}, expected {tuple(p.shape)}")
    return arr


def named_params(net: nn.Cell) -> Iterator[Tuple[str, Parameter]]:
    """(name, parameter) in state-dict order, buffers included."""
    yield from net.parameters_and_names()


def materialize(net: nn.Cell, seed: int, dtype=ms.float32, keep_fp32: Callable[[str], bool] = lambda n: False):
    """Fill every declared parameter with its initial value in `dtype` (fp32 where keep_fp32)."""
    for name, p in named_params(net):
        arr = init_value(p, name, seed)
        target = ms.float32 if (keep_fp32(name) or is_buffer(p)) else dtype
        p.set_data(Tensor(arr).astype(target) if target != ms.float32 else Tensor(arr))
    return net


def count_params(net: nn.Cell) -> Tuple[int, int]:
    """(trainable-parameter elements, buffer elements) of a declared or built net."""
    n_param = n_buf = 0
    for _, p in named_params(net):
        size = int(np.prod(p.shape)) if len(p.shape) else 1
        if is_buffer(p):
            n_buf += size
        else:
            n_param += size
    return n_param, n_buf
