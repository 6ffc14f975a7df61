"""OpenSora 1.1 STDiT2: official layout, tiny forward, RoPE and attention order against numpy,
on-the-fly positions, frame masks (t=0 modulation) and text key masking."""
import math

import numpy as np
import pytest
from mindspore import Tensor

from conftest import layout_lines
from vgen.models.layers.attention import SelfAttention
from vgen.models.layers.embeddings import sincos_2d
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.opensora.stdit2 import RotaryEmbedding, build_stdit2, spatial_pos_embed

TINY = dict(hidden_size=96, depth=2, num_heads=4, caption_channels=256, model_max_length=16)  # 96: divisible by 3 and 4


def randomize_zero_inits(net, seed=1):
    """Zero-initialised layers (final linear, cross-attn/temporal proj, biases) would hide every
    effect we test: give them small random values."""
    rng = np.random.default_rng(seed)
    for _, p in named_params(net):
        a = p.asnumpy()
        if not a.any():
            p.set_data(Tensor(rng.standard_normal(a.shape).astype(np.float32) * 0.05))
    return net


@pytest.fixture(scope="module")
def tiny():
    return randomize_zero_inits(materialize(build_stdit2(**TINY), 0))


def inputs(b=2, t=4, h=8, w=8, seed=0):
    """b copies of one sample (so one forward compares variants row by row), mask 10 of 16 tokens."""
    rng = np.random.default_rng(seed)

    def same(arr):
        return np.repeat(arr[None], b, axis=0)

    return dict(
        x=same(rng.standard_normal((4, t, h, w)).astype(np.float32)),
        timestep=np.full((b,), 500, np.int32),
        y=same(rng.standard_normal((1, 16, 256)).astype(np.float32)),
        mask=same(np.array([1] * 10 + [0] * 6, np.int32)),
        drop=None, x_mask=None,
        height=np.full((b,), h * 8.0, np.float32),
        width=np.full((b,), w * 8.0, np.float32),
        fps=np.full((b,), 24.0, np.float32),
    )


def run(net, args):
    keys = ("x", "timestep", "y", "mask", "drop", "x_mask", "height", "width", "fps")
    return net(*(None if args[k] is None else Tensor(args[k]) for k in keys)).asnumpy()


def differ(a, b, tol=1e-4):
    return np.abs(a - b).max() > tol


# ---- (a) layout --------------------------------------------------------------------------------

def test_full_config_matches_official_layout():
    net = build_stdit2()
    lines = [f"{n} {list(p.shape)}" for n, p in named_params(net)]
    assert lines == layout_lines("opensora_v1_1_stdit2_xl2.txt")
    # rope.freqs is an untrained parameter (counted, as in the official count); y_embedding a buffer
    assert count_params(net) == (767_452_100, 200 * 4096)
    assert {n for n, p in named_params(net) if not p.requires_grad} == {"y_embedder.y_embedding", "rope.freqs"}


# ---- (b) tiny forward --------------------------------------------------------------------------

def test_tiny_forward_shape(tiny):
    out = run(tiny, inputs(t=4, h=16, w=16))
    assert out.shape == (2, 8, 4, 16, 16) and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_sizes_off_the_patch_grid_are_padded_and_cropped(tiny):
    out = run(tiny, inputs(b=1, t=3, h=7, w=10))
    assert out.shape == (1, 8, 3, 7, 10) and np.isfinite(out).all()


# ---- (c) RoPE and the attention order ---------------------------------------------------------

def numpy_rope(x, theta=10000.0):
    """Interleaved RoPE as complex rotation: (x[2i] + i x[2i+1]) * exp(i * pos * theta^(-2i/d))."""
    n, d = x.shape[-2], x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    rot = np.exp(1j * np.arange(n)[:, None] * freqs[None])
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * rot
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def test_rope_matches_interleaved_rotation():
    with declare_only():
        rope = RotaryEmbedding(72)
    materialize(rope, 0)
    np.testing.assert_allclose(rope.freqs.asnumpy(), 10000.0 ** (-np.arange(36) * 2 / 72), rtol=1e-6)
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 72)).astype(np.float32)
    np.testing.assert_allclose(rope(Tensor(x)).asnumpy(), numpy_rope(x.astype(np.float64)), rtol=1e-5, atol=1e-5)


