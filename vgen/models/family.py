"""The family contract: what a model family declares (`FamilySpec`, light: no MindSpore import, so
configs are checked before any heavy import) and what its build function returns (`Family`: the
denoiser and its objective). The trainer, the config checks, the encoder tables, the random
streams and the weight converter read these declarations and hold no per-family tables."""
import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np


def resolve(target: str):
    """The object named by 'package.module:attr' (imported on first use)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def lazy(target: str, *args, **kwargs) -> Callable:
    """A callable that imports `target` ('module:function') only when called, then calls it with
    these arguments (and any given at call time): declarations stay light."""

    def call(*more, **extra):
        return resolve(target)(*args, *more, **{**kwargs, **extra})

    call.target = target
    return call


# ---- what a family reads and makes ------------------------------------------------------------

@dataclass(frozen=True)
class TextSpec:
    """Cached text-encoder outputs the denoiser reads."""

    encoder: str  # identity of the text encoder that produces them (checked against cache manifests)
    dim: int
    length: int
    dropout: float  # default caption-dropout probability during training
    # the second text encoder's output per caption (`text_pooled`), 0 = none: a vector [pooled_dim]
    # (HunyuanVideo's CLIP pooled output), or states [pooled_length, pooled_dim] when pooled_length > 0
    # (Step-Video's HunyuanCLIP last hidden states)
    pooled_dim: int = 0
    pooled_encoder: str = ""  # identity of that encoder (checked against cache manifests)
    pooled_length: int = 0
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

    # a VAE that encodes chunks of frames on their own (Step-Video's: 17 frames -> 3 latents);
    # 0: the temporal compression is causal instead
    chunk_frames: int = 0
    chunk_latents: int = 0

    def latent_shape(self, frames: int, height: int, width: int) -> Tuple[int, int, int, int]:
        """(C, t, h, w) of the latent of a clip. Chunked: chunk_latents per whole chunk of
        chunk_frames. Else a temporal compression c > 1 is causal: the first frame alone, then
        groups of c ((frames - 1) / c + 1 latent frames)."""
        ct, ch, cw = self.compression
        if self.chunk_frames:  # an image (1 frame) is one latent frame, as the chunked VAE encodes it
            t = 1 if frames == 1 else frames // self.chunk_frames * self.chunk_latents
        else:
            t = frames if ct == 1 else (frames - 1) // ct + 1
        return self.channels, t, height // ch, width // cw

    def pixel_frames(self, latent_frames: int) -> int:
        """The pixel frames `latent_frames` latent frames decode to (the inverse of latent_shape)."""
        ct = self.compression[0]
        if self.chunk_frames:
            return 1 if latent_frames == 1 else latent_frames // self.chunk_latents * self.chunk_frames
        return latent_frames if ct == 1 else (latent_frames - 1) * ct + 1


# ---- frozen encoders a family brings (cache tools, online training) ---------------------------

STATES = "states"  # [B, L, dim] states and mask of the caption (T5)
PROMPT_STATES = "prompt_states"  # HunyuanVideo's LLM: states after the prompt template and crop
POOLED = "pooled"  # one [dim] vector per caption (CLIP's pooled output)


@dataclass(frozen=True)
class TextEncoderSpec:
    build: Callable  # () -> the encoder Cell, declared (see layers/init.py)
    dim: int
    # 'module:Class' of its tokenizer, called (path, max_length), and the files it reads (a directory
    # given as model.<key>.tokenizer is searched for them in this order)
    tokenizer: str = "vgen.models.text.t5:T5Tokenizer"
    tokenizer_files: Tuple[str, ...] = ("tokenizer.json", "spiece.model")
    output: str = STATES  # STATES | PROMPT_STATES | POOLED
    # PROMPT_STATES: the official crop_start of the templates (they hold for the Llama-3 tokenizer
    # only); otherwise the crop is counted with the tokenizer given (the tiny test tokenizers)
    official_crop: bool = False
    max_positions: Optional[int] = None  # the longest token sequence the encoder takes (CLIP: 77)


@dataclass(frozen=True)
class VAESpec:
    # () -> the VAE Cell with encode_video(x, frames_per_call) -> (mean, std) and
    # decode_video(z, frames_per_call) -> pixels in about [-1, 1]
    build: Callable
    channels: int
    compression: Tuple[int, int, int]  # (t, h, w)
    scale: float
    shift: float = 0.0


# ---- official weights -------------------------------------------------------------------------

def official_first(default: str, names: Callable) -> Callable:
    """presets(): the official preset, then the other names `names()` gives (e.g. tiny)."""
    return lambda: [default, *(n for n in names() if n != default)]


def bare_state_dict(keys: Sequence[str], load_key: str) -> Dict[str, str]:
    return {k: k for k in keys}


@dataclass(frozen=True)
class WeightsAdapter:
    """How tools/convert_weights.py turns an official checkpoint of one model into our safetensors:
    `build(preset)` declares our model (names and shapes to check against), `unwrap(keys, load_key)`
    finds the state dict inside the official container ({official name: raw key}), `rename` maps
    an official name to ours, `reshape(name, array)` fixes a layout difference (e.g. 1x1 convs
    stored as Linears), `tied` lists official keys that duplicate another tensor (dropped)."""

    name: str  # the converter's target name (a family, or one of its encoders)
    build: Callable  # preset -> declared model
    presets: Callable  # () -> names of the presets the checkpoint may match, the default (official) first
    unwrap: Callable = bare_state_dict
    rename: Callable = None  # official name -> ours; None: the same
    reshape: Callable = None  # (our name, array, our shape) -> array of our shape
    tied: Tuple[str, ...] = ()
    about: str = ""  # the official files it reads (shown by --help)

    @property
    def default_preset(self) -> str:
        return self.presets()[0]


# ---- parallelism as data ----------------------------------------------------------------------

@dataclass(frozen=True)
class SPCore:
    """Attention cores (fnmatch pattern on module paths) that Ulysses wraps: "ulysses" trades the
    sequence split for a head split; "joint" does so for the image tokens only, the last
    `text_len` tokens (read from the net's attribute `text_len_attr`) being whole on every rank."""

    pattern: str
    kind: str = "ulysses"
    text_len_attr: str = "text_len"


@dataclass(frozen=True)
class SPPlan:
    """Which attention cores need the whole sequence. Where tokens are split and gathered the
    model says itself, with SplitSeam / GatherSeam cells (layers/seams.py)."""

    cores: Tuple[SPCore, ...]


# ---- the declaration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FamilySpec:
    name: str  # model.family
    schema: type  # the model group's dataclass (registered in Hydra's ConfigStore)
    schema_name: str  # its ConfigStore name, as conf/model/*.yaml name it in their defaults
    build: str  # 'module:function' (model config) -> Family; imported only when a run builds it
    check: Optional[Callable] = None  # (model cfg, whole cfg, err) -> None: cross-field checks
    # the repeated blocks by kind, as module paths of block lists in forward order: the units of
    # recompute and ZeRO-3 gathering (a kind may span several lists)
    blocks: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    sp: Optional[SPPlan] = None  # None: no sequence parallelism (sp_missing says why)
    sp_missing: str = "it has no sequence-parallel plan"
    lora_targets: Tuple[str, ...] = ()  # default LoRA targets (module-path patterns)
    streams: Mapping[str, int] = field(default_factory=dict)  # keyed random streams of its own: {name: id}
    text_encoders: Mapping[str, TextEncoderSpec] = field(default_factory=dict)
    vaes: Mapping[str, VAESpec] = field(default_factory=dict)
    weights: Tuple[WeightsAdapter, ...] = ()  # converters of its official files (model and encoders)
    # 'module:Class' of a sampling step cache, called (net, threshold, steps, jit) (sample.teacache)
    teacache: Optional[str] = None


@dataclass
class Family:
    """A built family: the denoiser and how it trains. Host-side hooks run in the data pipeline
    (numpy); `denoise` runs inside the compiled step."""

    name: str
    net: object  # the denoiser Cell, with the official parameter names
    # draw(rngs, latent_shape, step) -> dict of draws; loss_cell(net, denoise, frame_masked) -> Cell(batch) -> [B];
    # `fields`: the batch fields its loss cell reads
    objective: object
    text: TextSpec
    latent: LatentSpec
    spec: FamilySpec = None  # its declaration
    # (net, x_t, t, batch) -> prediction: the denoiser called on the named fields of a batch
    denoise: Callable = None
    fields: Tuple[str, ...] = ()  # the batch fields `denoise` reads (besides x_t, t)
    # a guidance-embedding student's denoiser without the embedding: how its teacher, the base it
    # is distilled from, is called (distill.enabled)
    unguided_denoise: Callable = None
    # (rngs, latent_shape) -> the family's own random fields (e.g. frame masks), drawn with the others
    draw: Callable = None
    # (batch) -> the family's deterministic host-side fields (e.g. dtypes, guidance), after encoding
    prepare: Callable = None
    no_decay_patterns: Sequence[str] = ("embedding", "pos_embed", "scale_shift_table")
    # what the family trains on: "latent" (denoisers: clips are VAE-encoded, online or cached) or
    # "pixels" (autoencoders: the decoded clips themselves)
    input_kind: str = "latent"
    # name prefixes a pretrained file may lack (parts that start from their init, e.g. a discriminator)
    init_only: Sequence[str] = ()
    check_batch: Callable = None  # (batch) -> None, raising ValueError for inputs the family cannot train on

    def make_loss_cell(self):
        """Cell(batch of named tensors) -> per-sample loss [B]."""
        extra = {} if self.denoise is None else {"denoise": self.denoise}
        return self.objective.loss_cell(self.net, frame_masked="frame_mask" in self.fields, **extra)

    @property
    def input_fields(self) -> Tuple[str, ...]:
        """The named fields the loss cell reads from a batch."""
        return tuple(dict.fromkeys((*self.objective.fields, *self.fields)))

    def model_inputs(self, batch) -> Dict[str, np.ndarray]:
        """The loss cell's named inputs of a prepared batch."""
        if self.check_batch is not None:
            self.check_batch(batch)
        missing = [k for k in self.input_fields if k not in batch]
        if missing:
            raise ValueError(f"{self.name}: the batch lacks {missing} (it has {sorted(batch)})")
        return {k: batch[k] for k in self.input_fields}

    def no_decay(self, name: str, ndim: int) -> bool:
        """Biases, norms (1-D) and embeddings are excluded from weight decay."""
        return ndim < 2 or any(p in name for p in self.no_decay_patterns)

    def blocks_by_kind(self) -> Dict[str, list]:
        """{kind: [block Cell, ...]} resolved from the spec's module paths."""
        from .layers.paths import cell_at  # the net is built: MindSpore is loaded

        return {kind: [b for path in paths for b in cell_at(self.net, path)]
                for kind, paths in self.spec.blocks.items()}

    def blocks(self) -> list:
        return [b for kind in self.blocks_by_kind().values() for b in kind]
