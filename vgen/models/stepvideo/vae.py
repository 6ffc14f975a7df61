"""Step-Video-T2V's VAE v2 (stepvideo/vae/vae.py, AutoencoderKL(version=2, z_channels=64)): 8x
temporal, 16x16 spatial, 64 latent channels. Parameter names, shapes and order are exactly the
official model's (tests/layouts/stepvideo_vae_v2.txt, 498,818,819 parameters); the released file
stores `decoder.conv_out.*`, which the converter renames to `decoder.conv_out.conv.*` as the
official loader does.

Chunks. A clip is cut into chunks of 17 frames, each encoded on its own into 3 latent frames (204
frames -> 36); latents are decoded 3 at a time into 17 frames each, and then, as officially, the
two frames at every chunk boundary are cross-faded (`mix_boundaries`). A shorter last chunk runs
as the official does (1 frame -> 1 latent, which is how an image encodes).

Causality. Every conv zero-pads k-1 frames in front in time (and k//2 pixels each side in space);
the time downsamplers are stride-2 causal convs; the mid-block attention is causal over the tokens
in (t, h, w) order (is_causal=True on one head of all channels). GroupNorm takes its statistics per
frame (the official `base_group_norm.spatial`), so the encoder is causal inside a chunk, and chunks
do not see each other at all.

Latents are not normalised: the DiT reads mean + std * noise as it is (scale 1, shift 0). Inputs
are videos in [-1, 1]; decoded videos come back unclamped (the official pipeline clamps to [-1, 1]
when it writes the video).

Ours: spatial tiling (`set_tiling`, off by default; the official never tiles) reuses HunyuanVideo's
overlapping, blended tiles; with tiles each tile normalises and attends on its own, so tiled
differs from untiled (see tests/test_stepvideo_vae.py). The official encode returns a sample of
the posterior; ours returns (mean, std) and the caller samples. The mid-block attention runs one
query block per frame (5 per chunk) over the keys up to it, masking the future keys of its own
frame: the same softmax as the official's fused causal kernel, without the (T H W)^2 logits at once.
"""
import mindspore as ms
from mindspore import nn, ops

from ..hunyuan.vae import LOGVAR_RANGE, tiled_space, tiles_stitch, upsample_nearest
from ..layers.attention import NEG_INF, merge_heads, split_heads
from ..layers.conv import Conv3d, GroupNorm
from ..layers.init import declare_only
from ..text.llama import attention_with_bias
from ..vae import sd_vae

CHUNK_FRAMES, CHUNK_LATENTS = 17, 3  # pixel frames per encoded chunk, latent frames it gives
TIME_DOWN_LEVELS = (1, 2)  # encoder levels whose downsampler also halves time (others: space only)
TIME_UP_LEVELS = (2, 3)  # decoder levels whose upsampler also doubles time
TRIM_FRAMES = 3  # the decoder makes 20 frames of a chunk and drops the first 3 (temporal_downsample - 1)
SPATIAL = 16
MIX_KEEP = 0.6  # mix(): each boundary frame keeps 0.6 of itself and takes 0.4 of its neighbour
EPS = 1e-5  # torch.nn.GroupNorm's default, which every official norm keeps

_V2 = dict(in_channels=3, out_channels=3, latent_channels=64, encoder_channels=32, encoder_mult=(4, 8, 16, 16),
           decoder_channels=128, decoder_mult=(1, 2, 4, 4), num_res_blocks=2, norm_groups=32,
           tile_sample_size=0, tile_overlap=0.25)
PRESETS = {
    "v2": _V2,
    # the same code at 2.7M parameters (most in conv_unpatchify): 8 latent channels (stepvideo_tiny's
    # DiT), 17 frames -> 3 latents and 16x16 spatial as the official; 8-32 channels, seconds per clip
    "tiny": dict(_V2, latent_channels=8, encoder_channels=8, encoder_mult=(1, 2, 4, 4), decoder_channels=8,
                 decoder_mult=(1, 2, 4, 4), num_res_blocks=1, norm_groups=4),
}


# ---- layers ------------------------------------------------------------------------------------

