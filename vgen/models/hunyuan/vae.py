"""HunyuanVideo's causal 3D VAE (AutoencoderKLCausal3D, "884-16c"): 4x temporal, 8x8 spatial, 16
latent channels. Parameter names, shapes and order are exactly the official state dict
(checkpoint_layouts/hunyuanvideo_vae.txt, 246,478,803 parameters).

Causality. Every conv pads time only in front (replicating the first frame), so output frame t
sees input frames <= t; the time downsamplers (stride 2 after 2 front frames) keep frame 0 alone in
latent 0, and latent j sees frames <= 4j. The mid-block attention is frame-causal. As officially,
GroupNorm pools its statistics over all frames, so the whole encoder is causal only up to those
statistics: encoding a prefix of a clip gives close, not identical, first latents.

Latents fed to the DiT are mean * SCALING_FACTOR (no shift), applied by the caller.

The mid-block attention runs one unmasked AttentionCore call per frame over the keys of frames
<= it (the official builds a full (THW)^2 fp32 mask instead). On CPU, large 3D convs run as one
matmul over gathered windows (ops.conv3d is slow there). PyNative and ms.jit give the same
outputs and gradients.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import AttentionCore, merge_heads, split_heads
from ..layers.init import declare_only
from ..layers.linear import torch_default_linear
from ..layers.conv import Conv3d, GroupNorm, along
from ..vae.blocks import Decoder, Encoder

SCALING_FACTOR = 0.476986  # official vae config `scaling_factor`; no shift factor
LOGVAR_RANGE = (-30.0, 20.0)  # DiagonalGaussianDistribution clamps logvar to this

# official config (hunyuan-video-t2v-720p/vae/config.json); sample_size / sample_tsize are the tile sizes
_884_16C = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, norm_num_groups=32, spatial_compression_ratio=8, time_compression_ratio=4,
                tile_sample_size=256, tile_sample_tsize=64, tile_overlap_factor=0.25)
PRESETS = {
    "884-16c": _884_16C,
    # the same code at 3.7M parameters, still 4x temporal / 8x8 spatial, for tests
    "tiny": dict(_884_16C, latent_channels=4, block_out_channels=(32, 64, 64, 64), layers_per_block=1,
                 norm_num_groups=8, tile_sample_size=32, tile_sample_tsize=16),
}


def replicate_pad(x, front: int, side: int):
    """Edge-replicate `front` frames before the clip (none after) and `side` pixels on each side of
    H and W, as the official F.pad(mode="replicate")."""
    if not (front or side):
        return x
    return ops.pad(x, (side, side, side, side, front, 0), mode="replicate")


class CausalConv3d(nn.Cell):
    """Replicate-pads k-1 frames in front and k//2 pixels on each side of H and W, then `conv`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=1):
        super().__init__()
        self.front, self.side = kernel_size - 1, kernel_size // 2
        self.conv = Conv3d(in_channels, out_channels, kernel_size, stride)

    def construct(self, x):
        return self.conv(replicate_pad(x, self.front, self.side))


# ---- resampling ------------------------------------------------------------------------------

def upsample_nearest(x, factors):
    """[B, C, T, H, W] -> [B, C, ft*T, fh*H, fw*W], each voxel repeated (F.interpolate nearest)."""
    b, c, t, h, w = x.shape
    ft, fh, fw = factors
    x = ops.broadcast_to(x[:, :, :, None, :, None, :, None], (b, c, t, ft, h, fh, w, fw))
    return x.reshape(b, c, t * ft, h * fh, w * fw)


class DownsampleCausal3D(nn.Cell):
    """A stride-(st, 2, 2) causal 3x3x3 conv; with 2 replicated front frames, output frame 0 sees
    input frame 0 only and output frame j sees frames <= st*j (T = 2n+1 -> n+1 for st = 2)."""

    def __init__(self, channels: int, stride):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride)

    def construct(self, x):
        return self.conv(x)


class UpsampleCausal3D(nn.Cell):
    """Nearest upsampling by (ft, fh, fw) except that the first frame is upsampled in space only
    (T -> ft*(T-1)+1), then a causal 3x3x3 conv."""

    def __init__(self, channels: int, factors):
        super().__init__()
        self.factors = tuple(factors)
        self.conv = CausalConv3d(channels, channels, 3)

    def construct(self, x):
        first = upsample_nearest(x[:, :, :1], (1,) + self.factors[1:])
        if x.shape[2] > 1:
            first = ops.cat([first, upsample_nearest(x[:, :, 1:], self.factors)], 2)
        return self.conv(first)


