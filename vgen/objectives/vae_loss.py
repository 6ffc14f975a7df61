"""The autoencoder objective: reconstruction, KL, perceptual and adversarial terms in ONE loss,
differentiated once and stepped by the trainer's one AdamW.

Per sample, with N = 3*T*H*W pixel values of the clip x and x' = decode(mean + std * noise):

    loss = l1 * mean|x - x'|                                  pixel L1
         + kl * sum_latent KL(q(z|x) || N(0, I)) / N          KL, summed over the latent, per pixel value
         + lpips * mean_frames LPIPS(x_t, x'_t)               perceptual, on every frame
         + gan_on * (gan * -mean D~(x')                       generator's adversarial term
                     + 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(sg(x')))))   discriminator hinge

Normalisation. LDM's LPIPSWithDiscriminator sums the pixel (L1 + perceptual) loss and the KL
over their elements and divides by the batch only. Dividing every term by the clip's pixel
count N gives the same balance (so LDM's kl_weight 1e-6 means the same here) with a loss of
order one. LDM's learned output log-variance is left at its initial 0 (no extra parameter), and
its adaptive adversarial weight (a ratio of gradient norms at the decoder's last layer, which
needs a gradient inside the loss) is replaced by the fixed weight `gan`.

GAN in one step. The discriminator D is part of the trained net. D~ is a *frozen view* of D: the
same Parameter objects, read through stop_gradient by layers that differ only in `read`
(`frozen_view`). So the generator's term moves the autoencoder only, and the hinge (which sees x
and stop_gradient(x')) moves D only; one loss and one AdamW give the two updates LDM makes with
two optimizers. `gan_on` (0/1 per sample, the same for a whole step) switches both adversarial
terms on after `gan_start_step` updates, as LDM's disc_start; before that D gets zero gradients
(and, excluded from weight decay by the family, stays exactly at its initialisation).

Discriminator: LDM's NLayerDiscriminator (pix2pix PatchGAN, 4x4 convs, LeakyReLU 0.2) applied to
every frame on its own (frames folded into the batch): it judges per-frame realism at any clip
length, including 1-frame clips; temporal consistency is left to the pixel and KL terms. LDM's
BatchNorm is replaced by GroupNorm (32 groups): each sample's loss then depends on that sample
only (data-parallel and accumulation give the numbers of one large batch) and there are no
running statistics to save. Frames need at least 3 * 2**disc_layers pixels per side.

gan_start_step from the step. The trainer calls objective.draw(rngs, latent_shape) with
generators keyed by (seed, step, sample index, stream) (vgen/rng.py) and no step; draw reads the
step back from the key (`step_of`), or takes it from an explicit `step=` argument.

LPIPS: torchvision's VGG16 `features` (conv layers 0..28, ReLU taps after 3, 8, 15, 22, 29) and
the lpips package's linear heads `lin{k}.model.1.weight` [1, C, 1, 1], on inputs in [-1, 1]
scaled as lpips does ((x - shift) / scale); features are unit-normalised over channels, squared
differences weighted by the heads, averaged over space and summed over the 5 taps. Frozen
(requires_grad False) and held by the loss cell, not the net: never trained, never saved."""
from typing import Dict, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..models.layers.conv import Conv2d, GroupNorm
from ..models.layers.init import declare_only, normal
from ..models.layers.sharding import ShardableLayer
from ..rng import STREAMS

LOGVAR_RANGE = (-30.0, 20.0)  # DiagonalGaussianDistribution's clamp, as the VAE's to_gaussian
LEAKY_SLOPE = 0.2
DISC_GROUPS = 32


# ---- the terms, per sample ------------------------------------------------------------------------

def per_sample_mean(x):
    return x.reshape(x.shape[0], -1).mean(-1)


def l1_term(x, rec):
    return per_sample_mean(ops.abs(x - rec))


