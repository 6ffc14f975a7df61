"""HunyuanVideo causal 3D VAE: the official layout at full size (declared only); the tiny model's
shapes, causality, convolutions and attention against numpy references; tiled vs untiled."""
import numpy as np
import pytest
from mindspore import Tensor, ops

import vgen.models.hunyuan.vae as hv
import vgen.models.layers.conv as conv_layers
from conftest import layout_lines
from vgen.models.hunyuan.vae import (SCALING_FACTOR, CausalConv3d, FrameCausalAttention,
                                     UpsampleCausal3D, build_hunyuan_vae, tiled_space, tiled_time)
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.vae.sd_vae import GroupNorm

# the tiny preset narrowed further, so that each test takes seconds on 2 shared cores
SMALL = dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=4)


@pytest.fixture(scope="module")
def vae():
    return materialize(build_hunyuan_vae("tiny", **SMALL), seed=0)


def video(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ---- (a) layout --------------------------------------------------------------------------------

def test_full_model_matches_official_layout():
    net = build_hunyuan_vae("884-16c")
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == layout_lines("hunyuanvideo_vae.txt")
    assert count_params(net) == (246_478_803, 0)
    assert SCALING_FACTOR == 0.476986


def test_tiny_is_the_same_code():
    def collapsed(net):
        return {".".join(p for p in n.split(".") if not p.isdigit()) for n, _ in named_params(net)}

    tiny = build_hunyuan_vae("tiny")
    assert collapsed(tiny) == collapsed(build_hunyuan_vae("884-16c"))
    assert count_params(tiny)[0] < 4_000_000
    assert [b.downsamplers is not None for b in tiny.encoder.down_blocks] == [True, True, True, False]


def test_bad_tile_sizes_are_refused():
    with pytest.raises(ValueError, match="tile_sample_size"):
        build_hunyuan_vae("tiny", tile_sample_size=16)  # steps of 12 px are not whole latents
    with pytest.raises(ValueError, match="tile_sample_tsize"):
        build_hunyuan_vae("tiny", tile_sample_tsize=8)


# ---- (b) shapes: 4n+1 frames -> n+1 latents, /8 in space -----------------------------------------

@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_decode_shapes(vae, frames):
    x = Tensor(video((1, 3, frames, 8, 16)))
    mean, std = vae.encode(x)
    latent_frames = (frames - 1) // 4 + 1
    assert mean.shape == std.shape == (1, 4, latent_frames, 1, 2)
    assert np.all(std.asnumpy() > 0) and np.all(np.isfinite(mean.asnumpy()))
    assert vae.decode(mean).shape == (1, 3, frames, 8, 16)


def test_tiny_preset_shapes():
    net = materialize(build_hunyuan_vae("tiny"), seed=0)
    mean, _ = net.encode(Tensor(video((1, 3, 5, 8, 8))))
    assert mean.shape == (1, 4, 2, 1, 1)
    assert net.decode(mean).shape == (1, 3, 5, 8, 8)


# ---- (c) causality -----------------------------------------------------------------------------

def per_frame_group_norm(self, x):
    """GroupNorm statistics per frame: the only thing that is not causal in the official design."""
    b, c, t, h, w = x.shape
    frames = x.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    y = ops.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
    return y.reshape(b, t, c, h, w).transpose(0, 2, 1, 3, 4)


def test_causal_wiring_is_exact_with_per_frame_statistics(vae, monkeypatch):
    """With per-frame GroupNorm, latent j depends only on frames <= 4j and output frame f only on
    latents <= ceil(f/4): convs, time downsampling/upsampling and attention are all causal."""
    monkeypatch.setattr(GroupNorm, "construct", per_frame_group_norm)
    x = Tensor(video((1, 3, 9, 8, 8), seed=1))
    mean = vae.encode(x)[0].asnumpy()
    for frames in (1, 5):
        prefix = vae.encode(x[:, :, :frames])[0].asnumpy()
        np.testing.assert_allclose(prefix, mean[:, :, :prefix.shape[2]], atol=1e-5)
    z = Tensor(mean)
    decoded = vae.decode(z).asnumpy()
    for latents in (1, 2):
        prefix = vae.decode(z[:, :, :latents]).asnumpy()
        np.testing.assert_allclose(prefix, decoded[:, :, :prefix.shape[2]], atol=5e-5)


def test_official_group_norm_pools_all_frames(vae):
    """Officially GroupNorm normalises over (C/G, T, H, W), so later frames shift the statistics
    of earlier latents: a prefix encodes close to, but not exactly as, the longer clip."""
    x = Tensor(video((1, 3, 9, 8, 8), seed=1))
    mean = vae.encode(x)[0].asnumpy()
    prefix = vae.encode(x[:, :, :5])[0].asnumpy()
    diff = np.abs(prefix - mean[:, :, :2]).max()
    assert 1e-4 < diff < np.abs(mean).max()


# ---- (d) layers against numpy ------------------------------------------------------------------

def conv3d_reference(x, weight, bias, stride):
    """Replicate padding (2 frames in front, 1 px around for k=3) then a direct strided conv."""
    k = weight.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (k - 1, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k, k), axis=(2, 3, 4))
    win = win[:, :, ::stride[0], ::stride[1], ::stride[2]]  # [B, C, T', H', W', k, k, k]
    return np.einsum("bcthwijk,ocijk->bothw", win, weight) + bias[None, :, None, None, None]


