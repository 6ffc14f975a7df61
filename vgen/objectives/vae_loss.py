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

Discriminator (vgen/models/vae/critics.py): LDM's NLayerDiscriminator (pix2pix PatchGAN, 4x4 convs, LeakyReLU 0.2) applied to
every frame on its own (frames folded into the batch): it judges per-frame realism at any clip
length, including 1-frame clips; temporal consistency is left to the pixel and KL terms. LDM's
BatchNorm is replaced by GroupNorm (32 groups): each sample's loss then depends on that sample
only (data-parallel and accumulation give the numbers of one large batch) and there are no
running statistics to save. Frames need at least 3 * 2**disc_layers pixels per side.

gan_start_step from the step: the data pipeline calls objective.draw(rngs, latent_shape, step).

LPIPS (same module): torchvision's VGG16 `features` (conv layers 0..28, ReLU taps after 3, 8, 15, 22, 29) and
the lpips package's linear heads `lin{k}.model.1.weight` [1, C, 1, 1], on inputs in [-1, 1]
scaled as lpips does ((x - shift) / scale); features are unit-normalised over channels, squared
differences weighted by the heads, averaged over space and summed over the 5 taps. Frozen
(requires_grad False) and held by the loss cell, not the net: never trained, never saved."""
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..models.vae.critics import LPIPS, build_lpips, frames_to_batch

LOGVAR_RANGE = (-30.0, 20.0)  # DiagonalGaussianDistribution's clamp, as the VAE's to_gaussian


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


# ---- the loss cell and the objective ------------------------------------------------------------

class VAETrainingLoss(nn.Cell):
    """A batch's named fields video [B, 3, T, H, W] in [-1, 1], vae_noise [B, C, t, h, w], gan_on [B] -> loss [B].

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

    def construct(self, batch):
        video, vae_noise, gan_on = batch["video"], batch["vae_noise"], batch["gan_on"]
        l1, kl, perceptual, gen, hinge = self.terms(video, vae_noise)
        loss = self.l1 * l1 + self.kl * kl
        if self.lpips is not None:
            loss = loss + self.lpips_weight * perceptual
        if self.adversarial:
            loss = loss + gan_on.astype(ms.float32) * (self.gan * gen + hinge)
        return loss


class VAEObjective:
    """Loss weights and the adversarial schedule of autoencoder training (see the module doc)."""

    fields = ("video", "vae_noise", "gan_on")  # what its loss cell reads of a batch

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

    def draw(self, rngs, latent_shape, step: int) -> dict:
        """{"gan_on": [B] float32}, the same value for every sample of the step."""
        b = len(next(iter(rngs.values())))
        return {"gan_on": np.full(b, self.gan_on(int(step)), np.float32)}

    def loss_cell(self, net: nn.Cell, denoise=None, frame_masked: bool = False,
                  lpips: Optional[LPIPS] = None) -> VAETrainingLoss:
        if self.lpips > 0 and lpips is None:
            lpips = build_lpips(self.lpips_weights)
        return VAETrainingLoss(net, l1=self.l1, kl=self.kl, lpips_weight=self.lpips, gan=self.gan, lpips=lpips)
