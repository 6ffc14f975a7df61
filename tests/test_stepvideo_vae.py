"""Step-Video VAE v2: the official layout at full size (declared only); the tiny preset's layers and
whole encode / decode against a float64 numpy reference written from the official code
(stepvideo/vae/vae.py); causality and chunking; spatial tiling; the converter; vgen-cache vae and
a short training run on the caches (model=stepvideo_tiny)."""
import time
from pathlib import Path

import numpy as np
import pytest
from mindspore import Tensor

import vgen.models.layers.conv as conv_layers
import vgen.models.stepvideo.vae as sv
from conftest import layout_lines
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.weights import net_arrays
from vgen.runtime import memory_gb, setup_device

setup_device("auto")  # before any kernel runs: the cache tool and the trainer select the device too
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def vae():
    return materialize(sv.build_stepvideo_vae("tiny"), seed=0)


@pytest.fixture(scope="module")
def P(vae):
    return {n: a.astype(np.float64) for n, a in net_arrays(vae).items()}


def video(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def close(got, want, rtol=RTOL):
    """Relative to the reference's scale: random-weight activations are O(1) with some near zero."""
    got = got.asnumpy() if hasattr(got, "asnumpy") else got
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())))


# ---- float64 reference, from the official code (NCDHW throughout) ---------------------------------

def silu(x):
    return x / (1 + np.exp(-x))


def conv3d(x, w, b, stride=(1, 1, 1), side=None):
    """CausalConv: F.pad with zeros, (w w h h t 0) = (k//2, k//2, k//2, k//2, k-1, 0), then a valid
    conv; `side` overrides the spatial padding."""
    kt, kh, kw = w.shape[2:]
    side = kh // 2 if side is None else side
    x = np.pad(x, ((0, 0), (0, 0), (kt - 1, 0), (side, side), (side, side)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kt, kh, kw), axis=(2, 3, 4))
    win = win[:, :, ::stride[0], ::stride[1], ::stride[2]]
    out = np.tensordot(win, w, axes=([1, 5, 6, 7], [1, 2, 3, 4]))  # [B, T, H, W, O]
    return out.transpose(0, 4, 1, 2, 3) + b[None, :, None, None, None]


def conv(P, name, x, stride=(1, 1, 1)):
    return conv3d(x, P[name + ".weight"], P[name + ".bias"], stride)


