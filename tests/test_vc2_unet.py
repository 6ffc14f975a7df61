"""VideoCrafter2's UNet (T2V-Turbo's VC2 teacher and student): the official layouts key for key,
and its layers against float64 numpy written from the official lvdm formulas."""
import numpy as np
import pytest
from mindspore import Tensor

from conftest import layout_lines
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.videocrafter import unet as vc
from vgen.runtime import setup_device

setup_device("CPU")


@pytest.mark.parametrize("preset,layout,total", [
    ("vc2", "vc2_unet_teacher.txt", 1_413_284_420),
    ("vc2-turbo", "t2v_turbo_vc2_unet_student.txt", 1_413_366_340),  # + time_cond_proj [320, 256]
])
def test_full_unet_matches_official_layout(preset, layout, total):
    with declare_only():
        net = vc.build_vc2_unet(preset)
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == layout_lines(layout)
    assert count_params(net) == (total, 0)


def test_tiny_is_the_same_code():
    with declare_only():
        full, tiny = vc.build_vc2_unet("vc2"), vc.build_vc2_unet("tiny")
    kinds = lambda net: {n.split(".", 2)[-1] for n, _ in named_params(net) if ".temopral_conv." in n}
    assert kinds(tiny) == kinds(full)
    assert 1_000_000 < count_params(tiny)[0] < 5_000_000


# ---- float64 references ----------------------------------------------------------------------------

def weights(cell, seed=0):
    """Materialised with every zero-initialised weight drawn too, as float64 numpy by name."""
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


def group_norm(x, w, b, eps, groups=32):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return g.reshape(x.shape) * w.reshape(shape) + b.reshape(shape)