class FrameGroupNorm(GroupNorm):
    """GroupNorm over [B, C, T, H, W] with statistics per frame (the official flattens B and T
    before F.group_norm), in fp32."""

    def construct(self, x):
        b, t = x.shape[0], x.shape[2]
        w = self.read("weight", self.weight).astype(ms.float32)
        bias = self.read("bias", self.bias).astype(ms.float32)
        y = ops.group_norm(fold_frames(x.astype(ms.float32)), self.num_groups, w, bias, self.eps)
        return unfold_frames(y, b, t).astype(x.dtype)


def fold_frames(x):
    """[B, C, T, H, W] -> [B*T, C, H, W]: per-frame layers (2-D convs, per-frame norms)."""
    b, c, t, h, w = x.shape
    return x.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def unfold_frames(y, b: int, t: int):
    return y.reshape(b, t, y.shape[1], y.shape[2], y.shape[3]).transpose(0, 2, 1, 3, 4)


def causal_pad(x, front: int, side: int):
    """Zeros: `front` frames before the clip (none after), `side` pixels each side of H and W."""
    if not (front or side):
        return x
    return ops.pad(x, (side, side, side, side, front, 0))


class CausalConv(nn.Cell):
    """The official CausalConv (and its AfterNorm / ChannelLast twins, which pad the same zeros
    elsewhere): zero padding of k-1 frames in front and k//2 pixels each side, then a valid conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=1):
        super().__init__()
        self.front, self.side = kernel_size - 1, kernel_size // 2
        self.conv = Conv3d(in_channels, out_channels, kernel_size, stride)

    def construct(self, x):
        return self.conv(causal_pad(x, self.front, self.side))


class Downsample2D(sd_vae.Downsample2D):
    """Per frame: pad right and bottom by one, stride-2 3x3 conv (official Downsample2D, padding=0)."""

    def construct(self, x):
        return unfold_frames(self.conv(ops.pad(fold_frames(x), (0, 1, 0, 1))), x.shape[0], x.shape[2])


class Upsample2D(sd_vae.Upsample2D):
    """Per frame: nearest 2x, then a 3x3 conv (official Upsample2D)."""

    def construct(self, x):
        return unfold_frames(self.conv(sd_vae.upsample_nearest_2x(fold_frames(x))), x.shape[0], x.shape[2])


class Downsample3D(nn.Cell):
    """A stride-2 causal 3x3x3 conv: T -> (T - 1) // 2 + 1, H -> H / 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv(channels, channels, 3, stride=2)

    def construct(self, x):
        return self.conv(x)


class ResUpBlock(nn.Cell):
    """Res3DBlockUpsample with equal channels: silu(norm2(conv2(silu(norm1(conv1(x))))) + x) + x
    (the official adds the input twice: as the block's shortcut and as its residual)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv1 = CausalConv(channels, channels, 3)
        self.norm1 = FrameGroupNorm(groups, channels, EPS)
        self.conv2 = CausalConv(channels, channels, 3)
        self.norm2 = FrameGroupNorm(groups, channels, EPS)

    def construct(self, x):
        h = ops.silu(self.norm1(self.conv1(x)))
        return ops.silu(self.norm2(self.conv2(h)) + x) + x


class Upsample3D(nn.Cell):
    """Nearest 2x in time and space (every frame, the first too), then ResUpBlock."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv3d = ResUpBlock(channels, groups)

    def construct(self, x):
        return self.conv3d(upsample_nearest(x, (2, 2, 2)))


