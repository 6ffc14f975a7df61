"""Float64 numpy references of the latent-diffusion UNets' layers, written from the official
lvdm / diffusers formulas (test_vc2_unet.py, test_modelscope_unet.py). Weights as {name: array}."""
import numpy as np
from mindspore import Tensor

from vgen.models.layers.init import materialize, named_params

def weights(cell, seed=0):
    """Materialised with every zero- or one-initialised weight drawn too, as float64 numpy by name."""
    materialize(cell, seed)
    rng = np.random.default_rng(seed + 1)
    out = {}
    for n, q in named_params(cell):
        value = q.asnumpy()
        if not value.any() or (value == 1).all():
            value = (rng.standard_normal(q.shape) * 0.2 + (1.0 if (value == 1).all() else 0.0)).astype(np.float32)
            q.set_data(Tensor(value))
        out[n] = value.astype(np.float64)
    return out


def f32(a):
    return Tensor(np.asarray(a, np.float32))


def sub(p, prefix):
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def group_norm(x, w, b, eps, groups=32):
    g = x.reshape(x.shape[0], groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return g.reshape(x.shape) * w.reshape(shape) + b.reshape(shape)


def layer_norm(x, p, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * p["weight"] + p["bias"]


def silu(x):
    return x / (1 + np.exp(-x))


def gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def linear(x, p):
    return x @ p["weight"].T + (p["bias"] if "bias" in p else 0)


def conv2d(x, p, pad, stride=1):
    """torch.nn.Conv2d on [N, C, H, W], symmetric zero padding."""
    w, k = p["weight"], p["weight"].shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h, wd = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            win = xp[:, :, i:i + stride * (h - 1) + 1:stride, j:j + stride * (wd - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", win, w[:, :, i, j])
    return out + p["bias"][None, :, None, None]


def conv3d_time(x, p):
    """torch.nn.Conv3d(kernel (3, 1, 1), padding (1, 0, 0)) on [B, C, T, H, W]."""
    t, w = x.shape[2], p["weight"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)))
    return sum(np.einsum("bcthw,oc->bothw", xp[:, :, k:k + t], w[:, :, k, 0, 0]) for k in range(3)) \
        + p["bias"][None, :, None, None, None]


def attention(x, context, p, heads):
    """diffusers Attention (AttnProcessor2_0): softmax(q k^T / sqrt(d)) v, to_out.0."""
    q, k, v = x @ p["to_q.weight"].T, context @ p["to_k.weight"].T, context @ p["to_v.weight"].T
    split = lambda a: a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(0, 2, 1, 3)
    q, k, v = split(q), split(k), split(v)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
    return linear(o, sub(p, "to_out.0."))


def temporal_conv_layer(x, p, frames):
    """TemporalConvLayer.forward: frames [(B T), C, H, W] -> video, conv1..conv4, + identity, back."""
    bt, c, h, w = x.shape
    video = x.reshape(bt // frames, frames, c, h, w).transpose(0, 2, 1, 3, 4)
    y = video
    for i, conv in ((1, 2), (2, 3), (3, 3), (4, 3)):  # conv2..4 hold a Dropout at index 2
        y = silu(group_norm(y, p[f"conv{i}.0.weight"], p[f"conv{i}.0.bias"], 1e-5))
        y = conv3d_time(y, sub(p, f"conv{i}.{conv}."))
    return (video + y).transpose(0, 2, 1, 3, 4).reshape(bt, c, h, w)
