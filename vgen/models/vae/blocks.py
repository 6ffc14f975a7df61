"""The diffusers autoencoder skeleton both VAEs share (the image AutoencoderKL and the causal 3D
VAE): resnet blocks, the mid block, down / up block stacks, encoder and decoder.

Each VAE supplies its pieces: `conv(in_channels, out_channels, kernel)` (a same-size convolution),
`attention(channels, groups, eps)` and, per block, its resampler (or None). Attribute names and
registration order are diffusers' state dict."""
from mindspore import nn, ops

from ..layers.conv import GroupNorm


class ResnetBlock(nn.Cell):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus a 1x1 `conv_shortcut` when channels change."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, conv, eps: float = 1e-6):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps)
        self.conv1 = conv(in_channels, out_channels, 3)
        self.norm2 = GroupNorm(groups, out_channels, eps)
        self.conv2 = conv(out_channels, out_channels, 3)
        self.conv_shortcut = conv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def construct(self, x):
        h = self.conv1(ops.silu(self.norm1(x)))
        h = self.conv2(ops.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class MidBlock(nn.Cell):
    """resnet -> attention -> resnet; `attentions` is registered before `resnets` (state-dict order)."""

    def __init__(self, channels: int, groups: int, conv, attention, eps: float = 1e-6):
        super().__init__()
        self.attentions = nn.CellList([attention(channels, groups, eps)])
        self.resnets = nn.CellList([ResnetBlock(channels, channels, groups, conv, eps),
                                    ResnetBlock(channels, channels, groups, conv, eps)])

    def construct(self, x):
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


def _resnets(in_channels, out_channels, num_layers, groups, conv):
    return nn.CellList([ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups, conv)
                        for i in range(num_layers)])


class DownEncoderBlock(nn.Cell):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, conv, downsampler=None):
        super().__init__()
        self.resnets = _resnets(in_channels, out_channels, num_layers, groups, conv)
        self.downsamplers = nn.CellList([downsampler]) if downsampler is not None else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock(nn.Cell):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, conv, upsampler=None):
        super().__init__()
        self.resnets = _resnets(in_channels, out_channels, num_layers, groups, conv)
        self.upsamplers = nn.CellList([upsampler]) if upsampler is not None else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Cell):
    """Pixels -> 2*latent moments (mean | logvar). `downsampler(i, channels)`: block i's resampler or None."""

    def __init__(self, in_channels, latent_channels, block_out_channels, layers_per_block, groups, conv, attention,
                 downsampler):
        super().__init__()
        chans = list(block_out_channels)
        self.conv_in = conv(in_channels, chans[0], 3)
        self.down_blocks = nn.CellList([
            DownEncoderBlock(chans[max(i - 1, 0)], chans[i], layers_per_block, groups, conv, downsampler(i, chans[i]))
            for i in range(len(chans))])
        self.mid_block = MidBlock(chans[-1], groups, conv, attention)
        self.conv_norm_out = GroupNorm(groups, chans[-1], 1e-6)
        self.conv_out = conv(chans[-1], 2 * latent_channels, 3)

    def construct(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(ops.silu(self.conv_norm_out(x)))


class Decoder(nn.Cell):
    """Latent -> pixels; up blocks run the channels in reverse with one more resnet each and are
    registered before mid_block, as in diffusers (state-dict order). `upsampler(i, channels)`:
    up block i's resampler or None."""

    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block, groups, conv, attention,
                 upsampler):
        super().__init__()
        rev = list(reversed(block_out_channels))
        self.conv_in = conv(latent_channels, rev[0], 3)
        self.up_blocks = nn.CellList([
            UpDecoderBlock(rev[max(i - 1, 0)], rev[i], layers_per_block + 1, groups, conv, upsampler(i, rev[i]))
            for i in range(len(rev))])
        self.mid_block = MidBlock(rev[0], groups, conv, attention)
        self.conv_norm_out = GroupNorm(groups, rev[-1], 1e-6)
        self.conv_out = conv(rev[-1], out_channels, 3)

    def construct(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(ops.silu(self.conv_norm_out(x)))
