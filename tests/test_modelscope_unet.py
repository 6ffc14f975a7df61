"""ModelScope's UNet3DConditionModel (T2V-Turbo's MS teacher and student): the official layouts key
for key, and its layers against float64 numpy written from the diffusers formulas (ResnetBlock2D,
TemporalConvLayer, Downsample2D, Transformer2DModel, TransformerTemporalModel, TimestepEmbedding)."""
import re

import numpy as np
import pytest

from conftest import layout_lines
from unet_reference import (attention, conv2d, f32, gelu, group_norm, layer_norm, linear, silu, sub,
                            temporal_conv_layer, weights)
from vgen.models.layers.init import count_params, declare_only, named_params
from vgen.models.modelscope import unet3d as msu
from vgen.runtime import setup_device

setup_device("CPU")
TOL = dict(rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("preset,layout,total", [
    ("ms-1.7b", "modelscope_t2v_1.7b_unet3d_teacher.txt", 1_411_233_860),
    ("ms-1.7b-turbo", "t2v_turbo_ms_unet3d_student.txt", 1_411_315_780),  # + time_embedding.cond_proj [320, 256]
])
def test_full_unet_matches_official_layout(preset, layout, total):
    with declare_only():
        net = msu.build_ms_unet3d(preset)
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == layout_lines(layout)
    assert count_params(net) == (total, 0)


def test_tiny_is_the_same_code():
    with declare_only():
        full, tiny = msu.build_ms_unet3d("ms-1.7b"), msu.build_ms_unet3d("tiny")
    kinds = lambda net: {re.sub(r"\.\d+\.", ".N.", n) for n, _ in named_params(net)}
    assert kinds(tiny) == kinds(full)
    assert 1_000_000 < count_params(tiny)[0] < 5_000_000


# ---- float64 references (unet_reference.py) and the diffusers blocks ------------------------------

def basic_transformer_block(x, context, p, heads):
    """BasicTransformerBlock(norm_type="layer_norm"); context None: attn2 attends to x too."""
    n = layer_norm(x, sub(p, "norm1."))
    x = attention(n, n, sub(p, "attn1."), heads) + x
    n = layer_norm(x, sub(p, "norm2."))
    x = attention(n, n if context is None else context, sub(p, "attn2."), heads) + x
    hidden, gate = np.split(linear(layer_norm(x, sub(p, "norm3.")), sub(p, "ff.net.0.proj.")), 2, -1)
    return linear(hidden * gelu(gate), sub(p, "ff.net.2.")) + x


def resnet_block_2d(x, temb, p):
    h = conv2d(silu(group_norm(x, p["norm1.weight"], p["norm1.bias"], 1e-5)), sub(p, "conv1."), 1)
    h = h + linear(silu(temb), sub(p, "time_emb_proj."))[:, :, None, None]
    h = conv2d(silu(group_norm(h, p["norm2.weight"], p["norm2.bias"], 1e-5)), sub(p, "conv2."), 1)
    short = conv2d(x, sub(p, "conv_shortcut."), 0) if "conv_shortcut.weight" in p else x
    return short + h




@pytest.mark.parametrize("frames", [3, 1])  # one frame: the official forward skips the temporal conv
def test_resnet_temporal_conv_and_downsample_are_diffusers_formulas(frames):
    with declare_only():
        block = msu.DownBlock3D(32, 64, 48, layers=1, attention=False, downsample=True, head_dim=16,
                                cross_attention_dim=None, groups=32, eps=1e-5)
    p = weights(block)
    rng = np.random.default_rng(3)
    x, temb = rng.standard_normal((2 * frames, 32, 6, 4)), rng.standard_normal((2 * frames, 48))
    got, states = block(f32(x), f32(temb), None, frames)

    h = resnet_block_2d(x, temb, sub(p, "resnets.0."))
    if frames > 1:
        h = temporal_conv_layer(h, sub(p, "temp_convs.0."), frames)
    down = conv2d(h, sub(p, "downsamplers.0.conv."), 1, stride=2)  # padding 1: no extra pad
    np.testing.assert_allclose(states[0].asnumpy(), h, **TOL)
    np.testing.assert_allclose(got.asnumpy(), down, **TOL)
    np.testing.assert_allclose(states[1].asnumpy(), down, **TOL)


def test_transformer_2d_is_linear_projection_per_frame():
    with declare_only():
        layer = msu.Transformer2D(32, 2, 16, cross_attention_dim=24)
    p = weights(layer)
    rng = np.random.default_rng(5)
    x, context = rng.standard_normal((4, 32, 3, 2)), rng.standard_normal((4, 7, 24))
    got = layer(f32(x), f32(context)).asnumpy()

    # Transformer2DModel, use_linear_projection: norm, permute(0, 2, 3, 1), proj_in, blocks, proj_out
    tokens = group_norm(x, p["norm.weight"], p["norm.bias"], 1e-6).transpose(0, 2, 3, 1).reshape(4, 6, 32)
    tokens = basic_transformer_block(linear(tokens, sub(p, "proj_in.")), context, sub(p, "transformer_blocks.0."), 2)
    out = linear(tokens, sub(p, "proj_out.")).reshape(4, 3, 2, 32).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, out + x, **TOL)


