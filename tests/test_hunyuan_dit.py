"""HunyuanVideo DiT: the official layout at full size (declared only), and the tiny model against an
independent float64 numpy forward written from the official formulas (hyvideo/modules/*.py)."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import layout_lines
from vgen.models.hunyuan.dit import PRESETS, build_hunyuan_dit
from vgen.models.layers.init import count_params, materialize, named_params

TINY = PRESETS["tiny"]
TEXT_LEN = 8


# ---- (a) layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("preset,layout,total", [
    ("HYVideo-T/2-cfgdistill", "hunyuanvideo_dit.txt", 12_821_012_544),
    ("HYVideo-T/2", "hunyuanvideo_dit_noguidance.txt", 12_810_782_784),
])
def test_full_model_matches_official_layout(preset, layout, total):
    net = build_hunyuan_dit(preset)
    lines = [f"{n} {list(p.shape)}" for n, p in named_params(net)]
    assert lines == layout_lines(layout)
    assert count_params(net) == (total, 0)
    assert count_params(net.double_blocks[0])[0] == 339_831_296
    assert count_params(net.single_blocks[0])[0] == 141_591_808
    assert len(net.double_blocks) == 20 and len(net.single_blocks) == 40


def test_tiny_is_the_same_code():
    def collapsed(net):
        return {".".join(p for p in n.split(".") if not p.isdigit()) for n, _ in named_params(net)}

    tiny = build_hunyuan_dit("tiny")
    assert collapsed(tiny) == collapsed(build_hunyuan_dit("HYVideo-T/2-cfgdistill"))
    assert 100_000 < count_params(tiny)[0] < 2_000_000


def test_official_zero_inits():
    """Modulations and the output layer start at zero, as the official constructors set them."""
    net = materialize(build_hunyuan_dit("tiny"), seed=0)
    zero = [n for n, p in named_params(net) if not np.any(p.asnumpy())]
    expected = {n for n, _ in named_params(net)
                if any(s in n for s in ("_mod.linear", "modulation.linear", "adaLN_modulation.1",
                                        "final_layer.linear", "img_in.proj.bias", "norm1.bias", "norm2.bias"))}
    assert set(zero) == expected


# ---- tiny model with random weights (zero-init gates would make every block the identity) -----

@pytest.fixture(scope="module")
def tiny():
    net = materialize(build_hunyuan_dit("tiny"), seed=0)
    rng = np.random.default_rng(1)
    for name, p in named_params(net):
        value = 0.1 * rng.standard_normal(p.shape)
        if "norm" in name and name.endswith("weight"):
            value += 1.0
        p.set_data(Tensor(value.astype(np.float32)))
    params = {n: p.asnumpy().astype(np.float64) for n, p in named_params(net)}
    return net, params


@pytest.fixture(scope="module")
def tiny_jit(tiny):
    """The tiny model's forward compiled once (the trainer's path); fast for repeated calls."""
    net, _ = tiny

    @ms.jit
    def forward(*args):
        return net(*args)

    return lambda inputs: forward(*[Tensor(a) for a in inputs]).asnumpy()


def make_inputs(seed=0, b=2, grid=(3, 4, 5), mask=None):
    rng = np.random.default_rng(seed)
    c = TINY["in_channels"]
    x = rng.standard_normal((b, c, grid[0], grid[1] * 2, grid[2] * 2)).astype(np.float32)
    t = np.array([500.0, 12.5][:b], np.float32)
    text = rng.standard_normal((b, TEXT_LEN, TINY["text_dim"])).astype(np.float32)
    if mask is None:
        mask = np.array([[1] * 5 + [0] * 3, [1] * 8][:b], np.int32)
    clip = rng.standard_normal((b, TINY["clip_dim"])).astype(np.float32)
    guidance = np.array([6.0, 3.5][:b], np.float32)
    return [x, t, text, mask, clip, guidance]


def run(net, inputs):
    return net(*[Tensor(a) for a in inputs]).asnumpy()


# ---- independent numpy reference (float64) ----------------------------------------------------

def lin(p, prefix, x):
    return x @ p[prefix + ".weight"].T + p[prefix + ".bias"]


def layer_norm(x, w=None, b=None, eps=1e-6):
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y if w is None else y * w + b


def rms_norm(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def timestep_sinusoid(t, dim=256, max_period=10000.0):
    """cos-first GLIDE sinusoid. Frequencies and phases t * freq in float32 as the official code
    computes them (at guidance 6 * 1000, float64 phases alone would move the output by ~1e-4)."""
    half = dim // 2
    freqs = np.exp(np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32) / np.float32(half))
    args = (np.asarray(t, np.float32)[:, None] * freqs[None]).astype(np.float64)
    return np.concatenate([np.cos(args), np.sin(args)], -1)


def rope_angles(grid, dims, theta):
    """[N, D/2] angle of every (real, imag) pair: token n = (t, h, w) row-major, the head dim split
    into per-axis blocks dims[0] | dims[1] | dims[2], pair j of an axis block turning by pos * theta^(-2j/d)."""
    rows = []
    for t in range(grid[0]):
        for h in range(grid[1]):
            for w in range(grid[2]):
                rows.append(np.concatenate([pos * theta ** (-np.arange(0, d, 2) / d)
                                            for pos, d in zip((t, h, w), dims)]))
    return np.stack(rows)


def rope_rotate(x, angles):
    """x [B, N, H, D]: pairs (x[2j], x[2j+1]) as complex numbers, multiplied by exp(i angle)."""
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * angles)[None, :, None, :]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def heads(x, h):
    """[B, N, (K H D)] -> K tensors [B, N, H, D] as the official rearrange."""
    b, n, c = x.shape
    y = x.reshape(b, n, 3, h, c // (3 * h))
    return y[:, :, 0], y[:, :, 1], y[:, :, 2]


def attention_over(q, k, v, keep):
    """Plain softmax attention of queries/keys `keep` only (others dropped); rows not kept stay NaN."""
    b, n, h, d = q.shape
    out = np.full((b, n, h, d), np.nan)
    for i in range(b):
        idx = np.flatnonzero(keep[i])
        qi, ki, vi = q[i, idx], k[i, idx], v[i, idx]  # [n', H, D]
        logits = np.einsum("qhd,khd->hqk", qi, ki) / math.sqrt(d)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        out[i, idx] = np.einsum("hqk,khd->qhd", w, vi)
    return out


def mods(p, prefix, vec, n):
    m = lin(p, prefix, silu(vec))
    return [c[:, None] for c in np.split(m, n, -1)]


def ref_refiner(p, text, mask, t, nh):
    pre = "txt_in."
    m = mask.astype(np.float64)
    avg = (text * m[..., None]).sum(1) / np.maximum(m.sum(1), 1)[:, None]
    c = lin(p, pre + "t_embedder.mlp.2", silu(lin(p, pre + "t_embedder.mlp.0", timestep_sinusoid(t))))
    c = c + lin(p, pre + "c_embedder.linear_2", silu(lin(p, pre + "c_embedder.linear_1", avg)))
    x = lin(p, pre + "input_embedder", text)
    # official pairwise mask: mask_i & mask_j with column 0 forced True
    pair = (m[:, :, None] * m[:, None, :]) > 0
    pair[:, :, 0] = True
    for i in range(TINY["refiner_depth"]):
        blk = f"{pre}individual_token_refiner.blocks.{i}."
        gate_msa, gate_mlp = mods(p, blk + "adaLN_modulation.1", c, 2)
        normed = layer_norm(x, p[blk + "norm1.weight"], p[blk + "norm1.bias"])
        q, k, v = heads(lin(p, blk + "self_attn_qkv", normed), nh)
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        logits = np.where(pair[:, None], logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        attn = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(x.shape)
        x = x + gate_msa * lin(p, blk + "self_attn_proj", attn)
        h = layer_norm(x, p[blk + "norm2.weight"], p[blk + "norm2.bias"])
        x = x + gate_mlp * lin(p, blk + "mlp.fc2", silu(lin(p, blk + "mlp.fc1", h)))
    return x


def ref_double_block(p, i, img, txt, vec, mask, angles, nh):
    """One double block with the padded text tokens DROPPED from the joint attention."""
    blk = f"double_blocks.{i}."
    im = mods(p, blk + "img_mod.linear", vec, 6)
    tm = mods(p, blk + "txt_mod.linear", vec, 6)
    iq, ik, iv = heads(lin(p, blk + "img_attn_qkv", layer_norm(img) * (1 + im[1]) + im[0]), nh)
    iq = rope_rotate(rms_norm(iq, p[blk + "img_attn_q_norm.weight"]), angles)
    ik = rope_rotate(rms_norm(ik, p[blk + "img_attn_k_norm.weight"]), angles)
    tq, tk, tv = heads(lin(p, blk + "txt_attn_qkv", layer_norm(txt) * (1 + tm[1]) + tm[0]), nh)
    tq, tk = rms_norm(tq, p[blk + "txt_attn_q_norm.weight"]), rms_norm(tk, p[blk + "txt_attn_k_norm.weight"])
    keep = np.concatenate([np.ones((img.shape[0], img.shape[1]), bool), mask > 0], 1)
    attn = attention_over(*(np.concatenate(pair, 1) for pair in ((iq, tq), (ik, tk), (iv, tv))), keep)
    attn = attn.reshape(*attn.shape[:2], -1)
    n = img.shape[1]
    img = img + im[2] * lin(p, blk + "img_attn_proj", attn[:, :n])
    img = img + im[5] * lin(p, blk + "img_mlp.fc2", gelu_tanh(lin(p, blk + "img_mlp.fc1",
                                                                     layer_norm(img) * (1 + im[4]) + im[3])))
    txt = txt + tm[2] * lin(p, blk + "txt_attn_proj", attn[:, n:])
    txt = txt + tm[5] * lin(p, blk + "txt_mlp.fc2", gelu_tanh(lin(p, blk + "txt_mlp.fc1",
                                                                     layer_norm(txt) * (1 + tm[4]) + tm[3])))
    return img, txt


def ref_single_block(p, i, x, vec, n_img, mask, angles, nh, hidden):
    blk = f"single_blocks.{i}."
    shift, scale, gate = mods(p, blk + "modulation.linear", vec, 3)
    h = lin(p, blk + "linear1", layer_norm(x) * (1 + scale) + shift)
    q, k, v = heads(h[..., :3 * hidden], nh)
    q, k = rms_norm(q, p[blk + "q_norm.weight"]), rms_norm(k, p[blk + "k_norm.weight"])
    q[:, :n_img], k[:, :n_img] = rope_rotate(q[:, :n_img], angles), rope_rotate(k[:, :n_img], angles)
    keep = np.concatenate([np.ones((x.shape[0], n_img), bool), mask > 0], 1)
    attn = attention_over(q, k, v, keep).reshape(*x.shape[:2], -1)
    return x + gate * lin(p, blk + "linear2", np.concatenate([attn, gelu_tanh(h[..., 3 * hidden:])], -1))


def ref_forward(p, x, t, text, mask, clip, guidance):
    """The whole tiny model; image output only (padded text rows are NaN here and never read)."""
    nh, hidden, (pt, ph, pw) = TINY["num_heads"], TINY["hidden_size"], TINY["patch_size"]
    x, text, clip = (a.astype(np.float64) for a in (x, text, clip))
    b, c, T, H, W = x.shape
    grid = (T // pt, H // ph, W // pw)
    # Conv3d with stride = kernel, tokens flattened (t, h, w)
    patches = x.reshape(b, c, grid[0], pt, grid[1], ph, grid[2], pw)
    img = np.einsum("bcTpHqWr,ocpqr->bTHWo", patches, p["img_in.proj.weight"]) + p["img_in.proj.bias"]
    img = img.reshape(b, -1, hidden)
    vec = lin(p, "time_in.mlp.2", silu(lin(p, "time_in.mlp.0", timestep_sinusoid(t))))
    vec = vec + lin(p, "vector_in.out_layer", silu(lin(p, "vector_in.in_layer", clip)))
    vec = vec + lin(p, "guidance_in.mlp.2", silu(lin(p, "guidance_in.mlp.0", timestep_sinusoid(guidance * 1000.0))))
    txt = ref_refiner(p, text, mask, t, nh)
    angles = rope_angles(grid, TINY["rope_dims"], TINY["rope_theta"])
    for i in range(TINY["depth_double"]):
        img, txt = ref_double_block(p, i, img, txt, vec, mask, angles, nh)
    h = np.concatenate([img, txt], 1)
    for i in range(TINY["depth_single"]):
        h = ref_single_block(p, i, h, vec, img.shape[1], mask, angles, nh, hidden)
    shift, scale = mods(p, "final_layer.adaLN_modulation.1", vec, 2)
    out = lin(p, "final_layer.linear", layer_norm(h[:, :img.shape[1]]) * (1 + scale) + shift)
    out = out.reshape(b, *grid, c, pt, ph, pw)
    return np.einsum("nthwcopq->nctohpwq", out).reshape(b, c, T, H, W)


# ---- (b) forward ------------------------------------------------------------------------------

def test_tiny_forward_shape_and_matches_numpy_reference(tiny):
    net, params = tiny
    inputs = make_inputs()
    out = run(net, inputs)
    assert out.shape == inputs[0].shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref_forward(params, *inputs), rtol=1e-5, atol=1e-5)


def test_guidance_is_required_iff_embedded(tiny):
    net, _ = tiny
    x, t, text, mask, clip, _ = make_inputs()
    with pytest.raises(ValueError):
        net(*[Tensor(a) for a in (x, t, text, mask, clip)])
    plain = materialize(build_hunyuan_dit("tiny", guidance_embed=False), seed=0)
    assert plain.guidance_in is None
    assert run(plain, [x, t, text, mask, clip]).shape == x.shape


# ---- (c) RoPE ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dims,grid", [((4, 6, 6), (3, 4, 5)), ((16, 56, 56), (2, 3, 2))])
def test_rope_matches_complex_rotation(dims, grid):
    from vgen.models.hunyuan.dit import Rope3D, apply_rope

    rope = Rope3D(dims, 256.0)
    cos, sin = rope(*grid)
    n, d = int(np.prod(grid)), sum(dims)
    x = np.random.default_rng(0).standard_normal((2, 3, n, d)).astype(np.float32)  # [B, H, N, D]
    ours = apply_rope(Tensor(x), cos, sin).asnumpy()
    ref = rope_rotate(x.transpose(0, 2, 1, 3).astype(np.float64), rope_angles(grid, dims, 256.0))
    np.testing.assert_allclose(ours, ref.transpose(0, 2, 1, 3), rtol=1e-5, atol=1e-5)


def test_rope_is_applied_after_the_qk_norm(tiny):
    """RMSNorm does not commute with the rotation: RoPE before the norm would fail the reference."""
    net, params = tiny
    mask = make_inputs()[3]
    grid, n_img = (3, 4, 5), 60
    rng = np.random.default_rng(3)
    img = rng.standard_normal((2, n_img, TINY["hidden_size"])).astype(np.float32)
    txt = rng.standard_normal((2, TEXT_LEN, TINY["hidden_size"])).astype(np.float32)
    vec = rng.standard_normal((2, TINY["hidden_size"])).astype(np.float32)
    cos, sin = net.rope(*grid)
    key_mask = Tensor(np.concatenate([np.ones((2, n_img)), mask], 1).astype(np.float32))
    h = np.concatenate([img, txt], 1)
    ours = net.single_blocks[0](Tensor(h), Tensor(vec), n_img, key_mask, cos, sin).asnumpy()
    ref = ref_single_block(params, 0, h.astype(np.float64), vec.astype(np.float64), n_img, mask,
                           rope_angles(grid, TINY["rope_dims"], TINY["rope_theta"]), TINY["num_heads"],
                           TINY["hidden_size"])
    valid = np.concatenate([np.ones((2, n_img), bool), mask > 0], 1)
    np.testing.assert_allclose(ours[valid], ref[valid], rtol=1e-5, atol=1e-5)


# ---- (d) text masking -------------------------------------------------------------------------

def test_padded_text_tokens_do_not_change_the_output(tiny_jit):
    inputs = make_inputs()
    base = tiny_jit(inputs)
    changed = [a.copy() for a in inputs]
    changed[2][0, 5:] = 100.0 * np.random.default_rng(7).standard_normal(changed[2][0, 5:].shape)
    np.testing.assert_allclose(tiny_jit(changed), base, rtol=0, atol=1e-6)
    # not vacuous: a valid token does matter
    changed[2][0, 4] += 1.0
    assert np.abs(tiny_jit(changed)[0] - base[0]).max() > 1e-3


def test_double_block_joint_attention_equals_attention_over_valid_tokens_only(tiny):
    net, params = tiny
    mask = np.array([[1, 1, 1, 0, 0, 0, 0, 0], [1] * 6 + [0] * 2], np.int32)
    grid, n_img, hidden = (2, 3, 4), 24, TINY["hidden_size"]
    rng = np.random.default_rng(5)
    img = rng.standard_normal((2, n_img, hidden)).astype(np.float32)
    txt = rng.standard_normal((2, TEXT_LEN, hidden)).astype(np.float32)
    vec = rng.standard_normal((2, hidden)).astype(np.float32)
    cos, sin = net.rope(*grid)
    key_mask = Tensor(np.concatenate([np.ones((2, n_img)), mask], 1).astype(np.float32))
    img_out, txt_out = net.double_blocks[1](Tensor(img), Tensor(txt), Tensor(vec), key_mask, cos, sin)
    ref_img, ref_txt = ref_double_block(params, 1, img.astype(np.float64), txt.astype(np.float64),
                                        vec.astype(np.float64), mask,
                                        rope_angles(grid, TINY["rope_dims"], TINY["rope_theta"]), TINY["num_heads"])
    np.testing.assert_allclose(img_out.asnumpy(), ref_img, rtol=1e-5, atol=1e-5)
    valid = mask > 0
    np.testing.assert_allclose(txt_out.asnumpy()[valid], ref_txt[valid], rtol=1e-5, atol=1e-5)


# ---- (e) token refiner ------------------------------------------------------------------------

def test_refiner_matches_the_official_pairwise_mask_on_every_row(tiny):
    """Rows of padded queries included: they see key 0 only (the column-0 rule)."""
    net, params = tiny
    _, t, text, _, _, _ = make_inputs()
    mask = np.array([[0, 1, 1, 0, 1, 0, 0, 0], [0] * 8], np.int32)  # token 0 padded; an all-padded prompt
    ours = net.txt_in(Tensor(text), Tensor(t), Tensor(mask.astype(np.float32))).asnumpy()
    ref = ref_refiner(params, text.astype(np.float64), mask, t, TINY["num_heads"])
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_all_padded_prompt_gives_finite_output_independent_of_the_text(tiny_jit):
    inputs = make_inputs(mask=np.zeros((2, TEXT_LEN), np.int32))
    out = tiny_jit(inputs)
    assert np.isfinite(out).all()
    other = [a.copy() for a in inputs]
    other[2] = other[2] * 3.0 + 1.0
    np.testing.assert_allclose(tiny_jit(other), out, rtol=0, atol=1e-6)


def test_jit_matches_pynative(tiny, tiny_jit):
    net, _ = tiny
    inputs = make_inputs(seed=4)
    np.testing.assert_allclose(tiny_jit(inputs), run(net, inputs), rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_finite_gradient(tiny):
    net, _ = tiny
    inputs = [Tensor(a) for a in make_inputs()]
    params = net.trainable_params()

    def loss_fn(*args):
        return (net(*args) ** 2).mean()

    _, grads = ms.value_and_grad(loss_fn, None, params)(*inputs)
    dead = [p.name for p, g in zip(params, grads) if not (np.isfinite(g.asnumpy()).all() and np.any(g.asnumpy()))]
    assert len(params) == len(list(named_params(net))) and dead == []