def layer_norm(x, w, b, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b


def silu(x):
    return x / (1 + np.exp(-x))


def conv2d(x, w, b, pad):
    """[N, C, H, W] * [O, C, k, k], stride 1."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h, wd = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out + b[None, :, None, None]


def time_conv(x, w, b):
    """[B, C, T, H, W] * [O, C, 3, 1, 1], padding (1, 0, 0)."""
    t = x.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)))
    return sum(np.einsum("bcthw,oc->bothw", xp[:, :, k:k + t], w[:, :, k, 0, 0]) for k in range(3)) \
        + b[None, :, None, None, None]


def attention(x, context, p, heads):
    q, k, v = x @ p["to_q.weight"].T, context @ p["to_k.weight"].T, context @ p["to_v.weight"].T
    split = lambda a: a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(0, 2, 1, 3)
    q, k, v = split(q), split(k), split(v)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
    return o @ p["to_out.0.weight"].T + p["to_out.0.bias"]


def gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def sub(p, prefix):
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def transformer_block(x, context, p, heads):
    x = attention(layer_norm(x, p["norm1.weight"], p["norm1.bias"]), layer_norm(x, p["norm1.weight"], p["norm1.bias"]),
                  sub(p, "attn1."), heads) + x
    h = layer_norm(x, p["norm2.weight"], p["norm2.bias"])
    x = attention(h, h if context is None else context, sub(p, "attn2."), heads) + x
    h = layer_norm(x, p["norm3.weight"], p["norm3.bias"]) @ p["ff.net.0.proj.weight"].T + p["ff.net.0.proj.bias"]
    value, gate = np.split(h, 2, -1)
    return (value * gelu(gate)) @ p["ff.net.2.weight"].T + p["ff.net.2.bias"] + x


def test_resblock_with_temporal_conv_is_lvdm_formula():
    with declare_only():
        block = vc.ResBlock(32, 48, 64)
    p = weights(block)
    rng = np.random.default_rng(3)
    b, t, frames = 2, 3, rng.standard_normal((6, 32, 5, 4))
    emb = rng.standard_normal((6, 48))
    got = block(Tensor(frames.astype(np.float32)), Tensor(emb.astype(np.float32)), None, t).asnumpy()

    h = conv2d(silu(group_norm(frames, p["in_layers.0.weight"], p["in_layers.0.bias"], 1e-5)),
               p["in_layers.2.weight"], p["in_layers.2.bias"], 1)
    h = h + (silu(emb) @ p["emb_layers.1.weight"].T + p["emb_layers.1.bias"])[:, :, None, None]
    h = conv2d(silu(group_norm(h, p["out_layers.0.weight"], p["out_layers.0.bias"], 1e-5)),
               p["out_layers.3.weight"], p["out_layers.3.bias"], 1)
    h = conv2d(frames, p["skip_connection.weight"], p["skip_connection.bias"], 0) + h
    video = h.reshape(b, t, 64, 5, 4).transpose(0, 2, 1, 3, 4)
    y = video
    for i, seq in ((1, 2), (2, 3), (3, 3), (4, 3)):
        c = f"temopral_conv.conv{i}."
        y = time_conv(silu(group_norm(y, p[c + "0.weight"], p[c + "0.bias"], 1e-5)), p[f"{c}{seq}.weight"],
                      p[f"{c}{seq}.bias"])
    want = (video + y).transpose(0, 2, 1, 3, 4).reshape(6, 64, 5, 4)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("linear", [True, False])  # the level transformers / init_attn's 1x1 Conv1d
def test_temporal_transformer_attends_over_each_pixels_frames(linear):
    with declare_only():
        layer = vc.TemporalTransformer(32, 2, 16, linear=linear)
    p = weights(layer)
    rng = np.random.default_rng(4)
    b, t = 2, 3
    frames = rng.standard_normal((b * t, 32, 2, 3))
    got = layer(Tensor(frames.astype(np.float32)), None, None, t).asnumpy()

    video = frames.reshape(b, t, 32, 2, 3).transpose(0, 2, 1, 3, 4)
    h = group_norm(video, p["norm.weight"], p["norm.bias"], 1e-6)  # over the whole clip
    tokens = h.transpose(0, 3, 4, 2, 1).reshape(b * 6, t, 32)
    w_in, w_out = p["proj_in.weight"], p["proj_out.weight"]
    w_in, w_out = (w_in, w_out) if linear else (w_in[:, :, 0], w_out[:, :, 0])
    tokens = tokens @ w_in.T + p["proj_in.bias"]
    tokens = transformer_block(tokens, None, sub(p, "transformer_blocks.0."), 2)  # attn2: self-attention too
    out = (tokens @ w_out.T + p["proj_out.bias"]).reshape(b, 2, 3, t, 32).transpose(0, 3, 4, 1, 2)
    np.testing.assert_allclose(got, out.reshape(b * t, 32, 2, 3) + frames, rtol=2e-4, atol=2e-4)


def test_spatial_transformer_attends_to_the_text_per_frame():
    with declare_only():
        layer = vc.SpatialTransformer(32, 2, 16, context_dim=24)
    p = weights(layer)
    rng = np.random.default_rng(5)
    frames, context = rng.standard_normal((4, 32, 3, 2)), rng.standard_normal((4, 7, 24))
    got = layer(Tensor(frames.astype(np.float32)), None, Tensor(context.astype(np.float32)), 2).asnumpy()

    tokens = group_norm(frames, p["norm.weight"], p["norm.bias"], 1e-6).reshape(4, 32, 6).transpose(0, 2, 1)
    tokens = tokens @ p["proj_in.weight"].T + p["proj_in.bias"]
    tokens = transformer_block(tokens, context, sub(p, "transformer_blocks.0."), 2)
    out = (tokens @ p["proj_out.weight"].T + p["proj_out.bias"]).transpose(0, 2, 1).reshape(4, 32, 3, 2)
    np.testing.assert_allclose(got, out + frames, rtol=2e-4, atol=2e-4)


def test_time_embedding_is_cos_first_and_adds_fps_and_the_embedded_guidance():
    with declare_only():
        net = vc.build_vc2_unet("tiny", time_cond_proj_dim=8)
    p = weights(net)
    t, fps, w = np.array([3.0, 700.0]), np.array([16.0, 8.0]), np.array([5.5, 14.0])
    got = net.embed(Tensor(t.astype(np.float32)), Tensor(fps.astype(np.float32)), Tensor(w.astype(np.float32))).asnumpy()

    def sinusoid(x, dim=32):
        freqs = np.exp(-np.log(10000) * np.arange(dim // 2) / (dim // 2))
        return np.concatenate([np.cos(x[:, None] * freqs), np.sin(x[:, None] * freqs)], -1)

    def mlp(x, name):
        return silu(x @ p[f"{name}.0.weight"].T + p[f"{name}.0.bias"]) @ p[f"{name}.2.weight"].T + p[f"{name}.2.bias"]

    # T2V-Turbo's guidance_scale_embedding(w, 8): sin first, frequencies over half - 1
    args = 1000 * w[:, None] * np.exp(-np.log(10000.0) * np.arange(4) / 3)
    cond = np.concatenate([np.sin(args), np.cos(args)], -1)
    want = mlp(sinusoid(t) + cond @ p["time_cond_proj.weight"].T, "time_embed") + mlp(sinusoid(fps), "fps_embedding")
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


@pytest.mark.slow
def test_tiny_unet_runs_compiled_as_in_pynative():
    import mindspore as ms

    with declare_only():
        net = vc.build_vc2_unet("tiny")
    weights(net)
    rng = np.random.default_rng(7)
    args = (Tensor(rng.standard_normal((1, 4, 2, 16, 16)).astype(np.float32)), Tensor(np.float32([500.0])),
            Tensor(rng.standard_normal((1, 5, 32)).astype(np.float32)), Tensor(np.float32([16.0])))
    eager = net(*args).asnumpy()

    @ms.jit
    def compiled(*a):
        return net(*a)

    out = compiled(*args).asnumpy()
    assert out.shape == (1, 4, 2, 16, 16) and np.abs(eager).mean() > 1e-3
    np.testing.assert_allclose(out, eager, rtol=1e-4, atol=1e-4)