@pytest.mark.parametrize("kernel,stride", [(3, (1, 1, 1)), (3, (1, 2, 2)), (3, (2, 2, 2)), (1, (1, 1, 1))])
@pytest.mark.parametrize("matmul_path", [False, True])
def test_causal_conv3d_matches_numpy(kernel, stride, matmul_path, monkeypatch):
    monkeypatch.setattr(conv_layers, "MATMUL_CONV_MIN_MACS", 0 if matmul_path else 10 ** 18)
    with declare_only():
        conv = CausalConv3d(3, 5, kernel, stride)
    materialize(conv, seed=2)
    x = video((2, 3, 5, 6, 8), seed=3)
    ref = conv3d_reference(x.astype(np.float64), conv.conv.weight.asnumpy().astype(np.float64),
                           conv.conv.bias.asnumpy().astype(np.float64), stride)
    out = conv(Tensor(x)).asnumpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_upsample_keeps_first_frame_single():
    with declare_only():
        up = UpsampleCausal3D(2, (2, 2, 2))
    materialize(up, seed=4)
    x = video((1, 2, 3, 2, 3), seed=5)
    near = np.repeat(np.repeat(x, 2, axis=3), 2, axis=4)
    expected_in = np.concatenate([near[:, :, :1], np.repeat(near[:, :, 1:], 2, axis=2)], axis=2)  # 1 + 2*2 frames
    ref = conv3d_reference(expected_in, up.conv.conv.weight.asnumpy(), up.conv.conv.bias.asnumpy(), (1, 1, 1))
    out = up(Tensor(x)).asnumpy()
    assert out.shape == (1, 2, 5, 4, 6)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def official_causal_mask(n_frame, n_hw):
    """prepare_causal_attention_mask: row i may see columns [0, (frame(i)+1)*n_hw)."""
    mask = np.full((n_frame * n_hw, n_frame * n_hw), -np.inf)
    for i in range(n_frame * n_hw):
        mask[i, :(i // n_hw + 1) * n_hw] = 0
    return mask


def test_frame_causal_attention_matches_numpy():
    c, groups = 8, 2
    with declare_only():
        attn = FrameCausalAttention(c, groups)
    materialize(attn, seed=6)
    p = {n: q.asnumpy().astype(np.float64) for n, q in named_params(attn)}
    x = video((2, c, 3, 2, 3), seed=7).astype(np.float64)
    b, _, t, h, w = x.shape
    g = x.reshape(b, groups, -1)
    normed = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-6)).reshape(b, c, -1)
    normed = normed * p["group_norm.weight"][:, None] + p["group_norm.bias"][:, None]
    tokens = normed.transpose(0, 2, 1)  # [B, (t h w), C]
    q, k, v = (tokens @ p[f"{n}.weight"].T + p[f"{n}.bias"] for n in ("to_q", "to_k", "to_v"))
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(c) + official_causal_mask(t, h * w)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v) @ p["to_out.0.weight"].T + p["to_out.0.bias"]
    ref = x + out.transpose(0, 2, 1).reshape(x.shape)
    np.testing.assert_allclose(attn(Tensor(x.astype(np.float32))).asnumpy(), ref, atol=1e-5)