def group_norm_frames(x, w, b, groups, eps=1e-5):
    """base_group_norm with spatial=True: (b t) flattened, F.group_norm on each frame."""
    B, C, T, H, W = x.shape
    g = x.transpose(0, 2, 1, 3, 4).reshape(B, T, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    g = g.reshape(B, T, C, H, W).transpose(0, 2, 1, 3, 4)
    return g * w[None, :, None, None, None] + b[None, :, None, None, None]


def norm(P, name, x, groups):
    return group_norm_frames(x, P[name + ".weight"], P[name + ".bias"], groups)


def resnet(P, name, x, groups):
    """Resnet3DBlock: the norms' outputs are zero-padded 2 frames in front (base_group_norm_with_zero_pad)."""
    h = conv(P, name + ".conv1.conv", silu(norm(P, name + ".norm1", x, groups)))
    if name + ".nin_shortcut.conv.weight" in P:
        x = conv(P, name + ".nin_shortcut.conv", x)
    h = conv(P, name + ".conv2.conv", silu(norm(P, name + ".norm2", h, groups)))
    return h + x


def attention(P, name, x, groups):
    """AttnBlock: sdpa(q, k, v, is_causal=True) over 'b t h w c -> b 1 (t h w) c'."""
    B, C, T, H, W = x.shape
    h = norm(P, name + ".norm", x, groups)
    q, k, v = (conv(P, f"{name}.{p}.conv", h).reshape(B, C, -1).transpose(0, 2, 1) for p in "qkv")
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(C)
    n = logits.shape[-1]
    logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    out = (a / a.sum(-1, keepdims=True)) @ v
    out = out.transpose(0, 2, 1).reshape(B, C, T, H, W)
    return conv(P, name + ".proj_out.conv", out) + x


def mid(P, name, x, groups):
    x = resnet(P, name + ".block_1", x, groups)
    return resnet(P, name + ".block_2", attention(P, name + ".attn_1", x, groups), groups)


def pixel_unshuffle_3d(x, f):
    """ConvPixelUnshuffleDownSampleLayer3D.pixel_unshuffle_3d (front pad f-1, view, permute)."""
    x = np.pad(x, ((0, 0), (0, 0), (f - 1, 0), (0, 0), (0, 0)))
    B, C, D, H, W = x.shape
    x = x.reshape(B, C, D // f, f, H // f, f, W // f, f).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(B, C * f ** 3, D // f, H // f, W // f)


def unshuffle_average(x, out, f):
    u = pixel_unshuffle_3d(x, f)
    B, C, D, H, W = u.shape
    return u.reshape(B, out, C // out, D, H, W).mean(2)


def pixel_shuffle_3d(x, f):
    B, C, D, H, W = x.shape
    x = x.reshape(B, C // f ** 3, f, f, f, D, H, W).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(B, C // f ** 3, D * f, H * f, W * f)[:, :, f - 1:]


def duplicate_shuffle(x, out, f):
    return pixel_shuffle_3d(np.repeat(x, out * f ** 3 // x.shape[1], axis=1), f)


def nearest(x, ft, fh, fw):
    return x.repeat(ft, 2).repeat(fh, 3).repeat(fw, 4)


def encoder_ref(P, x, cfg):
    groups, levels = cfg["norm_groups"], len(cfg["encoder_mult"])
    h = conv(P, "encoder.conv_in.conv", x)
    for i in range(levels):
        for j in range(cfg["num_res_blocks"]):
            h = resnet(P, f"encoder.down.{i}.block.{j}", h, groups)
        if i == levels - 1:
            continue
        name = f"encoder.down.{i}.downsample.conv"
        if i in (1, 2):  # Downsample3D: CausalConv stride (2, 2, 2)
            h = conv(P, name + ".conv", h, (2, 2, 2))
        else:  # Downsample2D(padding=0): F.pad (0, 1, 0, 1) per frame, Conv2d stride 2
            h = np.pad(h, ((0, 0), (0, 0), (0, 0), (0, 1), (0, 1)))
            h = conv3d(h, P[name + ".weight"][:, :, None], P[name + ".bias"], (1, 2, 2), side=0)
    h = silu(norm(P, "encoder.norm_out", mid(P, "encoder.mid", h, groups), groups))
    channels, moments = 4 * cfg["latent_channels"] * 8, 2 * cfg["latent_channels"]
    h = pixel_unshuffle_3d(conv(P, "encoder.conv_patchify.conv.conv", h), 2) + unshuffle_average(h, channels, 2)
    return conv(P, "encoder.conv_out.conv", h) + unshuffle_average(h, moments, 1)


def decoder_ref(P, z, cfg):
    groups, levels = cfg["norm_groups"], len(cfg["decoder_mult"])
    channels = 4 * cfg["latent_channels"] * 8
    block_in = cfg["decoder_channels"] * cfg["decoder_mult"][-1]
    h = conv(P, "decoder.conv_in.conv", z) + duplicate_shuffle(z, channels, 1)
    h = pixel_shuffle_3d(conv(P, "decoder.conv_unpatchify.conv.conv", h), 2) + duplicate_shuffle(h, block_in, 2)
    h = mid(P, "decoder.mid", h, groups)
    for i in reversed(range(levels)):
        for j in range(cfg["num_res_blocks"] + 1):
            h = resnet(P, f"decoder.up.{i}.block.{j}", h, groups)
        if i == 0:
            continue
        name = f"decoder.up.{i}.upsample"
        if i in (2, 3):  # Upsample3D: interpolate x2 (nearest), Res3DBlockUpsample(is_init=True)
            x = nearest(h, 2, 2, 2)
            r = silu(norm(P, name + ".conv3d.norm1", conv(P, name + ".conv3d.conv1.conv", x), groups))
            r = norm(P, name + ".conv3d.norm2", conv(P, name + ".conv3d.conv2.conv", r), groups)
            h = silu(r + x) + x
        else:  # Upsample2D: nearest x2 per frame, Conv2d 3x3 padding 1
            h = conv3d(nearest(h, 1, 2, 2), P[name + ".conv.weight"][:, :, None], P[name + ".conv.bias"])
    h = conv(P, "decoder.conv_out.conv", silu(norm(P, "decoder.norm_out", h, groups)))
    return h[:, :, 3:]


def encode_ref(P, x, cfg):
    """AutoencoderKL.encode: 17-frame chunks, moments split on channels, logvar clamped."""
    z = np.concatenate([encoder_ref(P, x[:, :, s:s + 17], cfg) for s in range(0, x.shape[2], 17)], 2)
    c = cfg["latent_channels"]
    return z[:, :c], np.exp(0.5 * np.clip(z[:, c:], -30.0, 20.0))


def decode_ref(P, z, cfg):
    """AutoencoderKL.decode: 3 latents at a time, then mix() in place, as the official orders it."""
    x = np.concatenate([decoder_ref(P, z[:, :, s:s + 3], cfg) for s in range(0, z.shape[2], 3)], 2)
    x = x.transpose(0, 2, 1, 3, 4).copy()  # b t c h w, as mix() indexes it
    front, back = slice(16, x.shape[1] - 1, 17), slice(17, x.shape[1], 17)
    x[:, back] = x[:, back] * 0.6 + x[:, front] * 0.4
    x[:, front] = x[:, front] * 0.6 + x[:, back] * 0.4
    return x.transpose(0, 2, 1, 3, 4)


TINY = sv.PRESETS["tiny"]


# ---- layout -----------------------------------------------------------------------------------

def test_full_preset_matches_official_layout():
    """Declared in seconds without allocating: names, shapes and order of the official model.
    Resident memory is compared while the net is alive (a peak would hide under this worker's
    earlier peaks)."""
    before = memory_gb()
    start = time.time()
    net = sv.build_stepvideo_vae("v2")
    assert time.time() - start < 20
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == layout_lines("stepvideo_vae_v2.txt")
    assert count_params(net) == (498_818_819, 0)
    grown_mb = (memory_gb() - before) * 1024
    assert grown_mb < 500, f"declaring grew the RSS by {grown_mb:.0f} MB (fp32 weights: 1995 MB)"


def test_tiny_is_the_same_code():
    def collapsed(net):
        return {".".join(p for p in n.split(".") if not p.isdigit()) for n, _ in named_params(net)}

    tiny = sv.build_stepvideo_vae("tiny")
    assert collapsed(tiny) == collapsed(sv.build_stepvideo_vae("v2"))
    assert 500_000 < count_params(tiny)[0] < 4_000_000 and tiny.latent_channels == 8


def test_family_declares_the_vaes_and_the_adapter():
    from vgen.models.encoders import vae_spec
    from vgen.models.registry import build_family, family_spec
    from conftest import compose

    for name, channels in (("stepvideo-vae-v2", 64), ("stepvideo-vae-tiny", 8)):
        spec = vae_spec(name)
        assert (spec.channels, spec.compression, spec.scale, spec.shift) == (channels, (8, 16, 16), 1.0, 0.0)
    with declare_only():
        assert vae_spec("stepvideo-vae-tiny").build().latent_channels == 8
    assert "stepvideo_vae" in {a.name for a in family_spec("stepvideo").weights}
    latent = build_family(compose(["model=stepvideo_tiny"]).model).latent
    assert (latent.vae, latent.channels, latent.chunk_frames, latent.chunk_latents) == ("stepvideo-vae-tiny", 8, 17, 3)
    assert latent.latent_shape(34, 32, 32) == (8, 6, 2, 2)
    assert latent.latent_shape(1, 32, 32) == (8, sv.latent_frames(1), 2, 2) == (8, 1, 2, 2)  # an image


# ---- layers against the reference ----------------------------------------------------------------

@pytest.mark.parametrize("kernel,stride,matmul", [(3, 1, True), (3, 1, False), (3, 2, True), (1, 1, False)])
def test_causal_conv_pads_zeros_in_front(kernel, stride, matmul, monkeypatch):
    monkeypatch.setattr(conv_layers, "MATMUL_CONV_MIN_MACS", 0 if matmul else 10 ** 12)
    layer = materialize(sv.CausalConv(4, 6, kernel, stride), seed=1)
    x = video((2, 4, 5, 6, 8), seed=1)
    want = conv3d(x.astype(np.float64), layer.conv.weight.asnumpy().astype(np.float64),
                  layer.conv.bias.asnumpy().astype(np.float64), (stride,) * 3)
    close(layer(Tensor(x)), want)
    assert want.shape[2] == (5 - 1) // stride + 1


def test_group_norm_takes_statistics_per_frame():
    layer = materialize(sv.FrameGroupNorm(4, 8, 1e-5), seed=2)
    layer.weight.set_data(Tensor(video((8,), seed=3)))
    layer.bias.set_data(Tensor(video((8,), seed=4)))
    x = video((2, 8, 3, 4, 5), seed=2) * np.array([1, 5, 20], np.float32)[None, None, :, None, None]  # frames differ
    want = group_norm_frames(x.astype(np.float64), layer.weight.asnumpy().astype(np.float64),
                             layer.bias.asnumpy().astype(np.float64), 4)
    close(layer(Tensor(x)), want)


def test_pixel_unshuffle_and_shuffle_keep_the_official_channel_order():
    x = video((1, 4, 5, 4, 6), seed=5)
    close(sv.unshuffle(Tensor(x), 2), pixel_unshuffle_3d(x, 2))
    close(sv.unshuffle_mean(Tensor(x), 8, 2), unshuffle_average(x, 8, 2))
    close(sv.unshuffle_mean(Tensor(x), 2, 1), unshuffle_average(x, 2, 1))
    y = video((1, 16, 3, 2, 3), seed=6)
    close(sv.shuffle(Tensor(y), 2), pixel_shuffle_3d(y, 2))
    close(sv.repeat_shuffle(Tensor(y), 4, 2), duplicate_shuffle(y, 4, 2))
    close(sv.repeat_shuffle(Tensor(y), 64, 1), duplicate_shuffle(y, 64, 1))
    assert sv.shuffle(sv.unshuffle(Tensor(x), 2), 2).shape == x.shape  # 5 frames: 1 pad in, 1 dropped out
    np.testing.assert_array_equal(sv.shuffle(sv.unshuffle(Tensor(x), 2), 2).asnumpy(), x)


def test_mid_attention_is_token_causal(vae, P, monkeypatch):
    block = vae.encoder.mid.attn_1
    x = video((2, 32, 3, 2, 3), seed=7)
    close(block(Tensor(x)), attention(P, "encoder.mid.attn_1", x.astype(np.float64), TINY["norm_groups"]))
    # without the (per-frame) norm, a change at token i moves only tokens >= i (frame-major, then raster order)
    monkeypatch.setattr(sv.FrameGroupNorm, "construct", lambda self, x: x)
    y = x.copy()
    y[:, :, 1, 1, 0] += 1.0  # token 1 * 6 + 1 * 3 + 0 = 9 of 18
    a, b = block(Tensor(x)).asnumpy(), block(Tensor(y)).asnumpy()
    d = np.abs(a - b).reshape(2, 32, -1).max((0, 1))
    assert d[:9].max() == 0 and d[9:].min() > 0


# ---- the whole model against the reference -----------------------------------------------------------

def test_encode_matches_the_reference(vae, P):
    x = video((1, 3, 34, 16, 16), seed=8)
    mean, std = vae.encode(Tensor(x))
    want_mean, want_std = encode_ref(P, x.astype(np.float64), TINY)
    assert mean.shape == (1, 8, 6, 1, 1)
    close(mean, want_mean)
    close(std, want_std)


def test_decode_matches_the_reference_with_its_boundary_mix(vae, P):
    z = video((1, 8, 6, 1, 1), seed=9)
    out = vae.decode(Tensor(z))
    want = decode_ref(P, z.astype(np.float64), TINY)
    assert out.shape == (1, 3, 34, 16, 16)
    close(out, want)
    # decoded per chunk, then only frames 16 and 17 mixed
    parts = [vae.decode(Tensor(z[:, :, s:s + 3])).asnumpy() for s in (0, 3)]
    plain = np.concatenate(parts, 2)
    changed = np.abs(out.asnumpy() - plain).max((0, 1, 3, 4))
    assert np.flatnonzero(changed > 0).tolist() == [16, 17]
    close(out.asnumpy()[:, :, 17], 0.6 * plain[:, :, 17] + 0.4 * plain[:, :, 16], rtol=1e-5)
    close(out.asnumpy()[:, :, 16], 0.76 * plain[:, :, 16] + 0.24 * plain[:, :, 17], rtol=1e-5)


@pytest.mark.parametrize("batch,chunks,size", [(2, 1, (32, 16)), (1, 2, (16, 16))])
def test_shapes_17k_frames_to_3k_latents_and_back(vae, batch, chunks, size):
    x = Tensor(video((batch, 3, 17 * chunks, *size), seed=10))
    mean, std = vae.encode(x)
    assert mean.shape == std.shape == (batch, 8, 3 * chunks, size[0] // 16, size[1] // 16)
    assert vae.decode(mean).shape == (batch, 3, 17 * chunks, *size)
    assert (std.asnumpy() > 0).all()


def test_an_image_is_one_frame_one_latent_as_officially(vae, P):
    x = video((1, 3, 1, 16, 16), seed=11)
    mean, _ = vae.encode(Tensor(x))
    assert mean.shape == (1, 8, 1, 1, 1)
    close(mean, encode_ref(P, x.astype(np.float64), TINY)[0])
    assert vae.decode(mean).shape == (1, 3, 1, 16, 16)
    assert [sv.latent_frames(n) for n in (1, 17, 18, 34, 204)] == [1, 3, 4, 6, 36]
    with pytest.raises(ValueError, match="17 frames"):
        vae.encode(Tensor(video((1, 3, 5, 16, 16))))  # a 5-frame chunk: the official view() fails too
    with pytest.raises(ValueError, match="divisible by 16"):
        vae.encode(Tensor(video((1, 3, 17, 24, 16))))


def test_chunks_are_independent_and_causal_inside(vae):
    """A later chunk does not change earlier latents (exactly: chunks are encoded on their own), and
    inside a chunk latent 0 sees frame 0 only, latent 1 frames <= 8 (two causal stride-2 levels,
    one causal unshuffle)."""
    x = video((1, 3, 34, 16, 16), seed=12)
    base = vae.encode(Tensor(x))[0].asnumpy()[:, :, :3]
    np.testing.assert_array_equal(vae.encode(Tensor(x[:, :, :17]))[0].asnumpy(), base)  # without the second chunk
    for first, kept in ((1, 1), (9, 2)):
        y = x[:, :, :17].copy()
        y[:, :, first:] = 0.0
        got = vae.encode(Tensor(y))[0].asnumpy()
        np.testing.assert_allclose(got[:, :, :kept], base[:, :, :kept], atol=1e-6)
        assert np.abs(got[:, :, kept] - base[:, :, kept]).max() > 1e-4


# ---- spatial tiling (ours: the official never tiles) ---------------------------------------------------

def pool16(x):
    b, c, t, h, w = x.shape
    return Tensor(x.asnumpy().reshape(b, c, t, h // 16, 16, w // 16, 16).mean((4, 6)))


def repeat16(z):
    return Tensor(z.asnumpy().repeat(16, 3).repeat(16, 4))


def test_tiling_bookkeeping_is_exact_for_local_maps():
    """64 px tiles at overlap 0.25 step by 3 latents and blend 1: on maps whose tiles agree where
    they overlap, tiled must equal untiled (3 x 2 tiles, ragged last ones)."""
    from vgen.models.hunyuan.vae import tiled_space

    x = Tensor(video((1, 2, 2, 112, 80), seed=14))
    np.testing.assert_allclose(tiled_space(x, pool16, 64, 4, 0.25).asnumpy(), pool16(x).asnumpy(), atol=1e-6)
    z = Tensor(video((1, 2, 3, 7, 5), seed=15))
    np.testing.assert_allclose(tiled_space(z, repeat16, 4, 64, 0.25).asnumpy(), repeat16(z).asnumpy(), atol=1e-6)
    with pytest.raises(ValueError, match="whole latents"):
        sv.build_stepvideo_vae("tiny", tile_sample_size=40)


def test_tiled_encode_and_decode(vae):
    """Frames within one tile are not tiled (identical). Larger ones: each tile normalises per frame,
    attends over its own tokens and sees zeros past its borders, so tiled is not untiled: on this
    random-weight tiny model (2 tiles of 64 px over 80 px, a receptive field wider than the tile)
    the (max, mean) relative errors measured over weight seeds 0-1 are encode (0.51, 0.35), decode
    (0.54, 0.38); still (0.38, 0.11) and (0.20, 0.03) with the norms and the attention removed, so
    mostly borders. The bounds (~1.5x) only catch a broken stitch; the exact checks are the
    bookkeeping test above and the first tile's own rows below."""
    x = Tensor(video((1, 3, 1, 80, 48), seed=16))
    try:
        vae.set_tiling(128)
        np.testing.assert_array_equal(vae.encode_video(x)[0].asnumpy(), vae.encode(x)[0].asnumpy())
        vae.set_tiling(64)
        plain, tiled = vae.encode(x)[0].asnumpy(), vae.encode_video(x)[0].asnumpy()
        assert tiled.shape == plain.shape == (1, 8, 1, 5, 3)
        errs = relative_errors(tiled, plain)
        z = Tensor(video((1, 8, 1, 5, 3), seed=17))
        dec_plain, dec_tiled = vae.decode(z).asnumpy(), vae.decode_tiled(z).asnumpy()
        assert dec_tiled.shape == dec_plain.shape == (1, 3, 1, 80, 48)
        dec_errs = relative_errors(dec_tiled, dec_plain)
        assert errs[0] < 0.8 and errs[1] < 0.55 and dec_errs[0] < 0.8 and dec_errs[1] < 0.6
        # the stitch: a blend of 1 latent weighs the next tile 0 (official ramp 0, 1/n, ...), so latent
        # rows 0-3 are the first tile's (pixels 0-63) and row 4 the second's (pixels 48-79)
        first, second = vae.encode(x[:, :, :, :64])[0].asnumpy(), vae.encode(x[:, :, :, 48:])[0].asnumpy()
        np.testing.assert_allclose(tiled[:, :, :, :4], first, atol=1e-6)
        np.testing.assert_allclose(tiled[:, :, :, 4], second[:, :, :, 1], atol=1e-6)
    finally:
        vae.set_tiling(0)


def relative_errors(a, b):
    d = np.abs(a - b)
    return float(d.max() / np.abs(b).max()), float(d.mean() / np.abs(b).mean())


# ---- converter ---------------------------------------------------------------------------------

def test_converter_renames_the_official_conv_out(cw, tmp_path):
    from safetensors.numpy import save_file

    from vgen.models.weights import load_safetensors

    with declare_only():
        net = cw.adapter_of("stepvideo_vae").build("tiny")
    rng = np.random.default_rng(18)
    state = {n: rng.standard_normal(p.shape).astype(np.float32) for n, p in named_params(net)}
    official = {n.replace("decoder.conv_out.conv.", "decoder.conv_out."): a for n, a in state.items()}
    assert "decoder.conv_out.weight" in official and "decoder.conv_out.conv.weight" not in official
    src, out = tmp_path / "vae_v2.safetensors", tmp_path / "ours.safetensors"
    save_file(official, str(src))
    cw.convert("stepvideo_vae", src, out, preset="tiny")
    materialize(net, 3)
    load_safetensors(net, str(out), strict=True)
    got = net_arrays(net)
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    expected, _ = cw.model_layout("stepvideo_vae")  # the default preset is the official one
    assert [f"{n} {list(s)}" for n, s in expected] == layout_lines("stepvideo_vae_v2.txt")


# ---- vgen-cache vae and training on the caches (model=stepvideo_tiny) ------------------------------

RES = (32, 32)  # 2 x 2 latents


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """3 quickstart clips (40, 24 and 48 frames: 2, 1 and 2 chunks at stride 1) and an image, with
    tiny Step-LLM (sentencepiece) and BERT (WordPiece) tokenizers trained on their captions."""
    import importlib.util

    import pandas as pd

    spm = pytest.importorskip("sentencepiece")
    from conftest import REPO

    root = tmp_path_factory.mktemp("stepvideo_cache")
    spec = importlib.util.spec_from_file_location("make_quickstart_data", REPO / "tools" / "make_quickstart_data.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    csv_path = Path(quickstart.build(str(root / "data"), num=3, seed=0, num_images=1))
    captions = list(pd.read_csv(csv_path)["caption"])
    words = sorted({w for c in captions for w in str(c).lower().replace(",", " ").replace(".", " ").split()})
    (root / "bert").mkdir()
    (root / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    (root / "step").mkdir()
    with open(root / "step" / "step1_chat_tokenizer.model", "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(captions * 8), model_writer=f, vocab_size=40,
                                       model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                       hard_vocab_limit=False, minloglevel=2)
    rows = pd.read_csv(csv_path).to_dict("records")
    return {"root": root, "csv": csv_path, "rows": rows}


def cache_overrides(clips, *more):
    r = clips["root"]
    return ["model=stepvideo_tiny", "model.depth=1", "data=video", f"data.csv_path={clips['csv']}",
            f"data.cache_dir={r / 'cache'}", f"model.text_encoder.tokenizer={r / 'step'}",
            f"model.text_encoder_2.tokenizer={r / 'bert'}", "data.frame_stride=1", "data.num_frames=17",
            f"data.resolution=[{RES[0]},{RES[1]}]", "progress=false", *more]


@pytest.fixture(scope="module")
def caches(clips):
    from vgen.cli import cache as cache_cli

    cache_dir = clips["root"] / "cache"
    start = time.time()
    text = cache_cli.run("text", cache_overrides(clips))
    vae_summary = cache_cli.run("vae", cache_overrides(clips))
    return {"dir": cache_dir, "text": text, "vae": vae_summary, "seconds": time.time() - start}


def direct_segments(vae, path, count):
    """The reference: the VAE called on each 17-frame segment, read as read_clip reads it (one frame
    for an image)."""
    from vgen.data.video import read_clip

    length = 17 if count >= 17 else 1
    means, stds = [], []
    for first in range(0, count - length + 1, length):
        clip = read_clip(path, length, stride=1, start=first, size=RES)  # [T, 3, H, W]
        mean, std = vae.encode(Tensor(clip.transpose(1, 0, 2, 3)[None].copy()))
        means.append(mean.asnumpy()[0].transpose(1, 0, 2, 3))
        stds.append(std.asnumpy()[0].transpose(1, 0, 2, 3))
    return np.stack(means), np.stack(stds)


def test_vae_cache_holds_whole_chunks_equal_to_the_vae(clips, caches):
    from conftest import compose
    from vgen.data.manifest import latent_folder, read_manifest
    from vgen.models.encoders import build_vae

    summary = caches["vae"]
    assert (summary.rows, summary.encoded, summary.bad) == (4, 4, [])
    folder = latent_folder(caches["dir"], *RES)
    m = read_manifest(folder)
    assert {k: m[k] for k in ("vae", "weights", "channels", "compression", "scale", "shift", "segment_frames")} == {
        "vae": "stepvideo-vae-tiny", "weights": "random-init:stepvideo-vae-tiny:seed0", "channels": 8,
        "compression": [8, 16, 16], "scale": 1.0, "shift": 0.0, "segment_frames": 17}
    vae = build_vae(compose(cache_overrides(clips)).model.vae)
    segments = {40: 2, 24: 1, 48: 2, 1: 1}
    for row in clips["rows"]:
        count = int(row["num_frames"])
        with np.load(folder / (str(Path(row["video"]).with_suffix("")) + ".npz"), allow_pickle=False) as z:
            mean, std = z["latent_mean"], z["latent_std"]
        assert mean.shape == std.shape == (segments[count], 3 if count > 1 else 1, 8, 2, 2)
        if count in (40, 1):  # two chunks; the image: one frame, one latent as the official
            want_mean, want_std = direct_segments(vae, str(clips["csv"].parent / row["video"]), count)
            np.testing.assert_allclose(mean, want_mean, atol=1e-5)
            np.testing.assert_allclose(std, want_std, atol=1e-5)


def test_trains_on_the_caches(clips, caches, tmp_path):
    from conftest import compose, read_metrics
    from vgen.data.cached_video import build_video_dataset
    from vgen.data.errors import DataError
    from vgen.models.registry import build_family
    from vgen.train.trainer import Trainer

    over = cache_overrides(clips, "data.latents=cache", "data.text=cache", "schedule.max_steps=2",
                           "schedule.batch_size=2", "schedule.log_every=1", "schedule.warmup_steps=0")
    cfg = compose(over)
    family = build_family(cfg.model)
    ds = build_video_dataset(cfg.data, family.text, family.latent)
    sample = ds.get(0, np.random.default_rng(0))
    assert sample["latent"].shape == (8, 3, 2, 2) and sample["text_pooled"].shape == (8, 16)
    trainer = Trainer(cfg, tmp_path).setup()
    trainer.run()
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) for m in metrics)
    assert trainer.data.encoders is None  # nothing encoded online
    # clips of two chunks need segments of two chunks: refused before training, with the fix
    longer = compose(cache_overrides(clips, "data.latents=cache", "data.num_frames=34"))
    with pytest.raises(DataError, match="segments of 17 frames"):
        build_video_dataset(longer.data, family.text, family.latent)


def test_segments_of_a_chunked_vae_are_whole_chunks():
    from vgen.data.cached_video import encodable_frames, segment_frames

    assert [segment_frames(None, n, 8, 17) for n in (17, 40, 51, 204, 16, 1)] == [17, 34, 51, 204, 1, 1]
    assert [encodable_frames(n, 8, 17) for n in (24, 48, 5)] == [17, 34, 1]
    assert segment_frames(None, 17, 4) == 17 and segment_frames(None, 8, 4) == 5  # causal: 1 + 4 k, unchanged


def test_longer_segments_are_the_chunks_side_by_side(clips, caches):
    """The cache tool takes the chunking from the family (17 for Step-Video, none for HunyuanVideo's
    causal VAE); a 34-frame segment (not 1 + 8 k) is two chunks, so its latents are the two cached
    17-frame segments side by side."""
    from conftest import compose
    from vgen.data import cache_build
    from vgen.data.manifest import latent_folder
    from vgen.models.encoders import build_vae

    cfg = compose(cache_overrides(clips))
    assert cache_build.latent_chunk_frames(cfg.model) == 17
    assert cache_build.latent_chunk_frames(compose(["model=hunyuan_tiny"]).model) == 0
    row = next(r for r in clips["rows"] if int(r["num_frames"]) == 48)
    kw = dict(frame_stride=1, target_fps=None, size=RES, frames_per_call=8, t_compression=8, chunk_frames=64,
              dtype=np.float32)
    path = str(clips["csv"].parent / row["video"])
    arrays = cache_build.encode_clip(build_vae(cfg.model.vae), path, segment_frames=34, vae_chunk=17, **kw)
    with np.load(latent_folder(caches["dir"], *RES) / (str(Path(row["video"]).with_suffix("")) + ".npz")) as z:
        cached = z["latent_mean"]
    assert arrays["latent_mean"].shape == (1, 6, 8, 2, 2)
    np.testing.assert_allclose(arrays["latent_mean"][0], cached.reshape(6, 8, 2, 2), atol=1e-5)
    with pytest.raises(ValueError, match="1 \\+ 8 k"):
        cache_build.encode_clip(None, path, segment_frames=34, **kw)  # read as a causal VAE's segment
