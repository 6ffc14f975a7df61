"""Training HunyuanVideo's causal 3D VAE as a vgen family ("hunyuan_vae").

The trained net IS the CausalVAE3D: its parameters sit at the root under the official names
(encoder.*, decoder.*, quant_conv.*, post_quant_conv.*; checkpoint_layouts/hunyuanvideo_vae.txt),
so a checkpoint's model.safetensors is the official VAE layout. With model.loss.gan > 0 the
PatchGAN discriminator is trained too, as `discriminator.*` after the VAE's parameters (and a
frozen view of it, `discriminator_view`, over the same Parameter objects: no names of its own);
those keys are the only extra ones in the checkpoint and `vae_arrays` drops them. LPIPS is not
part of the net: it is frozen, held by the loss cell, and never saved (vgen/objectives/vae_loss.py).

Batches are decoded clips (input_kind "pixels"): `video` [B, 3, 4k+1, H, W] in [-1, 1], the VAE's
sampling noise `vae_noise` [B, C, k+1, H/8, W/8] and the step's `gan_on`. There is no text: the
TextSpec is a stub (dim 0) that asks for none."""
from dataclasses import replace
from typing import Dict

import numpy as np

from ...objectives.vae_loss import VAEObjective
from ..family import Family, LatentSpec, TextSpec
from ..layers.init import declare_only
from ..vae.critics import NLayerDiscriminator, frozen_view, min_disc_size
from .spec import VAE
from .vae import PRESETS, SCALING_FACTOR, CausalVAE3D

DISCRIMINATOR_PREFIX = "discriminator."
NO_TEXT = TextSpec(encoder="none", dim=0, length=0, dropout=0.0)  # VAE training reads no captions


class CausalVAE3DTraining(CausalVAE3D):
    """CausalVAE3D plus, when `disc_layers` is given, the discriminator and its frozen view."""

    def __init__(self, disc_layers: int = 0, **vae_kwargs):
        super().__init__(**vae_kwargs)
        self.discriminator = None
        self.discriminator_view = None
        if disc_layers:
            self.discriminator = NLayerDiscriminator(vae_kwargs.get("out_channels", 3), n_layers=disc_layers)
            self.discriminator_view = frozen_view(self.discriminator)


def build_training_vae(preset: str, disc_layers: int = 0) -> CausalVAE3DTraining:
    if preset not in PRESETS:
        raise KeyError(f"model.preset={preset!r}: unknown HunyuanVideo VAE preset; known: {sorted(PRESETS)}")
    with declare_only():
        return CausalVAE3DTraining(disc_layers, **PRESETS[preset])


def vae_identity(preset: str) -> str:
    """The name the encoder table (models/encoders.py) gives this VAE; its `hunyuan-vae-tiny` is
    narrower than the tiny preset trained here, hence another name for it."""
    return "hunyuan-vae-884-16c" if preset == "884-16c" else f"hunyuan-vae-preset-{preset}"


def vae_arrays(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A checkpoint's model arrays without the discriminator: the official VAE layout."""
    return {k: v for k, v in arrays.items() if not k.startswith(DISCRIMINATOR_PREFIX)}


def check_clip(shape, disc_layers: int = 0) -> None:
    """Clips the causal VAE can reconstruct to their own shape (and the discriminator can judge)."""
    _, _, t, h, w = shape
    problems = []
    if (t - 1) % 4:
        problems.append(f"{t} frames (need 4k+1: 1, 5, 9, 13, 17, ...; set data.num_frames or the bucket frames)")
    if h % 8 or w % 8:
        problems.append(f"{h}x{w} pixels (need multiples of 8; set data.resolution or the buckets)")
    if disc_layers and min(h, w) < min_disc_size(disc_layers):
        problems.append(f"{h}x{w} pixels: the {disc_layers}-layer discriminator needs at least "
                        f"{min_disc_size(disc_layers)} per side (lower model.loss.disc_layers)")
    if problems:
        raise ValueError("hunyuan_vae training clips: " + "; ".join(problems))


def build(cfg) -> Family:
    loss = cfg.loss
    disc_layers = int(loss.disc_layers) if loss.gan > 0 else 0
    objective = VAEObjective(loss.l1, loss.kl, loss.lpips, loss.lpips_weights, loss.gan, loss.gan_start_step)
    check_clip((1, 3, *cfg.input_size), disc_layers)
    net = build_training_vae(cfg.preset, disc_layers)
    latent = LatentSpec(vae_identity(cfg.preset), net.latent_channels, (0, 0, 0), (4, 8, 8), SCALING_FACTOR)
    latent = replace(latent, size=latent.latent_shape(*cfg.input_size)[1:])  # of the default clip

    def check_batch(batch):
        if "video" not in batch:
            raise ValueError("hunyuan_vae trains on decoded clips: use data=video with data.latents=online")
        check_clip(batch["video"].shape, disc_layers)

    return Family(
        name=cfg.name, net=net, objective=objective, text=NO_TEXT, latent=latent, spec=VAE,
        input_kind="pixels",
        check_batch=check_batch,
        # LDM trains the discriminator with Adam, no weight decay; it also keeps it at its init until gan_on
        no_decay_patterns=("embedding", "pos_embed", "scale_shift_table", DISCRIMINATOR_PREFIX),
        init_only=(DISCRIMINATOR_PREFIX,),  # fine-tuning the official VAE starts a fresh discriminator
    )
