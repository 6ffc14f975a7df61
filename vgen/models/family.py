"""The family contract: everything the trainer needs from a model family, and nothing more."""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from mindspore import nn


@dataclass(frozen=True)
class TextSpec:
    """Cached text-encoder outputs the denoiser reads."""

    encoder: str  # identity of the text encoder that produces them (checked against cache manifests)
    dim: int
    length: int
    dropout: float  # default caption-dropout probability during training
    pooled_dim: int = 0  # a pooled text vector per caption (`text_pooled`, e.g. CLIP), 0 = none
    pooled_encoder: str = ""  # identity of the encoder of the pooled vector (checked against cache manifests)
    # caption dropout: "model" passes flags to the model (a learned null caption inside it);
    # "empty" replaces the text inputs by the cached empty-prompt embedding
    drop_to: str = "model"


@dataclass(frozen=True)
class LatentSpec:
    """Latents the denoiser reads, as the family's VAE writes them."""

    vae: str
    channels: int
    size: Tuple[int, int, int]  # default training latent (T, H, W)
    compression: Tuple[int, int, int]  # VAE (t, h, w) compression
    scale: float  # latent = (vae latent - shift) * scale
    shift: float = 0.0

    def latent_shape(self, frames: int, height: int, width: int) -> Tuple[int, int, int, int]:
        """(C, t, h, w) of the latent of a clip; a temporal compression c > 1 is causal: the first
        frame alone, then groups of c ((frames - 1) / c + 1 latent frames)."""
        ct, ch, cw = self.compression
        t = frames if ct == 1 else (frames - 1) // ct + 1
        return self.channels, t, height // ch, width // cw


@dataclass
class Family:
    name: str
    net: nn.Cell  # the denoiser, with the official parameter names
    objective: object  # draw(rngs, latent_shape) -> dict; loss_cell(net) -> Cell(x0, noise, t, *cond) -> [B]
    text: TextSpec
    latent: LatentSpec
    # builds the denoiser's conditioning inputs (after x_t and t) from a host batch
    cond_inputs: Callable[[Dict[str, np.ndarray]], Tuple[np.ndarray, ...]]
    blocks: Callable[[], List[nn.Cell]]  # repeated blocks: units of recompute and ZeRO-3 gathering
    block_kinds: Callable[[], Dict[str, List[nn.Cell]]] = None  # the blocks by kind, when there are several
    sp_plan: Callable = None  # (net, sp_group) -> places the split points and Ulysses cores
    no_decay_patterns: Sequence[str] = field(default_factory=lambda: ("embedding", "pos_embed", "scale_shift_table"))
    extra_streams: Sequence[str] = ()  # keyed random streams the family draws in cond_inputs
    loss_cell: Callable = None  # net -> Cell(*inputs) -> [B]; default: objective.loss_cell(net)
    # what the family trains on: "latent" (denoisers: clips are VAE-encoded, online or cached) or
    # "pixels" (autoencoders: the decoded clips themselves)
    input_kind: str = "latent"
    lora_targets: Sequence[str] = ()  # default LoRA targets (module-path patterns)
    # name prefixes a pretrained file may lack (parts that start from their init, e.g. a discriminator)
    init_only: Sequence[str] = ()
    # batch -> the loss cell's inputs; default (x0, noise, t, *cond_inputs(batch))
    inputs: Callable[[Dict[str, np.ndarray]], Tuple[np.ndarray, ...]] = None

    def make_loss_cell(self, net):
        return self.loss_cell(net) if self.loss_cell is not None else self.objective.loss_cell(net)

    def model_inputs(self, batch) -> tuple:
        if self.inputs is not None:
            return tuple(self.inputs(batch))
        return (batch["latent"], batch["noise"], batch["t"]) + tuple(self.cond_inputs(batch))

    def no_decay(self, name: str, ndim: int) -> bool:
        """Biases, norms (1-D) and embeddings are excluded from weight decay."""
        return ndim < 2 or any(p in name for p in self.no_decay_patterns)
