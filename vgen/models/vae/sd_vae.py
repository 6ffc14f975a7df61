"""The Stable Diffusion image VAE (diffusers AutoencoderKL, sd-vae-ft-ema), frozen, used frame by
frame by OpenSora 1.0/1.1 (and ModelScope) to turn video frames into 4-channel latents at 1/8 size.

Parameter names, shapes and order are exactly diffusers' state dict
(checkpoint_layouts/sd_vae_ft_ema_diffusers.txt). The caller scales latents by SCALING_FACTOR.
"""
import mindspore as ms
from mindspore import nn, ops

from ..layers.attention import AttentionCore, merge_heads, split_heads
from ..layers.conv import Conv2d, GroupNorm
from ..layers.init import new_param, ones, uniform_fan_in, zeros
from ..layers.linear import torch_default_linear

SCALING_FACTOR = 0.18215  # latents fed to the DiT are mean * SCALING_FACTOR (applied by the caller)
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps logvar to this


# ---- diffusers building blocks -----------------------------------------------------------------

class ResnetBlock2D(nn.Cell):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus a 1x1 `conv_shortcut` when channels change."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = GroupNorm(groups, out_channels, eps)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def construct(self, x):
        h = self.conv1(ops.silu(self.norm1(x)))
        h = self.conv2(ops.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


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


class UNetMidBlock2D(nn.Cell):
    """resnet -> attention -> resnet; `attentions` is registered before `resnets` (state-dict order)."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.attentions = nn.CellList([VAEAttention(channels, groups, eps)])
        self.resnets = nn.CellList([ResnetBlock2D(channels, channels, groups, eps),
                                    ResnetBlock2D(channels, channels, groups, eps)])

    def construct(self, x):
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class DownEncoderBlock2D(nn.Cell):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_downsample: bool):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups)
                                    for i in range(num_layers)])
        self.downsamplers = nn.CellList([Downsample2D(out_channels)]) if add_downsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Cell):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_upsample: bool):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups)
                                    for i in range(num_layers)])
        self.upsamplers = nn.CellList([Upsample2D(out_channels)]) if add_upsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Cell):
    """Image -> 2*latent moments (mean and logvar) at 1/2^(len(blocks)-1) resolution."""

    def __init__(self, in_channels, latent_channels, block_out_channels, layers_per_block, groups):
        super().__init__()
        chans = list(block_out_channels)
        self.conv_in = Conv2d(in_channels, chans[0], 3, padding=1)
        self.down_blocks = nn.CellList([
            DownEncoderBlock2D(chans[max(i - 1, 0)], chans[i], layers_per_block, groups,
                               add_downsample=i < len(chans) - 1)
            for i in range(len(chans))])
        self.mid_block = UNetMidBlock2D(chans[-1], groups)
        self.conv_norm_out = GroupNorm(groups, chans[-1], 1e-6)
        self.conv_out = Conv2d(chans[-1], 2 * latent_channels, 3, padding=1)

    def construct(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(ops.silu(self.conv_norm_out(x)))


class Decoder(nn.Cell):
    """Latent -> image; up blocks run the channels in reverse with one more resnet each."""

    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block, groups):
        super().__init__()
        rev = list(reversed(block_out_channels))
        self.conv_in = Conv2d(latent_channels, rev[0], 3, padding=1)
        # registered before mid_block, as in diffusers (state-dict order)
        self.up_blocks = nn.CellList([
            UpDecoderBlock2D(rev[max(i - 1, 0)], rev[i], layers_per_block + 1, groups,
                             add_upsample=i < len(rev) - 1)
            for i in range(len(rev))])
        self.mid_block = UNetMidBlock2D(rev[0], groups)
        self.conv_norm_out = GroupNorm(groups, rev[-1], 1e-6)
        self.conv_out = Conv2d(rev[-1], out_channels, 3, padding=1)

    def construct(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(ops.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Cell):
    """diffusers AutoencoderKL; the defaults are sd-vae-ft-ema (83,653,863 parameters)."""

    scaling_factor = SCALING_FACTOR

    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 4,
                 block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2, norm_num_groups: int = 32):
        super().__init__()
        self.latent_channels = latent_channels
        self.downscale = 2 ** (len(block_out_channels) - 1)
        self.encoder = Encoder(in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups)
        self.decoder = Decoder(latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups)
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