class ResnetBlock(nn.Cell):
    """Resnet3DBlock: conv2(silu(norm2(conv1(silu(norm1(x)))))) + x, the shortcut a 1x1x1
    `nin_shortcut` when channels change."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, in_channels, EPS)
        self.conv1 = CausalConv(in_channels, out_channels, 3)
        self.norm2 = FrameGroupNorm(groups, out_channels, EPS)
        self.conv2 = CausalConv(out_channels, out_channels, 3)
        self.nin_shortcut = CausalConv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def construct(self, x):
        h = self.conv1(ops.silu(self.norm1(x)))
        h = self.conv2(ops.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class CausalAttention(nn.Cell):
    """AttnBlock: per-frame GroupNorm, 1x1x1 q / k / v, one head of all channels over the T*H*W
    tokens, token i attending to tokens <= i; proj_out and the residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = FrameGroupNorm(groups, channels, EPS)
        self.q = CausalConv(channels, channels, 1)
        self.k = CausalConv(channels, channels, 1)
        self.v = CausalConv(channels, channels, 1)
        self.proj_out = CausalConv(channels, channels, 1)
        self.scale = channels ** -0.5

    def construct(self, x):
        b, c, t, h, w = x.shape
        hw, n = h * w, t * h * w
        x_norm = self.norm(x)
        q = split_heads(self.q(x_norm).reshape(b, c, n).swapaxes(1, 2), 1)  # [B, 1, N, C]
        k = split_heads(self.k(x_norm).reshape(b, c, n).swapaxes(1, 2), 1)
        v = split_heads(self.v(x_norm).reshape(b, c, n).swapaxes(1, 2), 1)
        out = []
        for i in range(t):  # the queries of frame i see the keys up to themselves
            seen = (i + 1) * hw
            rows = ops.arange(i * hw, seen)
            future = (ops.arange(0, seen)[None, :] > rows[:, None]).astype(ms.float32) * NEG_INF
            out.append(attention_with_bias(q[:, :, i * hw:seen], k[:, :, :seen], v[:, :, :seen], future, self.scale))
        y = merge_heads(ops.cat(out, 2)).swapaxes(1, 2).reshape(b, c, t, h, w)
        return x + self.proj_out(y)