# ---- (e) tiling ---------------------------------------------------------------------------------

def pool_encoder(x):
    """A stand-in encoder with the VAE's alignment and nothing else: latent 0 = frame 0, latent j =
    mean of frames 4j-3..4j, 8x8 mean pooling. Local, so exact tiling must reproduce it exactly."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // 8, 8, w // 8, 8).mean((4, 6))
    rest = x[:, :, 1:].reshape(b, c, (t - 1) // 4, 4, h // 8, w // 8).mean(3)
    return ops.cat([x[:, :, :1], rest], 2) if t > 1 else x


def repeat_decoder(z):
    """The matching stand-in decoder: latent 0 -> 1 frame, latent j -> 4 frames, 8x8 repeat."""
    b, c, t, h, w = z.shape
    z = ops.broadcast_to(z[:, :, :, :, None, :, None], (b, c, t, h, 8, w, 8)).reshape(b, c, t, 8 * h, 8 * w)
    if t == 1:
        return z
    rest = ops.broadcast_to(z[:, :, 1:, None], (b, c, t - 1, 4, 8 * h, 8 * w)).reshape(b, c, 4 * (t - 1), 8 * h, 8 * w)
    return ops.cat([z[:, :, :1], rest], 2)


@pytest.mark.parametrize("size,tsize,overlap", [(64, 32, 0.25), (32, 16, 0.5)])
def test_tiling_bookkeeping_is_exact_for_local_maps(size, tsize, overlap):
    """Overlapping tiles of a local map agree where they overlap, so blending must give back the
    untiled result exactly: this checks tile steps, alignment, blend weights and crops. Both
    settings blend 2 latents (the official 256 px / 0.25 blends 8); inputs span 3 tiles, the last
    one ragged."""
    step, tstep = int(size * (1 - overlap)), int(tsize * (1 - overlap))
    image = Tensor(video((1, 2, 1, 2 * step + 8, 2 * step + 16), seed=8))
    clip = Tensor(video((1, 2, 2 * tstep + 5, 8, 8), seed=8))
    for x, tiled in ((image, tiled_space(image, pool_encoder, size, size // 8, overlap)),
                     (clip, tiled_time(clip, pool_encoder, tsize, tsize // 4, overlap))):
        np.testing.assert_allclose(tiled.asnumpy(), pool_encoder(x).asnumpy(), atol=1e-6)
    image = Tensor(video((1, 2, 1, 2 * step // 8 + 1, 2 * step // 8 + 2), seed=9))
    clip = Tensor(video((1, 2, 2 * tstep // 4 + 2, 1, 1), seed=9))
    for z, tiled in ((image, tiled_space(image, repeat_decoder, size // 8, size, overlap)),
                     (clip, tiled_time(clip, repeat_decoder, tsize // 4, tsize, overlap))):
        np.testing.assert_allclose(tiled.asnumpy(), repeat_decoder(z).asnumpy(), atol=1e-6)


def test_small_inputs_are_not_tiled(vae):
    vae.set_tiling(32, 16, 0.25)
    x = Tensor(video((1, 3, 1, 32, 32)))  # exactly one tile
    np.testing.assert_array_equal(vae.encode_tiled(x)[0].asnumpy(), vae.encode(x)[0].asnumpy())


def relative_errors(a, b):
    """(max |a-b| / max |b|, mean |a-b| / mean |b|)."""
    d = np.abs(a - b)
    return float(d.max() / np.abs(b).max()), float(d.mean() / np.abs(b).mean())


# Tiling cases with 2 tiles that blend 2 latents: space: 64 px tiles at the official overlap 0.25
# on 72x40 px (9x5 latents) -> 2 tiles down (2-D grids: the bookkeeping test above); time:
# 16+1 frame chunks overlapping by half on 17 frames (5 latents) -> 2 chunks.
# name: (tiling, video shape, latent shape)
CASES = {"space": ((64, 16, 0.25), (1, 3, 1, 72, 40), (1, 4, 1, 9, 5)),
         "time": ((32, 16, 0.5), (1, 3, 17, 8, 8), (1, 4, 5, 1, 1))}


def test_tiled_is_exact_on_clips_constant_in_time(vae):
    """Constant in time, every chunk sees the same frames as the whole clip does at that place
    (its first frame included), so the real model chunked must equal unchunked."""
    tiling, shape, _ = CASES["time"]
    vae.set_tiling(*tiling)
    x = Tensor(np.broadcast_to(video((1, 3, 1, 8, 8), seed=12), shape).copy())
    np.testing.assert_allclose(vae.encode_tiled(x)[0].asnumpy(), vae.encode(x)[0].asnumpy(), atol=5e-5)
    z = Tensor(np.broadcast_to(video((1, 4, 1, 2, 2), seed=13), (1, 4, 5, 2, 2)).copy())
    np.testing.assert_allclose(vae.decode_tiled(z).asnumpy(), vae.decode(z).asnumpy(), atol=5e-5)


def affine_only(self, x):
    """GroupNorm without its statistics: makes every layer local, so tiles differ only at borders."""
    return x * self.weight.reshape(1, -1, 1, 1, 1) + self.bias.reshape(1, -1, 1, 1, 1)


@pytest.mark.parametrize("along", ["space", "time"])
def test_tiled_is_close_to_untiled(vae, along, monkeypatch):
    """Random content, local layers: tiles differ from the whole only near their borders
    (replicate padding instead of the neighbours), softened by the blending. Bounds: ~2x the
    largest (max, mean) relative errors measured over 3 weight seeds. With the official GroupNorm
    each tile also normalises by its own statistics, which dominates for a random-weight model on
    such small tiles: max relative error 0.35-0.71 (encode) and 0.65-1.27 (decode) measured."""
    monkeypatch.setattr(GroupNorm, "construct", affine_only)
    tiling, shape, latent = CASES[along]
    vae.set_tiling(*tiling)
    x = Tensor(video(shape, seed=10))
    mean, tiled = vae.encode(x)[0].asnumpy(), vae.encode_tiled(x)[0].asnumpy()
    assert tiled.shape == mean.shape
    max_err, mean_err = relative_errors(tiled, mean)
    assert max_err < ENCODE_BOUND[0] and mean_err < ENCODE_BOUND[1]
    z = Tensor(video(latent, seed=11))
    decoded, decoded_tiled = vae.decode(z).asnumpy(), vae.decode_tiled(z).asnumpy()
    assert decoded_tiled.shape == decoded.shape
    max_err, mean_err = relative_errors(decoded_tiled, decoded)
    assert max_err < DECODE_BOUND[0] and mean_err < DECODE_BOUND[1]


# measured (max, mean) over weight seeds 0-2, both cases: encode <= (0.040, 0.0048), decode <= (0.152, 0.027)
ENCODE_BOUND, DECODE_BOUND = (0.08, 0.02), (0.3, 0.06)