def test_transformer_temporal_attends_over_each_pixels_frames():
    with declare_only():
        layer = msu.TransformerTemporal(32, 4, 16)  # inner 64 != channels, as transformer_in (512 vs 320)
    p = weights(layer)
    rng = np.random.default_rng(4)
    b, t = 2, 3
    x = rng.standard_normal((b * t, 32, 2, 3))
    got = layer(f32(x), t).asnumpy()

    # TransformerTemporalModel.forward
    h = x[None].reshape(b, t, 32, 2, 3).transpose(0, 2, 1, 3, 4)
    h = group_norm(h, p["norm.weight"], p["norm.bias"], 1e-6)  # over the whole clip
    h = h.transpose(0, 3, 4, 2, 1).reshape(b * 2 * 3, t, 32)
    h = basic_transformer_block(linear(h, sub(p, "proj_in.")), None, sub(p, "transformer_blocks.0."), 4)
    h = linear(h, sub(p, "proj_out.")).reshape(b, 2, 3, t, 32).transpose(0, 3, 4, 1, 2).reshape(b * t, 32, 2, 3)
    np.testing.assert_allclose(got, h + x, **TOL)


def test_time_embedding_is_cos_first_with_the_guidance_embedding_before_linear_1():
    with declare_only():
        net = msu.build_ms_unet3d("tiny", time_cond_proj_dim=8)
    p = weights(net)
    t, w = np.array([3.0, 700.0]), np.array([5.5, 14.0])
    got = net.embed(f32(t), f32(w)).asnumpy()
    # T2V-Turbo's guidance_scale_embedding(w, 8): sin first, frequencies over half - 1
    g = 1000 * w[:, None] * np.exp(-np.log(10000.0) * np.arange(4) / 3)
    cond = np.concatenate([np.sin(g), np.cos(g)], -1)

    # get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    half = 16
    args = t[:, None] * np.exp(-np.log(10000) * np.arange(half) / (half - 0))[None]
    emb = np.concatenate([np.sin(args), np.cos(args)], -1)
    emb = np.concatenate([emb[:, half:], emb[:, :half]], -1)
    e = sub(p, "time_embedding.")
    want = linear(silu(linear(emb + cond @ e["cond_proj.weight"].T, sub(e, "linear_1."))), sub(e, "linear_2."))
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.slow
def test_tiny_unet_runs_compiled_as_in_pynative():
    import mindspore as ms

    with declare_only():
        net = msu.build_ms_unet3d("tiny", time_cond_proj_dim=8)  # the student path
    weights(net)
    rng = np.random.default_rng(7)
    args = (f32(rng.standard_normal((1, 4, 2, 16, 16))), f32([500.0]), f32(rng.standard_normal((1, 5, 32))),
            f32([7.5]))
    eager = net(*args).asnumpy()

    @ms.jit
    def compiled(*a):
        return net(*a)

    out = compiled(*args).asnumpy()
    assert out.shape == (1, 4, 2, 16, 16) and np.abs(eager).mean() > 1e-3
    np.testing.assert_allclose(out, eager, rtol=1e-4, atol=1e-4)