def kl_term(mean, logvar, pixels: int):
    """sum over the latent of KL(N(mean, exp(logvar)) || N(0, I)), divided by `pixels`."""
    kl = 0.5 * (mean * mean + ops.exp(logvar) - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(-1) / pixels


def hinge_d_term(logits_real, logits_fake):
    """LDM's hinge_d_loss per sample: 0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x')))."""
    return 0.5 * (ops.relu(1.0 - logits_real).mean(-1) + ops.relu(1.0 + logits_fake).mean(-1))


def generator_term(logits_fake):
    return -logits_fake.mean(-1)


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
    from ..models.layers.init import materialize, named_params
    from ..models.weights import load_arrays

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


# ---- the loss cell and the objective ------------------------------------------------------------

class VAETrainingLoss(nn.Cell):
    """(video [B, 3, T, H, W] in [-1, 1], vae_noise [B, C, t, h, w], gan_on [B]) -> loss [B].

    `net` is the autoencoder (moments / to_gaussian / decode, latent_channels) with, when gan > 0,
    `discriminator` and its frozen view `discriminator_view`."""

    def __init__(self, net: nn.Cell, *, l1: float, kl: float, lpips_weight: float = 0.0, gan: float = 0.0,
                 lpips: Optional[LPIPS] = None):
        super().__init__()
        self.net = net
        self.l1, self.kl, self.lpips_weight, self.gan = float(l1), float(kl), float(lpips_weight), float(gan)
        self.lpips = lpips if self.lpips_weight > 0 else None
        if self.lpips_weight > 0 and lpips is None:
            raise ValueError("an LPIPS weight > 0 needs the LPIPS network (model.loss.lpips_weights)")
        self.adversarial = self.gan > 0
        if self.adversarial and getattr(net, "discriminator", None) is None:
            raise ValueError("gan > 0 needs a net with a discriminator and its frozen view")

    def terms(self, video, vae_noise):
        """The unweighted per-sample terms: (l1, kl, lpips, generator, hinge); absent ones are 0."""
        net = self.net
        c = net.latent_channels
        moments = net.moments(video)
        mean, std = net.to_gaussian(moments)
        logvar = ops.clamp(moments[:, c:], LOGVAR_RANGE[0], LOGVAR_RANGE[1])
        rec = net.decode(mean + std * vae_noise)
        x = video.astype(ms.float32)
        zero = ops.zeros((x.shape[0],), ms.float32)
        l1 = l1_term(x, rec)
        kl = kl_term(mean, logvar, x[0].size)
        perceptual = zero
        if self.lpips is not None:
            b, t = x.shape[0], x.shape[2]
            perceptual = self.lpips(frames_to_batch(x), frames_to_batch(rec)).reshape(b, t).mean(-1)
        gen, hinge = zero, zero
        if self.adversarial:
            gen = generator_term(net.discriminator_view(rec))
            hinge = hinge_d_term(net.discriminator(x), net.discriminator(ops.stop_gradient(rec)))
        return l1, kl, perceptual, gen, hinge

    def construct(self, video, vae_noise, gan_on):
        l1, kl, perceptual, gen, hinge = self.terms(video, vae_noise)
        loss = self.l1 * l1 + self.kl * kl
        if self.lpips is not None:
            loss = loss + self.lpips_weight * perceptual
        if self.adversarial:
            loss = loss + gan_on.astype(ms.float32) * (self.gan * gen + hinge)
        return loss


def step_of(rngs: Dict[str, list]) -> int:
    """The training step a batch's keyed generators were drawn for (vgen.rng.keyed_rng keys each
    generator by [seed, step, sample index, stream id])."""
    for stream, gens in rngs.items():
        if not gens:
            continue
        seed_seq = getattr(gens[0].bit_generator, "seed_seq", None)
        entropy = getattr(seed_seq, "entropy", None)
        key = list(entropy) if isinstance(entropy, (list, tuple, np.ndarray)) else [entropy]
        if len(key) != 4 or STREAMS.get(stream) != key[3]:
            raise ValueError(f"generator of stream {stream!r} is keyed {key}, not [seed, step, index, stream] as "
                             "vgen.rng.keyed_rng keys it: pass the step to draw(..., step=) instead")
        return int(key[1])
    raise ValueError("no keyed generators to read the step from")


class VAEObjective:
    """Loss weights and the adversarial schedule of autoencoder training (see the module doc)."""

    def __init__(self, l1: float = 1.0, kl: float = 1e-6, lpips: float = 0.0, lpips_weights: Optional[str] = None,
                 gan: float = 0.0, gan_start_step: int = 0):
        for name, value in (("l1", l1), ("kl", kl), ("lpips", lpips), ("gan", gan), ("gan_start_step", gan_start_step)):
            if value < 0:
                raise ValueError(f"model.loss.{name}={value}: must be >= 0")
        if lpips > 0 and not lpips_weights:
            raise ValueError("model.loss.lpips > 0 needs model.loss.lpips_weights: a safetensors file with the VGG16 "
                             "`features.*` and lpips `lin{0..4}.model.1.weight` weights")
        self.l1, self.kl, self.lpips, self.gan = float(l1), float(kl), float(lpips), float(gan)
        self.lpips_weights, self.gan_start_step = lpips_weights, int(gan_start_step)

    def gan_on(self, step: int) -> float:
        """1 from the update with 0-based index gan_start_step on (reported step gan_start_step + 1)."""
        return 1.0 if self.gan > 0 and step >= self.gan_start_step else 0.0

    def draw(self, rngs, latent_shape, step: Optional[int] = None) -> dict:
        """{"gan_on": [B] float32}, the same value for every sample of the step."""
        b = len(next(iter(rngs.values())))
        on = self.gan_on(step_of(rngs) if step is None else int(step))
        return {"gan_on": np.full(b, on, np.float32)}

    def loss_cell(self, net: nn.Cell, lpips: Optional[LPIPS] = None) -> VAETrainingLoss:
        if self.lpips > 0 and lpips is None:
            lpips = build_lpips(self.lpips_weights)
        return VAETrainingLoss(net, l1=self.l1, kl=self.kl, lpips_weight=self.lpips, gan=self.gan, lpips=lpips)
