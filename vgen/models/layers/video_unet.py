"""What the latent-diffusion video UNets (VideoCrafter2's lvdm, ModelScope's diffusers UNet3D)
share: frames as images and back, the temporal conv block (ModelScope's TemporalConvLayer, which
lvdm adapted: the same conv1..conv4 names), and attention over each pixel's frames."""
from mindspore import nn

from .conv import Conv3d, GroupNorm
from .linear import SiLU

GROUPS = 32


def frames_to_video(x, frames: int):
    """[(B T), C, H, W] -> [B, C, T, H, W]."""
    bt, c, h, w = x.shape
    return x.reshape(bt // frames, frames, c, h, w).transpose(0, 2, 1, 3, 4)


def video_to_frames(x):
    """[B, C, T, H, W] -> [(B T), C, H, W]."""
    b, c, t, h, w = x.shape
    return x.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


class Identity(nn.Cell):
    """A parameterless place in a numbered sequence (the official SiLU / Dropout entries)."""

    def construct(self, x):
        return x


def sequence(*layers) -> nn.SequentialCell:
    return nn.SequentialCell(list(layers))


class TimeConv(Conv3d):
    """Conv3d with kernel (3, 1, 1) and padding (1, 0, 0): a convolution over the frames only."""

    def __init__(self, in_channels: int, out_channels: int, zero: bool = False):
        super().__init__(in_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), zero=zero)


class TemporalConvBlock(nn.Cell):
    """Four GroupNorm-SiLU-TimeConv stages and the input added back (the last conv starts at zero,
    so the block starts as the identity). [B, C, T, H, W]."""

    def __init__(self, channels: int, groups: int = GROUPS):
        super().__init__()
        self.conv1 = sequence(GroupNorm(groups, channels, 1e-5), SiLU(), TimeConv(channels, channels))
        self.conv2 = sequence(GroupNorm(groups, channels, 1e-5), SiLU(), Identity(), TimeConv(channels, channels))
        self.conv3 = sequence(GroupNorm(groups, channels, 1e-5), SiLU(), Identity(), TimeConv(channels, channels))
        self.conv4 = sequence(GroupNorm(groups, channels, 1e-5), SiLU(), Identity(),
                              TimeConv(channels, channels, zero=True))

    def construct(self, x):
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


def attend_over_frames(x, frames: int, norm, proj_in, blocks, proj_out):
    """A temporal transformer's forward on [(B T), C, H, W]: GroupNorm over the whole clip (its
    statistics span all frames), then per pixel the blocks over its T frames, + the input."""
    bt, c, h, w = x.shape
    b = bt // frames
    video = norm(frames_to_video(x, frames))  # [B, C, T, H, W]
    tokens = proj_in(video.transpose(0, 3, 4, 2, 1).reshape(b * h * w, frames, c))
    for block in blocks:
        tokens = block(tokens)
    out = proj_out(tokens).reshape(b, h, w, frames, c).transpose(0, 3, 4, 1, 2)  # [B, T, C, H, W]
    return out.reshape(bt, c, h, w) + x
