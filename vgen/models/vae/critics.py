"""Networks that judge reconstructions in autoencoder training: LDM's PatchGAN discriminator (with
GroupNorm, per frame) and its frozen view, and LPIPS (VGG16 features + lpips' linear heads). See
vgen/objectives/vae_loss.py for how the loss uses them."""
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.conv import Conv2d, GroupNorm
from ..layers.init import declare_only, materialize, named_params, normal
from ..layers.sharding import ShardableLayer
from ..weights import load_arrays

LEAKY_SLOPE = 0.2
DISC_GROUPS = 32


def frames_to_batch(video):
    """[B, C, T, H, W] -> [B*T, C, H, W]."""
    b, c, t, h, w = video.shape
    return video.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


# ---- the discriminator and its frozen view ----------------------------------------------------------

class LeakyReLU(nn.Cell):
    def construct(self, x):
        return ops.maximum(x, x * LEAKY_SLOPE)


class FrozenConv2d(Conv2d):
    """A Conv2d whose parameters arrive through stop_gradient (after any ZeRO-3 gather)."""

    def read(self, name, p):
        value = ShardableLayer.read(self, name, p)
        return None if value is None else ops.stop_gradient(value)


class FrozenGroupNorm(GroupNorm):
    def read(self, name, p):
        value = ShardableLayer.read(self, name, p)
        return None if value is None else ops.stop_gradient(value)


class NLayerDiscriminator(nn.Cell):
    """LDM/pix2pix PatchGAN with GroupNorm, applied per frame: video [B, C, T, H, W] -> logits
    [B, T * h * w]. Layer indices (`main.{i}`) as LDM's nn.Sequential: conv 4x4/2, LReLU, then
    n_layers - 1 times [conv 4x4/2 (no bias), norm, LReLU], [conv 4x4/1, norm, LReLU], conv 4x4/1 -> 1."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, frozen: bool = False):
        super().__init__()
        conv, norm = (FrozenConv2d, FrozenGroupNorm) if frozen else (Conv2d, GroupNorm)
        layers = [conv(in_channels, ndf, 4, 2, padding=1), LeakyReLU()]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [conv(ndf * prev, ndf * mult, 4, stride, padding=1, bias=False),
                       norm(DISC_GROUPS, ndf * mult, 1e-5), LeakyReLU()]
        layers.append(conv(ndf * mult, 1, 4, 1, padding=1))
        for layer in layers:
            if isinstance(layer, Conv2d):
                layer.weight.init_fn = normal(0.02)  # LDM's weights_init (biases keep PyTorch's default)
        self.main = nn.CellList(layers)
        self.n_layers = n_layers

    def construct(self, video):
        b = video.shape[0]
        x = frames_to_batch(video).astype(self.main[0].weight.dtype)
        for layer in self.main:
            x = layer(x)
        return x.astype(ms.float32).reshape(b, -1)


def min_disc_size(n_layers: int) -> int:
    """Smallest frame side the discriminator maps to at least one logit: n_layers halvings, then
    two 4x4 stride-1 convs with padding 1 (each takes one off)."""
    return 3 * 2 ** n_layers


def frozen_view(disc: NLayerDiscriminator) -> NLayerDiscriminator:
    """A discriminator over the same Parameter objects, read through stop_gradient. Declared with
    its own (never materialised) parameters, which are then replaced by `disc`'s."""
    with declare_only():
        view = NLayerDiscriminator(disc.main[0].weight.shape[1], disc.main[0].weight.shape[0], disc.n_layers,
                                   frozen=True)
    for mine, theirs in zip(view.main, disc.main):
        if isinstance(theirs, ShardableLayer):
            for attr in theirs.shardable:
                if getattr(theirs, attr, None) is not None:
                    setattr(mine, attr, getattr(theirs, attr))
    return view


# ---- LPIPS ---------------------------------------------------------------------------------------------

VGG16_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
               (28, 512, 512))  # (torchvision features index, in, out): 3x3, padding 1
VGG16_POOLS = (4, 9, 16, 23)
LPIPS_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class ReLU(nn.Cell):
    def construct(self, x):
        return ops.relu(x)


class MaxPool2x2(nn.Cell):
    """torch MaxPool2d(2, 2): floor mode (an odd last row / column is dropped)."""

    def construct(self, x):
        n, c, h, w = x.shape
        x = x[:, :, :h // 2 * 2, :w // 2 * 2]
        return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=5).max(axis=3)


class Placeholder(nn.Cell):
    """Stands for lpips' Dropout (eval mode), so the head's conv is `model.1`."""

    def construct(self, x):
        return x


class LinearHead(nn.Cell):
    """lpips NetLinLayer: `model` = [Dropout, Conv2d(C, 1, 1, bias=False)]."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.CellList([Placeholder(), Conv2d(channels, 1, 1, bias=False)])

    def construct(self, x):
        return self.model[1](x)


def unit_normalize(x, eps: float = 1e-10):
    return x / (ops.sqrt((x * x).sum(1, keepdims=True)) + eps)


class LPIPS(nn.Cell):
    """LPIPS (VGG, v0.1) distance between two image batches [N, 3, H, W] in [-1, 1] -> [N]."""

    def __init__(self):
        super().__init__()
        convs = {i: (cin, cout) for i, cin, cout in VGG16_CONVS}
        layers = []
        for i in range(LPIPS_TAPS[-1] + 1):
            if i in convs:
                layers.append(Conv2d(convs[i][0], convs[i][1], 3, padding=1))
            elif i in VGG16_POOLS:
                layers.append(MaxPool2x2())
            else:
                layers.append(ReLU())
        self.features = nn.CellList(layers)
        self.lin0 = LinearHead(LPIPS_CHANNELS[0])
        self.lin1 = LinearHead(LPIPS_CHANNELS[1])
        self.lin2 = LinearHead(LPIPS_CHANNELS[2])
        self.lin3 = LinearHead(LPIPS_CHANNELS[3])
        self.lin4 = LinearHead(LPIPS_CHANNELS[4])
        self.shift = Tensor(np.array(LPIPS_SHIFT, np.float32).reshape(1, 3, 1, 1))
        self.scale = Tensor(np.array(LPIPS_SCALE, np.float32).reshape(1, 3, 1, 1))

    def taps(self, x):
        h = (x.astype(ms.float32) - self.shift) / self.scale
        out = []
        for i in range(LPIPS_TAPS[-1] + 1):
            h = self.features[i](h)
            if i in LPIPS_TAPS:
                out.append(h)
        return out

    def construct(self, x0, x1):
        n = x0.shape[0]
        feats = self.taps(ops.cat([x0, x1], 0))  # one pass over both
        heads = (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)
        total = 0.0
        for k in range(len(LPIPS_TAPS)):
            f = unit_normalize(feats[k])
            d = (f[:n] - f[n:]) ** 2
            total = total + heads[k](d).mean(axis=(1, 2, 3))
        return total


def build_lpips(path: Optional[str] = None, seed: int = 0) -> LPIPS:
    """A frozen LPIPS from a safetensors file with `features.{i}.weight/bias` (torchvision VGG16)
    and `lin{k}.model.1.weight` (other keys, e.g. a VGG classifier, are ignored), or from seeded
    random weights when path is None (tests)."""
    with declare_only():
        net = LPIPS()
    materialize(net, seed)
    if path is not None:
        from safetensors.numpy import load_file

        names = {n for n, _ in named_params(net)}
        arrays = {k: v for k, v in load_file(path).items() if k in names}
        load_arrays(net, arrays, path, strict=True)
    for p in net.get_parameters():
        p.requires_grad = False
    net.set_train(False)
    return net