class Mid(nn.Cell):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = CausalAttention(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def construct(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


def resnets(channels, groups: int):
    """Resnet blocks from channels[0] through channels[1:]."""
    return nn.CellList([ResnetBlock(cin, cout, groups) for cin, cout in zip(channels[:-1], channels[1:])])


class DownLevel(nn.Cell):
    """An encoder resolution: `block` (resnets), then `downsample` (none at the last level)."""

    def __init__(self, channels, groups: int, downsample=None):
        super().__init__()
        self.block = resnets(channels, groups)
        self.downsample = downsample

    def construct(self, x):
        for blk in self.block:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class UpLevel(nn.Cell):
    """A decoder resolution: `block` (resnets), then `upsample` (none at level 0)."""

    def __init__(self, channels, groups: int, upsample=None):
        super().__init__()
        self.block = resnets(channels, groups)
        self.upsample = upsample

    def construct(self, x):
        for blk in self.block:
            x = blk(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


# ---- pixel (un)shuffle, as the official layers order the channels -------------------------------

def unshuffle(x, factor: int):
    """[B, C, D, H, W] -> [B, C f^3, (D + f - 1) / f, H / f, W / f] after f-1 zero frames in front;
    channel c f^3 + (ft f + fh) f + fw takes voxel (f d + ft, f h + fh, f w + fw)."""
    if factor == 1:
        return x
    x = causal_pad(x, factor - 1, 0)
    for axis in (2, 3, 4):  # time, then height, then width: each factor lands inside the previous
        b, c = x.shape[0], x.shape[1]
        shape = list(x.shape)
        split = shape[:axis] + [shape[axis] // factor, factor] + shape[axis + 1:]
        perm = [0, 1, axis + 1] + [i for i in range(2, 6) if i != axis + 1]
        x = x.reshape(split).transpose(perm)
        x = x.reshape((b, c * factor) + tuple(x.shape[3:]))
    return x


def shuffle(x, factor: int):
    """The inverse layout: [B, C f^3, D, H, W] -> [B, C, f D - (f - 1), f H, f W] (the first f-1
    frames dropped, ConvPixelShuffleUpSampleLayer3D.pixel_shuffle_3d)."""
    if factor == 1:
        return x
    for axis in (4, 3, 2):  # width first: its factor is the innermost channel digit
        b, c = x.shape[0], x.shape[1] // factor
        rest = list(x.shape[2:])
        x = x.reshape([b, c, factor] + rest)  # the factor now sits at axis 2
        perm = [0, 1] + [i for i in range(3, 6) if i <= axis + 1] + [2] + [i for i in range(3, 6) if i > axis + 1]
        x = x.transpose(perm)
        shape = list(x.shape)
        x = x.reshape(shape[:axis] + [shape[axis] * factor] + shape[axis + 2:])
    return x[:, :, factor - 1:]


def unshuffle_mean(x, out_channels: int, factor: int):
    """PixelUnshuffleChannelAveragingDownSampleLayer3D: unshuffle, then the mean of each run of
    C f^3 / out consecutive channels (the parameter-free shortcut)."""
    x = unshuffle(x, factor)
    b, c, d, h, w = x.shape
    return ops.mean(x.reshape(b, out_channels, c // out_channels, d, h, w), 2)


def repeat_shuffle(x, out_channels: int, factor: int):
    """ChannelDuplicatingPixelUnshuffleUpSampleLayer3D: every channel repeated out f^3 / C times in
    place (repeat_interleave), then shuffle (the parameter-free shortcut)."""
    b, c, d, h, w = x.shape
    r = out_channels * factor ** 3 // c
    x = ops.broadcast_to(x[:, :, None], (b, c, r, d, h, w)).reshape(b, c * r, d, h, w)
    return shuffle(x, factor)


class ConvUnshuffle(nn.Cell):
    """ConvPixelUnshuffleDownSampleLayer3D: a causal conv to out / f^3 channels, then unshuffle."""

    def __init__(self, in_channels: int, out_channels: int, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv(in_channels, out_channels // factor ** 3, 3)

    def construct(self, x):
        return unshuffle(self.conv(x), self.factor)


class ConvShuffle(nn.Cell):
    """ConvPixelShuffleUpSampleLayer3D: a causal conv to out f^3 channels, then shuffle."""

    def __init__(self, in_channels: int, out_channels: int, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv(in_channels, out_channels * factor ** 3, 3)

    def construct(self, x):
        return shuffle(self.conv(x), self.factor)


# ---- encoder and decoder of one chunk -------------------------------------------------------------

def patch_channels(latent_channels: int) -> int:
    return 4 * latent_channels * 2 ** 3  # the official `channels` of the (un)patchify layers


class VideoEncoder(nn.Cell):
    """One chunk [B, 3, 17, H, W] -> moments [B, 2 latent, 3, H/16, W/16] (mean | logvar)."""

    def __init__(self, in_channels, latent_channels, ch, ch_mult, num_res_blocks, groups):
        super().__init__()
        self.conv_in = CausalConv(in_channels, ch, 3)
        levels, block_in = [], ch
        for i, mult in enumerate(ch_mult):
            chans = [block_in] + [ch * mult] * num_res_blocks
            block_in = ch * mult
            down = None
            if i != len(ch_mult) - 1:
                down = Downsample3D(block_in) if i in TIME_DOWN_LEVELS else Downsample2D(block_in)
            levels.append(DownLevel(chans, groups, down))
        self.down = nn.CellList(levels)
        self.mid = Mid(block_in, groups)
        self.norm_out = FrameGroupNorm(groups, block_in, EPS)
        self.channels, self.moments = patch_channels(latent_channels), 2 * latent_channels
        self.conv_patchify = ConvUnshuffle(block_in, self.channels)
        self.conv_out = CausalConv(self.channels, self.moments, 3)

    def construct(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = ops.silu(self.norm_out(self.mid(h)))
        h = self.conv_patchify(h) + unshuffle_mean(h, self.channels, 2)
        return self.conv_out(h) + unshuffle_mean(h, self.moments, 1)


class VideoDecoder(nn.Cell):
    """One chunk of latents [B, latent, 3, h, w] -> [B, 3, 17, 16h, 16w]."""

    def __init__(self, latent_channels, out_channels, ch, ch_mult, num_res_blocks, groups):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.channels, self.block_in = patch_channels(latent_channels), block_in
        self.conv_in = CausalConv(latent_channels, self.channels, 3)
        self.conv_unpatchify = ConvShuffle(self.channels, block_in)
        self.mid = Mid(block_in, groups)
        levels = {}
        for i in reversed(range(len(ch_mult))):
            chans = [block_in] + [ch * ch_mult[i]] * (num_res_blocks + 1)
            block_in = ch * ch_mult[i]
            up = None
            if i != 0:
                up = Upsample3D(block_in, groups) if i in TIME_UP_LEVELS else Upsample2D(block_in)
            levels[i] = UpLevel(chans, groups, up)
        self.up = nn.CellList([levels[i] for i in range(len(ch_mult))])  # up.0 is the last to run
        self.norm_out = FrameGroupNorm(groups, block_in, EPS)
        self.conv_out = CausalConv(block_in, out_channels, 3)

    def construct(self, z):
        h = self.conv_in(z) + repeat_shuffle(z, self.channels, 1)
        h = self.conv_unpatchify(h) + repeat_shuffle(h, self.block_in, 2)
        h = self.mid(h)
        for i in range(len(self.up) - 1, -1, -1):
            h = self.up[i](h)
        h = self.conv_out(ops.silu(self.norm_out(h)))
        return h[:, :, TRIM_FRAMES:]


def mix_boundaries(chunks):
    """The official mix(): at each boundary the first frame of the next chunk becomes 0.6 itself +
    0.4 the last frame of this one, then that last frame 0.6 itself + 0.4 the new first frame."""
    out = list(chunks)
    for i in range(len(out) - 1):
        front, back = out[i][:, :, -1:], out[i + 1][:, :, :1]
        back = back * MIX_KEEP + front * (1 - MIX_KEEP)
        front = front * MIX_KEEP + back * (1 - MIX_KEEP)
        out[i] = ops.cat([out[i][:, :, :-1], front], 2)
        out[i + 1] = ops.cat([back, out[i + 1][:, :, 1:]], 2)
    return ops.cat(out, 2)


def chunk_latents(frames: int) -> int:
    """Latent frames of a chunk of 1..17 pixel frames, as the official layers count them (two
    stride-2 causal convs, then the unshuffle's front pad and halving); None if the unshuffle
    cannot take it (the official view() fails)."""
    t = frames
    for _ in TIME_DOWN_LEVELS:
        t = (t - 1) // 2 + 1
    return (t + 1) // 2 if t % 2 else None


def latent_frames(frames: int) -> int:
    """Latent frames of a clip: 3 per whole 17-frame chunk, plus those of a shorter last chunk."""
    whole, rest = divmod(int(frames), CHUNK_FRAMES)
    extra = chunk_latents(rest) if rest else 0
    if frames < 1 or extra is None:
        raise ValueError(f"{frames} frames: VAE v2 encodes chunks of 17 frames (a last chunk of {rest} frames "
                         f"cannot be encoded; use 17 k frames, or 17 k + 1)")
    return whole * CHUNK_LATENTS + extra


# ---- the autoencoder -------------------------------------------------------------------------------

class StepVideoVAE(nn.Cell):
    """encode: video [B, 3, 17 k, H, W] in [-1, 1] -> (mean, std), each [B, C, 3 k, H/16, W/16];
    decode: latents [B, C, 3 k, h, w] -> video [B, 3, 17 k, 16 h, 16 w]. Chunks run one after the
    other (memory of one chunk); `set_tiling` adds overlapping spatial tiles."""

    scaling_factor = 1.0
    chunk_frames, chunk_latent_frames = CHUNK_FRAMES, CHUNK_LATENTS

    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 64,
                 encoder_channels: int = 32, encoder_mult=(4, 8, 16, 16), decoder_channels: int = 128,
                 decoder_mult=(1, 2, 4, 4), num_res_blocks: int = 2, norm_groups: int = 32,
                 tile_sample_size: int = 0, tile_overlap: float = 0.25):
        super().__init__()
        if len(encoder_mult) != 4 or len(decoder_mult) != 4:
            raise ValueError("VAE v2 has 4 resolution levels in the encoder and the decoder (16x spatial, 8x time)")
        self.latent_channels = latent_channels
        self.encoder = VideoEncoder(in_channels, latent_channels, encoder_channels, encoder_mult, num_res_blocks,
                                    norm_groups)
        self.decoder = VideoDecoder(latent_channels, out_channels, decoder_channels, decoder_mult, num_res_blocks,
                                    norm_groups)
        self.set_tiling(tile_sample_size, tile_overlap)

    def set_tiling(self, size: int, overlap: float = 0.25):
        """Spatial tiles of `size` x `size` pixels overlapping by `overlap` (0: never tile). Steps
        must land on whole latents so that tiles agree on what a latent covers."""
        if size and not tiles_stitch(size, SPATIAL, overlap):
            raise ValueError(f"tile_sample_size={size} with overlap {overlap} does not step by whole latents")
        self.tile_sample_size, self.tile_latent_size, self.tile_overlap = size, size // SPATIAL, overlap

    def _dtype(self):
        return self.encoder.conv_in.conv.weight.dtype

    # one chunk
    def _moments(self, x):
        return self.encoder(x.astype(self._dtype())).astype(ms.float32)

    def _decode_chunk(self, z):
        return self.decoder(z.astype(self._dtype())).astype(ms.float32)

    def _moments_tiled(self, x):
        if not self.tile_sample_size or max(x.shape[-2:]) <= self.tile_sample_size:
            return self._moments(x)
        return tiled_space(x, self._moments, self.tile_sample_size, self.tile_latent_size, self.tile_overlap)

    def _decode_chunk_tiled(self, z):
        if not self.tile_sample_size or max(z.shape[-2:]) <= self.tile_latent_size:
            return self._decode_chunk(z)
        return tiled_space(z, self._decode_chunk, self.tile_latent_size, self.tile_sample_size, self.tile_overlap)

    # clips
    def moments(self, x, tiled: bool = False):
        """[B, 3, T, H, W] -> [B, 2 C, latent_frames(T), H/16, W/16] (mean | logvar), fp32, chunk by chunk."""
        t, h, w = x.shape[2:]
        latent_frames(t)  # raises for lengths the official cannot encode
        if h % SPATIAL or w % SPATIAL:
            raise ValueError(f"{h}x{w} pixels: VAE v2 needs sizes divisible by {SPATIAL}")
        run = self._moments_tiled if tiled else self._moments
        return ops.cat([run(x[:, :, s:s + CHUNK_FRAMES]) for s in range(0, t, CHUNK_FRAMES)], 2)

    def to_gaussian(self, moments):
        c = self.latent_channels
        mean, logvar = moments[:, :c], moments[:, c:]
        return mean, ops.exp(0.5 * ops.clamp(logvar, LOGVAR_RANGE[0], LOGVAR_RANGE[1]))

    def encode(self, x):
        """x [B, 3, 17 k, H, W] in [-1, 1] -> (mean, std), each [B, C, 3 k, H/16, W/16], fp32."""
        return self.to_gaussian(self.moments(x))

    def encode_tiled(self, x):
        """encode() with every chunk over overlapping spatial tiles (when set_tiling set a size)."""
        return self.to_gaussian(self.moments(x, tiled=True))

    def encode_video(self, x, frames_per_call=None):
        """As the cache tool and online training call a VAE: 17-frame chunks each encoded whole
        (`frames_per_call` does not apply), tiled in space when set_tiling asks for it."""
        return self.encode_tiled(x)

    def decode(self, z, tiled: bool = False):
        """z [B, C, 3 k, h, w] -> video [B, 3, 17 k, 16 h, 16 w] in about [-1, 1], fp32: 3 latents at a
        time, then the chunk boundaries mixed."""
        run = self._decode_chunk_tiled if tiled else self._decode_chunk
        return mix_boundaries([run(z[:, :, s:s + CHUNK_LATENTS]) for s in range(0, z.shape[2], CHUNK_LATENTS)])

    def decode_tiled(self, z):
        return self.decode(z, tiled=True)

    def decode_video(self, z, frames_per_call=None):
        """As the sampler calls a VAE: per chunk, tiled in space when set_tiling asks for it."""
        return self.decode_tiled(z)

    def construct(self, x):
        """Reconstruction through the posterior mean."""
        mean, _ = self.encode(x)
        return self.decode(mean)


def video_vae(preset: str, **overrides) -> StepVideoVAE:
    """The VAE of a preset plus overrides (declared when called under declare_only())."""
    if preset not in PRESETS:
        raise KeyError(f"unknown Step-Video VAE preset {preset!r}; known: {sorted(PRESETS)}")
    return StepVideoVAE(**{**PRESETS[preset], **overrides})


def build_stepvideo_vae(preset: str = "v2", **overrides) -> StepVideoVAE:
    """A declared (not allocated) StepVideoVAE; `materialize` or a checkpoint fills it."""
    with declare_only():
        return video_vae(preset, **overrides)


def preset_names():
    return sorted(PRESETS)
