"""VideoCrafter2's UNet (T2V-Turbo's VC2 teacher and student): the official layouts key for key,
and its layers against float64 numpy written from the official lvdm formulas."""
import numpy as np
import pytest
from mindspore import Tensor

from conftest import layout_lines
from unet_reference import attention, conv2d, gelu, group_norm, layer_norm, linear, silu, sub, temporal_conv_layer, weights
from vgen.models.layers.init import count_params, declare_only, named_params
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


# ---- the lvdm blocks over the float64 references of unet_reference.py ----------------------------

def transformer_block(x, context, p, heads):
    """lvdm's BasicTransformerBlock: attn1, attn2 (to the context, or to x when None), GEGLU ff."""
    h = layer_norm(x, sub(p, "norm1."))
    x = attention(h, h, sub(p, "attn1."), heads) + x
    h = layer_norm(x, sub(p, "norm2."))
    x = attention(h, h if context is None else context, sub(p, "attn2."), heads) + x
    value, gate = np.split(linear(layer_norm(x, sub(p, "norm3.")), sub(p, "ff.net.0.proj.")), 2, -1)
    return linear(value * gelu(gate), sub(p, "ff.net.2.")) + x


def test_resblock_with_temporal_conv_is_lvdm_formula():
    with declare_only():
        block = vc.ResBlock(32, 48, 64)
    p = weights(block)
    rng = np.random.default_rng(3)
    t, frames = 3, rng.standard_normal((6, 32, 5, 4))
    emb = rng.standard_normal((6, 48))
    got = block(Tensor(frames.astype(np.float32)), Tensor(emb.astype(np.float32)), None, t).asnumpy()

    h = conv2d(silu(group_norm(frames, p["in_layers.0.weight"], p["in_layers.0.bias"], 1e-5)), sub(p, "in_layers.2."), 1)
    h = h + linear(silu(emb), sub(p, "emb_layers.1."))[:, :, None, None]
    h = conv2d(silu(group_norm(h, p["out_layers.0.weight"], p["out_layers.0.bias"], 1e-5)), sub(p, "out_layers.3."), 1)
    h = conv2d(frames, sub(p, "skip_connection."), 0) + h
    want = temporal_conv_layer(h, sub(p, "temopral_conv."), t)  # lvdm's TemporalConvBlock: ModelScope's layer
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("projections", [True, False])  # Linear (the level transformers) / init_attn's 1x1 Conv1d
def test_temporal_transformer_attends_over_each_pixels_frames(projections):
    with declare_only():
        layer = vc.TemporalTransformer(32, 2, 16, linear=projections)
    p = weights(layer)
    rng = np.random.default_rng(4)
    b, t = 2, 3
    frames = rng.standard_normal((b * t, 32, 2, 3))
    got = layer(Tensor(frames.astype(np.float32)), None, None, t).asnumpy()

    video = frames.reshape(b, t, 32, 2, 3).transpose(0, 2, 1, 3, 4)
    h = group_norm(video, p["norm.weight"], p["norm.bias"], 1e-6)  # over the whole clip
    tokens = h.transpose(0, 3, 4, 2, 1).reshape(b * 6, t, 32)
    proj_in, proj_out = sub(p, "proj_in."), sub(p, "proj_out.")
    if not projections:  # the Conv1d weights [out, in, 1]
        proj_in["weight"], proj_out["weight"] = proj_in["weight"][:, :, 0], proj_out["weight"][:, :, 0]
    tokens = linear(tokens, proj_in)
    tokens = transformer_block(tokens, None, sub(p, "transformer_blocks.0."), 2)  # attn2: self-attention too
    out = linear(tokens, proj_out).reshape(b, 2, 3, t, 32).transpose(0, 3, 4, 1, 2)
    np.testing.assert_allclose(got, out.reshape(b * t, 32, 2, 3) + frames, rtol=2e-4, atol=2e-4)


def test_spatial_transformer_attends_to_the_text_per_frame():
    with declare_only():
        layer = vc.SpatialTransformer(32, 2, 16, context_dim=24)
    p = weights(layer)
    rng = np.random.default_rng(5)
    frames, context = rng.standard_normal((4, 32, 3, 2)), rng.standard_normal((4, 7, 24))
    got = layer(Tensor(frames.astype(np.float32)), None, Tensor(context.astype(np.float32)), 2).asnumpy()

    tokens = group_norm(frames, p["norm.weight"], p["norm.bias"], 1e-6).reshape(4, 32, 6).transpose(0, 2, 1)
    tokens = linear(tokens, sub(p, "proj_in."))
    tokens = transformer_block(tokens, context, sub(p, "transformer_blocks.0."), 2)
    out = linear(tokens, sub(p, "proj_out.")).transpose(0, 2, 1).reshape(4, 32, 3, 2)
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
