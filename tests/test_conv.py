"""The shared convolutions against a direct numpy convolution, on both CPU paths."""
import numpy as np
import pytest
from mindspore import Tensor

import vgen.models.layers.conv as conv_layers
from vgen.models.layers.conv import Conv2d, Conv3d
from vgen.models.layers.init import declare_only, materialize


def reference(x, w, b, stride, padding):
    nd = w.ndim - 2
    xp = np.pad(x, ((0, 0), (0, 0)) + ((padding, padding),) * nd)
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]
    letters = "thw"[-nd:]
    ks = "ijk"[:nd]
    out = np.einsum(f"bc{letters}{ks},oc{ks}->bo{letters}", win, w)
    return out + b.reshape((1, -1) + (1,) * nd)


@pytest.mark.parametrize("cls,shape,k,stride,padding", [
    (Conv2d, (2, 3, 9, 11), 3, (1, 1), 1), (Conv2d, (2, 3, 9, 11), 3, (2, 2), 0), (Conv2d, (1, 4, 6, 6), 1, (1, 1), 0),
    (Conv3d, (1, 3, 5, 7, 6), 3, (1, 1, 1), 1), (Conv3d, (1, 3, 5, 7, 6), 3, (2, 2, 2), 0),
])
@pytest.mark.parametrize("matmul", [False, True])
def test_conv_matches_numpy(cls, shape, k, stride, padding, matmul, monkeypatch):
    monkeypatch.setattr(conv_layers, "MATMUL_CONV_MIN_MACS", 0 if matmul else 10 ** 18)
    with declare_only():
        conv = cls(shape[1], 5, k, stride, padding)
    materialize(conv, seed=1)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = conv(Tensor(x)).asnumpy()
    ref = reference(x.astype(np.float64), conv.weight.asnumpy().astype(np.float64),
                    conv.bias.asnumpy().astype(np.float64), stride, padding)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=2e-5)