def test_temporal_attention_applies_rope_before_qk_rmsnorm():
    """The official Attention: qkv as (3, heads, head_dim) -> RoPE(q), RoPE(k) -> RMSNorm(q), RMSNorm(k)."""
    dim, heads, n = 48, 2, 5
    with declare_only():
        attn = SelfAttention(dim, heads, qkv_bias=True, qk_norm="rms", rope_before_norm=True)
        rope = RotaryEmbedding(dim // heads)
    materialize(attn, 3)
    materialize(rope, 0)
    rng = np.random.default_rng(4)
    attn.q_norm.weight.set_data(Tensor(rng.uniform(0.5, 1.5, dim // heads).astype(np.float32)))
    attn.k_norm.weight.set_data(Tensor(rng.uniform(0.5, 1.5, dim // heads).astype(np.float32)))
    x = rng.standard_normal((3, n, dim)).astype(np.float32)

    p = {name: prm.asnumpy().astype(np.float64) for name, prm in named_params(attn)}
    qkv = (x @ p["qkv.weight"].T + p["qkv.bias"]).reshape(3, n, 3, heads, dim // heads).transpose(2, 0, 3, 1, 4)
    q, k, v = numpy_rope(qkv[0]), numpy_rope(qkv[1]), qkv[2]

    def rms(a, w):
        return a / np.sqrt((a * a).mean(-1, keepdims=True) + 1e-6) * w

    q, k = rms(q, p["q_norm.weight"]), rms(k, p["k_norm.weight"])
    logits = q @ k.swapaxes(-1, -2) / math.sqrt(dim // heads)
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    ref = (att @ v).transpose(0, 2, 1, 3).reshape(3, n, dim) @ p["proj.weight"].T + p["proj.bias"]
    np.testing.assert_allclose(attn(Tensor(x), rope).asnumpy(), ref, rtol=1e-4, atol=1e-4)


# ---- on-the-fly spatial positions ---------------------------------------------------------------

def test_spatial_positions_match_the_sincos_table():
    gh, gw, height, width = 6, 10, 240.0, 426.0
    scale = math.sqrt(height * width) / 512
    base = round(math.sqrt(gh * gw))
    got = spatial_pos_embed(96, (gh, gw), Tensor(np.float32(scale)), base).asnumpy()
    np.testing.assert_allclose(got, sincos_2d(96, (gh, gw), scale=scale, base_size=base), atol=2e-5)


# ---- (d) frame masks ---------------------------------------------------------------------------

def block_inputs(b=2, t=4, s=16, c=96, seed=5):
    rng = np.random.default_rng(seed)

    def r(*shape):
        return Tensor(rng.standard_normal(shape).astype(np.float32))

    return dict(x=r(b, t * s, c), y=r(b, 16, c), t_spc=r(b, 6 * c), t_tmp=r(b, 3 * c), t0_spc=r(b, 6 * c),
                t0_tmp=r(b, 3 * c), mask=Tensor(np.array([[1] * 10 + [0] * 6, [1] * 16][:b], np.int32)))


def test_conditioning_frames_are_modulated_with_t0_in_the_blocks(tiny):
    """Every block: frames with x_mask False take the t=0 rows, whatever the sample's timestep rows."""
    block, a, t = tiny.blocks[0], block_inputs(), 4
    cond_only = Tensor(np.zeros((2, t), bool))
    other = block_inputs(seed=6)
    masked = block(a["x"], a["y"], a["t_spc"], a["t_tmp"], a["mask"], t, tiny.rope, cond_only, a["t0_spc"],
                   a["t0_tmp"]).asnumpy()
    masked_other_t = block(a["x"], a["y"], other["t_spc"], other["t_tmp"], a["mask"], t, tiny.rope, cond_only,
                           a["t0_spc"], a["t0_tmp"]).asnumpy()
    as_t0 = block(a["x"], a["y"], a["t0_spc"], a["t0_tmp"], a["mask"], t, tiny.rope).asnumpy()
    np.testing.assert_allclose(masked, masked_other_t, rtol=0, atol=1e-6)
    np.testing.assert_allclose(masked, as_t0, rtol=0, atol=1e-6)
    noised = block(a["x"], a["y"], a["t_spc"], a["t_tmp"], a["mask"], t, tiny.rope).asnumpy()
    assert np.abs(masked - noised).max() > 1e-3


def numpy_layer_norm(x):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)


def test_final_layer_conditioning_frames_as_official(tiny):
    """The official T2IFinalLayer modulates conditioning frames with t0 AFTER the t branch:
    linear(mod_t0(LN(mod_t(LN(x))))) (so they still see t), trained frames linear(mod_t(LN(x)))."""
    layer, t_frames, s, c = tiny.final_layer, 4, 16, 96
    rng = np.random.default_rng(8)
    x, t, t0 = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, t_frames * s, c), (2, c), (2, c)))
    frame_mask = np.array([[False, True, True, False], [True] * 4])
    got = layer(Tensor(x), Tensor(t), Tensor(frame_mask), Tensor(t0), t_frames).asnumpy()

    table = layer.scale_shift_table.asnumpy().astype(np.float64)
    w, bias = layer.linear.weight.asnumpy().astype(np.float64), layer.linear.bias.asnumpy().astype(np.float64)

    def modulate(v, temb):
        shift, scale = table[0] + temb[:, None], table[1] + temb[:, None]
        return numpy_layer_norm(v) * (1 + scale) + shift

    x_t = modulate(x.astype(np.float64), t.astype(np.float64))
    x_0 = modulate(x_t, t0.astype(np.float64))
    keep = np.repeat(frame_mask, s, axis=1)[..., None]
    ref = np.where(keep, x_t, x_0) @ w.T + bias
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer(Tensor(x), Tensor(t)).asnumpy(), x_t @ w.T + bias, rtol=1e-4, atol=1e-4)


def test_all_noised_frames_follow_the_timestep_and_equal_no_mask(tiny):
    args = inputs()
    args["timestep"] = np.array([10, 900], np.int32)
    no_mask = run(tiny, args)
    all_noised = run(tiny, {**args, "x_mask": np.ones((2, 4), bool)})
    np.testing.assert_allclose(all_noised, no_mask, rtol=0, atol=1e-6)
    assert differ(all_noised[0], all_noised[1], 1e-3)


def test_a_conditioning_frame_changes_the_output(tiny):
    args = {**inputs(), "x_mask": np.array([[False, True, True, True], [True] * 4])}
    out = run(tiny, args)
    assert differ(out[0], out[1], 1e-3)


# ---- (e) text key mask and caption dropout -----------------------------------------------------

def test_padded_text_tokens_are_ignored(tiny):
    args = inputs(b=3)
    rng = np.random.default_rng(7)
    args["y"][1, :, 10:] = rng.standard_normal(args["y"][1, :, 10:].shape)  # mask 0 there
    args["y"][2, :, 3] += 1.0  # a valid token
    out = run(tiny, args)
    np.testing.assert_allclose(out[1], out[0], rtol=0, atol=1e-6)
    assert differ(out[2], out[0])


def test_dropped_captions_ignore_the_text(tiny):
    args = {**inputs(), "drop": np.array([True, True])}
    args["y"][1] = np.random.default_rng(9).standard_normal(args["y"][1].shape)
    out = run(tiny, args)
    np.testing.assert_allclose(out[1], out[0], rtol=0, atol=1e-6)


# ---- size conditioning --------------------------------------------------------------------------

def test_size_embedder_embeds_each_scalar_separately(tiny):
    hw = Tensor(np.array([[144.0, 256.0], [240.0, 426.0]], np.float32))
    both = tiny.csize_embedder(hw).asnumpy()
    k = tiny.hidden_size // 3
    np.testing.assert_allclose(both[:, :k], tiny.csize_embedder(hw[:, :1]).asnumpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(both[:, k:], tiny.csize_embedder(hw[:, 1:]).asnumpy(), rtol=1e-6, atol=1e-6)


def test_fps_frames_and_size_condition_the_output(tiny):
    args = inputs(b=3)
    args["fps"][1] = 8.0
    args["height"][2] = 48.0  # csize and ar only: the position scale is taken from sample 0
    out = run(tiny, args)
    assert differ(out[1], out[0]) and differ(out[2], out[0])
