"""Frozen encoders by name: the text encoders and VAEs the cache tools and online training run.

`model.text_encoder` and `model.vae` name one of these and point at weights the user supplies
(safetensors in the official layout). The tiny variants exist for tests and the CPU quickstart:
without weights they initialise from a seed, and their identity says so, so a cache they write
is never taken for one made by the real encoder."""
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

from mindspore import nn

from .layers.init import declare_only, materialize
from .weights import WeightsError, load_safetensors


@dataclass(frozen=True)
class TextEncoderSpec:
    build: Callable[[], nn.Cell]
    dim: int
    tokenizer: str = "t5"  # t5 (sentencepiece / tokenizers files)


@dataclass(frozen=True)
class VAESpec:
    build: Callable[[], nn.Cell]
    channels: int
    compression: Tuple[int, int, int]  # (t, h, w)
    scale: float
    shift: float = 0.0


def _t5(name):
    def build():
        from .text.t5 import T5Encoder, t5_config

        return T5Encoder(**t5_config(name))

    return build


def _sd_vae(**kw):
    def build():
        from .vae.sd_vae import AutoencoderKL

        return AutoencoderKL(**kw)

    return build


TEXT_ENCODERS = {
    "t5-v1_1-xxl": TextEncoderSpec(_t5("t5-v1_1-xxl"), 4096),
    "t5-tiny": TextEncoderSpec(_t5("tiny"), 32),
}
VAES = {
    "sd-vae-ft-ema": VAESpec(_sd_vae(), 4, (1, 8, 8), 0.18215),
    "sd-vae-tiny": VAESpec(_sd_vae(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8),
                           4, (1, 8, 8), 0.18215),
}


def _lookup(table, kind, name):
    if name not in table:
        raise KeyError(f"model.{kind}.name={name!r} is unknown; known: {sorted(table)}")
    return table[name]


def text_encoder_spec(name: str) -> TextEncoderSpec:
    return _lookup(TEXT_ENCODERS, "text_encoder", name)


def vae_spec(name: str) -> VAESpec:
    return _lookup(VAES, "vae", name)


def weights_id(path: Optional[str], name: str, seed: int = 0) -> str:
    """Identity of an encoder's weights for cache manifests: sha256 of the file, or the seed of
    a random initialisation (tiny encoders without weights)."""
    if not path:
        return f"random-init:{name}:seed{seed}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _weights_file(path: str, what: str) -> str:
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise WeightsError(f"{what} weights not found at {path} (a .safetensors file, or a directory with "
                           f"model.safetensors)")
    return str(p)


def build_frozen(build: Callable[[], nn.Cell], name: str, path: Optional[str], seed: int = 0, what: str = "encoder"):
    """The encoder with its weights (strict), or seeded random weights for a tiny one; frozen."""
    with declare_only():
        net = build()
    materialize(net, seed)
    if path:
        load_safetensors(net, _weights_file(path, what), strict=True)
    elif not name.endswith("-tiny"):
        raise WeightsError(f"{what} {name} needs its weights: set its `path` to the converted safetensors")
    for p in net.get_parameters():
        p.requires_grad = False
    net.set_train(False)
    return net


def build_text_encoder(cfg, seed: int = 0):
    """(encoder, tokenizer) for model.text_encoder = {name, path, tokenizer, max_length}."""
    spec = text_encoder_spec(cfg.name)
    net = build_frozen(spec.build, cfg.name, cfg.path, seed, "text encoder")
    from .text.t5 import T5Tokenizer

    if not cfg.tokenizer:
        raise WeightsError(f"model.text_encoder.tokenizer: set it to the tokenizer files of {cfg.name} "
                           "(tokenizer.json or spiece.model, or their directory)")
    return net, T5Tokenizer(cfg.tokenizer, cfg.max_length)


def build_vae(cfg, seed: int = 0):
    spec = vae_spec(cfg.name)
    return build_frozen(spec.build, cfg.name, cfg.path, seed, "VAE")