# ---- blocks ----------------------------------------------------------------------------------

class FrameCausalAttention(nn.Cell):
    """diffusers `Attention` as the official mid-block uses it: GroupNorm over (C, T, H, W), one head
    of `channels` dims over all T*H*W tokens, output `to_out.0`, residual. A token attends to the
    tokens of its own and earlier frames (official prepare_causal_attention_mask); computed as one
    unmasked AttentionCore call per frame over the key prefix, which is the same softmax and skips
    the masked half of the logits."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels, eps)
        self.to_q = torch_default_linear(channels, channels)
        self.to_k = torch_default_linear(channels, channels)
        self.to_v = torch_default_linear(channels, channels)
        self.to_out = nn.CellList([torch_default_linear(channels, channels)])  # .1 is a parameterless Dropout
        self.core = AttentionCore(channels)

    def construct(self, x):
        b, c, t, h, w = x.shape
        hw = h * w
        tokens = self.group_norm(x).reshape(b, c, t * hw).swapaxes(1, 2)  # [B, (t h w), C]
        q = split_heads(self.to_q(tokens), 1)
        k = split_heads(self.to_k(tokens), 1)
        v = split_heads(self.to_v(tokens), 1)
        out = self.core(q[:, :, :hw], k[:, :, :hw], v[:, :, :hw])
        for i in range(1, t):
            seen = (i + 1) * hw
            out = ops.cat([out, self.core(q[:, :, i * hw:seen], k[:, :, :seen], v[:, :, :seen])], 2)
        out = self.to_out[0](merge_heads(out))
        return x + out.swapaxes(1, 2).reshape(b, c, t, h, w)


def resampling_factors(num_blocks: int, spatial_ratio: int, time_ratio: int):
    """Per block (in encoder order for down blocks, in decoder order for up blocks) the (t, h, w)
    factor, or None: the first log2(spatial) blocks halve space, and the log2(time) blocks before
    the last one also halve time (884: (1,2,2), (2,2,2), (2,2,2), None), as the official rule."""
    if time_ratio != 4:
        raise ValueError(f"the official causal VAE supports time_compression_ratio 4 only, got {time_ratio}")
    n_space, n_time = int(math.log2(spatial_ratio)), int(math.log2(time_ratio))
    if num_blocks - 1 < n_space:
        raise ValueError(f"{num_blocks} blocks cannot compress space {spatial_ratio}x")
    factors = []
    for i in range(num_blocks):
        space = i < n_space
        time = num_blocks - 1 - n_time <= i < num_blocks - 1
        hw = 2 if space else 1
        factors.append((2 if time else 1, hw, hw) if (space or time) else None)
    return factors


# ---- tiling (official tiled_encode / tiled_decode) --------------------------------------------

def blend(prev, cur, extent: int, axis: int):
    """Cross-fade the first `extent` entries of `cur` along `axis` from the last `extent` of `prev`:
    weight of `cur` rises linearly 0, 1/extent, ... (official blend_v / blend_h / blend_t)."""
    extent = min(prev.shape[axis], cur.shape[axis], extent)
    if extent == 0:
        return cur
    shape = [1] * len(cur.shape)
    shape[axis] = extent
    ramp = Tensor((np.arange(extent, dtype=np.float32) / extent).reshape(shape)).astype(cur.dtype)
    head = along(prev, axis, -extent) * (1 - ramp) + along(cur, axis, 0, extent) * ramp
    return ops.cat([head, along(cur, axis, extent)], axis)


def tiled_space(x, run, tile_in: int, tile_out: int, overlap: float):
    """Runs `run` on overlapping H x W tiles of `tile_in` (step tile_in*(1-overlap)); each output
    tile is blended with its (already blended) upper and left neighbours and cropped to
    tile_out - blend, as the official in-place blending does."""
    step = int(tile_in * (1 - overlap))
    extent = int(tile_out * overlap)
    keep = tile_out - extent
    h, w = x.shape[-2], x.shape[-1]
    rows = []
    for i in range(0, h, step):
        row = []
        for j in range(0, w, step):
            tile = run(x[:, :, :, i:i + tile_in, j:j + tile_in])
            if rows:
                tile = blend(rows[-1][len(row)], tile, extent, 3)
            if row:
                tile = blend(row[-1], tile, extent, 4)
            row.append(tile)
        rows.append(row)
    return ops.cat([ops.cat([t[:, :, :, :keep, :keep] for t in row], 4) for row in rows], 3)


def tiled_time(x, run, tile_in: int, tile_out: int, overlap: float):
    """Runs `run` on chunks of tile_in+1 frames every tile_in*(1-overlap) frames. Each chunk's
    first frame is encoded/decoded as a causal first frame, so its first output frame is dropped
    for every chunk but the first; chunks are blended in time and cropped (official
    temporal_tiled_encode / temporal_tiled_decode)."""
    step = int(tile_in * (1 - overlap))
    extent = int(tile_out * overlap)
    keep = tile_out - extent
    pieces, prev = [], None
    for i in range(0, x.shape[2], step):
        chunk = x[:, :, i:i + tile_in + 1]
        if prev is not None and chunk.shape[2] == 1:  # a one-frame last chunk would only be dropped
            break
        tile = run(chunk)
        if prev is None:
            pieces.append(tile[:, :, :keep + 1])
        else:
            tile = blend(prev, tile[:, :, 1:], extent, 2)
            pieces.append(tile[:, :, :keep])
        prev = tile
    return ops.cat(pieces, 2)


def tiles_stitch(tile: int, ratio: int, overlap: float) -> bool:
    """Whether tiles of `tile` samples (tile/ratio latents) step by whole latents and the cropped
    outputs abut exactly, both ways: encode steps tile*(1-overlap) samples and keeps
    latents - int(latents*overlap) latents per tile; decode the converse (true for 256/64 at 0.25)."""
    latents = tile // ratio
    step_in_samples, step_in_latents = int(tile * (1 - overlap)), int(latents * (1 - overlap))
    return (tile % ratio == 0 and step_in_latents >= 1
            and step_in_samples == (latents - int(latents * overlap)) * ratio
            and step_in_latents * ratio == tile - int(tile * overlap))


# ---- the autoencoder -------------------------------------------------------------------------

class CausalVAE3D(nn.Cell):
    """AutoencoderKLCausal3D. encode: video [B, 3, 4n+1, H, W] in [-1, 1] -> (mean, std) of
    [B, 16, n+1, H/8, W/8]; decode: latents -> video. `*_tiled` bound memory as the official tiling
    (tile_sample_size pixels, tile_sample_tsize frames, overlap fraction tile_overlap_factor)."""

    scaling_factor = SCALING_FACTOR

    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 16,
                 block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2, norm_num_groups: int = 32,
                 spatial_compression_ratio: int = 8, time_compression_ratio: int = 4,
                 tile_sample_size: int = 256, tile_sample_tsize: int = 64, tile_overlap_factor: float = 0.25):
        super().__init__()
        self.latent_channels = latent_channels
        self.spatial_ratio, self.time_ratio = spatial_compression_ratio, time_compression_ratio
        factors = resampling_factors(len(block_out_channels), spatial_compression_ratio, time_compression_ratio)
        # down factors in encoder order, up factors in decoder order (the same list, as the official rule)
        self.encoder = Encoder(in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups,
                               CausalConv3d, FrameCausalAttention,
                               lambda i, c: DownsampleCausal3D(c, factors[i]) if factors[i] else None)
        self.decoder = Decoder(latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups,
                               CausalConv3d, FrameCausalAttention,
                               lambda i, c: UpsampleCausal3D(c, factors[i]) if factors[i] else None)
        self.quant_conv = Conv3d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = Conv3d(latent_channels, latent_channels, 1)
        self.set_tiling(tile_sample_size, tile_sample_tsize, tile_overlap_factor)

    def set_tiling(self, size: int, tsize: int, overlap: float = 0.25):
        """Tiles of `size` x `size` pixels and chunks of `tsize`+1 frames, overlapping by `overlap`.
        Tile steps must land on latent boundaries, or tiles would disagree on what a latent covers."""
        for tile, ratio, what in ((size, self.spatial_ratio, "tile_sample_size"),
                                  (tsize, self.time_ratio, "tile_sample_tsize")):
            if not tiles_stitch(tile, ratio, overlap):
                raise ValueError(f"{what}={tile} with overlap {overlap} does not step by whole latents")
        self.tile_sample_size, self.tile_latent_size = size, size // self.spatial_ratio
        self.tile_sample_tsize, self.tile_latent_tsize = tsize, tsize // self.time_ratio
        self.tile_overlap = overlap

    def _dtype(self):
        return self.encoder.conv_in.conv.weight.dtype

    # plain
    def moments(self, x):
        """Encoder + quant_conv: [B, 2*latent, T', H', W'] (mean | logvar), fp32."""
        return self.quant_conv(self.encoder(x.astype(self._dtype()))).astype(ms.float32)

    def to_gaussian(self, moments):
        c = self.latent_channels
        mean, logvar = moments[:, :c], moments[:, c:]
        return mean, ops.exp(0.5 * ops.clamp(logvar, LOGVAR_RANGE[0], LOGVAR_RANGE[1]))

    def encode(self, x):
        """x [B, 3, T, H, W] in [-1, 1] -> (mean, std), each [B, latent, (T-1)/4+1, H/8, W/8], fp32."""
        return self.to_gaussian(self.moments(x))

    def decode(self, z):
        """z [B, latent, t, h, w] (unscaled) -> video [B, 3, 4(t-1)+1, 8h, 8w] in about [-1, 1], fp32."""
        return self.decoder(self.post_quant_conv(z.astype(self._dtype()))).astype(ms.float32)

    def construct(self, x):
        """Reconstruction through the posterior mean."""
        mean, _ = self.encode(x)
        return self.decode(mean)

    # tiled
    def _moments_space_tiled(self, x):
        if max(x.shape[-2:]) <= self.tile_sample_size:
            return self.moments(x)
        return tiled_space(x, self.moments, self.tile_sample_size, self.tile_latent_size, self.tile_overlap)

    def _decode_space_tiled(self, z):
        if max(z.shape[-2:]) <= self.tile_latent_size:
            return self.decode(z)
        return tiled_space(z, self.decode, self.tile_latent_size, self.tile_sample_size, self.tile_overlap)

    def encode_tiled(self, x):
        """encode() over overlapping tiles in time (chunks of tile_sample_tsize+1 frames) and space."""
        if x.shape[2] > self.tile_sample_tsize:
            moments = tiled_time(x, self._moments_space_tiled, self.tile_sample_tsize, self.tile_latent_tsize,
                                 self.tile_overlap)
        else:
            moments = self._moments_space_tiled(x)
        return self.to_gaussian(moments)

    def encode_video(self, x, frames_per_call=None):
        """As the cache tool and online training call a VAE: a clip is encoded whole (4n+1 frames
        -> n+1 latent frames), its frames depending on each other, so `frames_per_call` does not
        apply; the tiling (tile_sample_size pixels, chunks of tile_sample_tsize + 1 frames) bounds
        memory for large clips and is skipped for small ones."""
        return self.encode_tiled(x)

    def decode_tiled(self, z):
        """decode() over overlapping tiles in time (chunks of tile_latent_tsize+1 latents) and space."""
        if z.shape[2] > self.tile_latent_tsize:
            return tiled_time(z, self._decode_space_tiled, self.tile_latent_tsize, self.tile_sample_tsize,
                              self.tile_overlap)
        return self._decode_space_tiled(z)

    def decode_video(self, z, frames_per_call=None):
        """As the sampler calls a VAE: the whole latent clip, tiled (skipped for small ones)."""
        return self.decode_tiled(z)


def build_hunyuan_vae(preset: str = "884-16c", **overrides) -> CausalVAE3D:
    """A declared (not allocated) CausalVAE3D from a PRESETS entry plus overrides; `materialize` fills it."""
    if preset not in PRESETS:
        raise KeyError(f"unknown HunyuanVideo VAE preset {preset!r}; known: {sorted(PRESETS)}")
    with declare_only():
        return CausalVAE3D(**{**PRESETS[preset], **overrides})


def video_vae(preset: str, **overrides) -> CausalVAE3D:
    """The VAE of a preset plus overrides (declared when called under declare_only())."""
    return CausalVAE3D(**{**PRESETS[preset], **overrides})


def preset_names():
    return sorted(PRESETS)
