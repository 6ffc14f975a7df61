"""The Stable Diffusion image VAE (diffusers AutoencoderKL, sd-vae-ft-ema), frozen, used frame by
frame by OpenSora 1.0/1.1 (and ModelScope) to turn video frames into 4-channel latents at 1/8 size.

Parameter names, shapes and order are exactly diffusers' state dict
(checkpoint_layouts/sd_vae_ft_ema_diffusers.txt). The caller scales latents by SCALING_FACTOR.
"""
import mindspore as ms
from mindspore import nn, ops

from ..layers.attention import AttentionCore, merge_heads, split_heads
from ..layers.conv import Conv2d, GroupNorm
from ..layers.linear import torch_default_linear
from .blocks import Decoder, Encoder

SCALING_FACTOR = 0.18215  # latents fed to the DiT are mean * SCALING_FACTOR (applied by the caller)
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps logvar to this


# ---- diffusers building blocks -----------------------------------------------------------------

def conv2d(in_channels: int, out_channels: int, kernel: int):
    """A same-size convolution (the skeleton's `conv`)."""
    return Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)


class Downsample2D(nn.Cell):
    """Pads right and bottom by one (diffusers' padding=0 case), then a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0)

    def construct(self, x):
        return self.conv(ops.pad(x, (0, 1, 0, 1)))


def upsample_nearest_2x(x):
    """[B, C, H, W] -> [B, C, 2H, 2W], each pixel repeated 2x2 (nearest, as F.interpolate)."""
    b, c, h, w = x.shape
    x = ops.broadcast_to(x[:, :, :, None, :, None], (b, c, h, 2, w, 2))
    return x.reshape(b, c, 2 * h, 2 * w)


class Upsample2D(nn.Cell):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def construct(self, x):
        return self.conv(upsample_nearest_2x(x))


class VAEAttention(nn.Cell):
    """diffusers `Attention` as the VAE mid-block uses it: GroupNorm over channels, one head of
    `channels` dims over the H*W pixels, output projection `to_out.0`, residual added."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-6, head_dim: int = None):
        super().__init__()
        self.head_dim = head_dim or channels
        self.num_heads = channels // self.head_dim
        self.group_norm = GroupNorm(groups, channels, eps)
        self.to_q = torch_default_linear(channels, channels)
        self.to_k = torch_default_linear(channels, channels)
        self.to_v = torch_default_linear(channels, channels)
        self.to_out = nn.CellList([torch_default_linear(channels, channels)])  # .1 is a parameterless Dropout
        self.core = AttentionCore(self.head_dim)

    def construct(self, x):
        b, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(b, c, h * w).swapaxes(1, 2)  # [B, HW, C]
        q = split_heads(self.to_q(tokens), self.num_heads)
        k = split_heads(self.to_k(tokens), self.num_heads)
        v = split_heads(self.to_v(tokens), self.num_heads)
        out = self.to_out[0](merge_heads(self.core(q, k, v)))
        return x + out.swapaxes(1, 2).reshape(b, c, h, w)


class AutoencoderKL(nn.Cell):
    """diffusers AutoencoderKL; the defaults are sd-vae-ft-ema (83,653,863 parameters)."""

    scaling_factor = SCALING_FACTOR

    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 4,
                 block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2, norm_num_groups: int = 32):
        super().__init__()
        self.latent_channels = latent_channels
        self.downscale = 2 ** (len(block_out_channels) - 1)
        last = len(block_out_channels) - 1  # every block but the last resamples by 2
        self.encoder = Encoder(in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups,
                               conv2d, VAEAttention, lambda i, c: Downsample2D(c) if i < last else None)
        self.decoder = Decoder(latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups,
                               conv2d, VAEAttention, lambda i, c: Upsample2D(c) if i < last else None)
        self.quant_conv = Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = Conv2d(latent_channels, latent_channels, 1)

    def _dtype(self):
        return self.encoder.conv_in.weight.dtype

    def encode(self, x):
        """x [B, 3, H, W] in [-1, 1] -> (mean, std) of the latent Gaussian, each [B, 4, H/8, W/8], fp32."""
        moments = self.quant_conv(self.encoder(x.astype(self._dtype()))).astype(ms.float32)
        c = self.latent_channels
        mean, logvar = moments[:, :c], moments[:, c:]
        std = ops.exp(0.5 * ops.clamp(logvar, LOGVAR_RANGE[0], LOGVAR_RANGE[1]))
        return mean, std

    def decode(self, z):
        """z [B, 4, h, w] (unscaled latents) -> image [B, 3, 8h, 8w] in about [-1, 1], fp32."""
        return self.decoder(self.post_quant_conv(z.astype(self._dtype()))).astype(ms.float32)

    def construct(self, x):
        """Reconstruction through the posterior mean (diffusers' forward without sampling)."""
        mean, _ = self.encode(x)
        return self.decode(mean)

    def encode_video(self, x, frames_per_call: int = 1):
        """x [B, 3, T, H, W] -> (mean, std), each [B, 4, T, H/8, W/8]: every frame is encoded on its
        own as an image (OpenSora 1.0/1.1), `frames_per_call` frames at a time to bound memory."""
        b, c, t, h, w = x.shape
        frames = x.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        means, stds = [], []
        for start in range(0, b * t, frames_per_call):
            mean, std = self.encode(frames[start:start + frames_per_call])
            means.append(mean)
            stds.append(std)
        return self._to_video(ops.cat(means, 0), b, t), self._to_video(ops.cat(stds, 0), b, t)

    def decode_video(self, z, frames_per_call: int = 1):
        """z [B, 4, T, h, w] -> video [B, 3, T, 8h, 8w], frame by frame."""
        b, c, t, h, w = z.shape
        frames = z.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        out = [self.decode(frames[s:s + frames_per_call]) for s in range(0, b * t, frames_per_call)]
        return self._to_video(ops.cat(out, 0), b, t)

    @staticmethod
    def _to_video(x, b: int, t: int):
        """[(B*T), C, H, W] -> [B, C, T, H, W]."""
        _, c, h, w = x.shape
        return x.reshape(b, t, c, h, w).transpose(0, 2, 1, 3, 4)


PRESETS = {
    "sd-vae-ft-ema": {},  # the defaults: 83,653,863 parameters
    # the same code at seconds per clip on CPU (tests, the quickstart)
    "tiny": dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8),
}


def build_vae(preset: str = "sd-vae-ft-ema", **overrides) -> AutoencoderKL:
    """The VAE of a preset (declared when called under declare_only())."""
    return AutoencoderKL(**{**PRESETS[preset], **overrides})


def preset_names():
    return sorted(PRESETS)
