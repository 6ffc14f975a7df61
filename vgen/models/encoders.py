"""Frozen encoders by name: the text encoders and VAEs the cache tools and online training run.

`model.text_encoder` and `model.vae` name one of these and point at weights the user supplies
(safetensors in the official layout); a family with a pooled text vector (HunyuanVideo's CLIP)
names its second encoder in `model.text_encoder_2`. The tiny variants exist for tests and the CPU
quickstart: without weights they initialise from a seed, and their identity says so, so a cache
they write is never taken for one made by the real encoder.

`TextEncoders` is what both the cache tool (vgen-cache text) and online training call, so the two
give the same arrays: captions -> {"text_emb" [B, L, D], "text_mask" [B, L], "text_pooled" [B, P]}.

HunyuanVideo's LLM states take the official prompt template: "dit-llm-encode-video" for a sample
that is a video, "dit-llm-encode" for one that is an image file (the official inference picks the
image template for 1-frame outputs). The choice is per row of the data set, not per bucket, so a
row has one cached embedding whatever length it trains at; the empty prompt (caption dropout,
text/empty.npz) takes the video template.

The tables are the families' own (FamilySpec.text_encoders / .vaes): this module holds none."""
import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mindspore import Tensor, nn

from ..config.models import TEXT_ENCODER_KEYS, seeded
from .family import POOLED, PROMPT_STATES, STATES, TextEncoderSpec, VAESpec, resolve
from .layers.init import declare_only, materialize
from .weights import SafetensorsWeights, WeightsError, check_layout, fill_parameters, layout_problems, loadable

log = logging.getLogger("vgen")
VIDEO_TEMPLATE, IMAGE_TEMPLATE = "dit-llm-encode-video", "dit-llm-encode"


def _collect(kind: str) -> dict:
    """{name: spec} of every family's encoders of one kind; a name two families define must be
    the same spec."""
    from .registry import family_specs

    table = {}
    for fam in family_specs().values():
        for name, spec in getattr(fam, kind).items():
            if table.setdefault(name, spec) is not spec and table[name] != spec:
                raise ValueError(f"family {fam.name} redefines {kind[:-1]} {name!r} differently")
    return table


@lru_cache(maxsize=1)
def text_encoders() -> Dict[str, TextEncoderSpec]:
    return _collect("text_encoders")


@lru_cache(maxsize=1)
def vaes() -> Dict[str, VAESpec]:
    return _collect("vaes")


def _lookup(table, kind, name):
    if name not in table:
        raise KeyError(f"model.{kind}.name={name!r} is unknown; known: {sorted(table)}")
    return table[name]


def text_encoder_spec(name: str) -> TextEncoderSpec:
    return _lookup(text_encoders(), "text_encoder", name)


def vae_spec(name: str) -> VAESpec:
    return _lookup(vaes(), "vae", name)


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
    if path:  # read tensor by tensor; nothing is initialised that the file then overwrites
        file = _weights_file(path, what)
        src = SafetensorsWeights(file)
        check_layout(file, *layout_problems(loadable(net), src.shapes), strict=True)
        fill_parameters(net, seed, [src])
    elif not seeded(name):
        raise WeightsError(f"{what} {name} needs its weights: set its `path` to the converted safetensors")
    else:
        materialize(net, seed)
    for p in net.get_parameters():
        p.requires_grad = False
    net.set_train(False)
    return net


def build_tokenizer(cfg, key: str = "text_encoder"):
    """The tokenizer of model.<key> = {name, tokenizer, max_length}, of the kind its encoder reads."""
    spec = text_encoder_spec(cfg.name)
    if not cfg.tokenizer:
        raise WeightsError(f"model.{key}.tokenizer: set it to the tokenizer files of {cfg.name} "
                           f"({' or '.join(spec.tokenizer_files)}, or their directory)")
    try:
        return resolve(spec.tokenizer)(cfg.tokenizer, cfg.max_length)
    except (OSError, ValueError) as e:
        raise WeightsError(f"model.{key}.tokenizer={cfg.tokenizer}: {e}") from e


def build_text_encoder(cfg, seed: int = 0, key: str = "text_encoder"):
    """(encoder, tokenizer) for model.<key> = {name, path, tokenizer, max_length}."""
    spec = text_encoder_spec(cfg.name)
    if spec.max_positions is not None and cfg.max_length > spec.max_positions:
        raise WeightsError(f"model.{key}.max_length={cfg.max_length}: {cfg.name} takes at most "
                           f"{spec.max_positions} tokens")
    tokenizer = build_tokenizer(cfg, key)  # before the weights: a missing tokenizer fails at once
    return build_frozen(spec.build, cfg.name, cfg.path, seed, "text encoder"), tokenizer


# ---- text encoders as the cache tool and online training call them -----------------------------------

def _compiled(fn, jit: bool):
    if not jit:
        return fn
    import mindspore as ms

    return ms.jit(fn)


class StatesEncoder:
    """A T5-style encoder: the caption's states [B, L, D] and its token mask [B, L]."""

    def __init__(self, net, tokenizer, jit: bool = False):
        self.tokenizer = tokenizer

        def run(ids, mask):
            return net(ids, mask)

        self._run = _compiled(run, jit)

    def __call__(self, captions: Sequence[str], images: np.ndarray) -> Dict[str, np.ndarray]:
        tokens = self.tokenizer(list(captions))
        states = self._run(Tensor(tokens["input_ids"]), Tensor(tokens["attention_mask"]))
        return {"text_emb": states.asnumpy().astype(np.float32), "text_mask": np.asarray(tokens["attention_mask"])}


class PromptStatesEncoder:
    """HunyuanVideo's LLM text states: each caption in its template (video or image, by `images`),
    tokenized to text_len + crop_start, hidden_states[-3], the template's crop_start positions
    dropped (HunyuanPromptEncoder per template). Rows of both templates run in one call, padded to
    the longer length: padding after a row changes none of its states (causal, padded keys masked)."""

    def __init__(self, net, tokenizer, text_len: int, official_crop: bool, jit: bool = False):
        from .text.llama import PROMPT_TEMPLATES, HunyuanPromptEncoder, template_prefix_length

        self.tokenizer, self.text_len = tokenizer, int(text_len)
        self.prompts = {}
        for is_image, name in ((False, VIDEO_TEMPLATE), (True, IMAGE_TEMPLATE)):
            template = dict(PROMPT_TEMPLATES[name])
            counted = template_prefix_length(tokenizer, template["template"])
            if not official_crop:
                template["crop_start"] = counted
            elif counted != template["crop_start"]:
                log.warning("prompt template %s: the tokenizer %s gives %d tokens before the caption, the official "
                            "crop_start is %d: is this the Llama-3 tokenizer of HunyuanVideo's text encoder?", name,
                            tokenizer.path, counted, template["crop_start"])
            self.prompts[is_image] = HunyuanPromptEncoder(net, tokenizer, template, self.text_len)
        self.length = max(p.max_length for p in self.prompts.values())
        output_layer = self.prompts[False].output_layer

        def run(ids, mask):
            return net(ids, mask, output_layer)

        self._run = _compiled(run, jit)

    def crop_start(self, is_image: bool) -> int:
        return self.prompts[bool(is_image)].crop_start

    def __call__(self, captions: Sequence[str], images: np.ndarray) -> Dict[str, np.ndarray]:
        b = len(captions)
        ids = np.full((b, self.length), self.tokenizer.pad_id, np.int32)
        mask = np.zeros((b, self.length), np.int32)
        crops = np.zeros(b, np.int64)
        for is_image, prompt in self.prompts.items():
            rows = np.nonzero(images == is_image)[0]
            if not len(rows):
                continue
            tokens = prompt.tokenize([captions[i] for i in rows])
            ids[rows, :prompt.max_length] = tokens["input_ids"]
            mask[rows, :prompt.max_length] = tokens["attention_mask"]
            crops[rows] = prompt.crop_start
        states = self._run(Tensor(ids), Tensor(mask)).asnumpy()
        take = crops[:, None] + np.arange(self.text_len)[None, :]  # each row after its own crop
        rows = np.arange(b)[:, None]
        return {"text_emb": states[rows, take].astype(np.float32), "text_mask": mask[rows, take]}


class PooledEncoder:
    """A CLIP-style encoder's pooled vector [B, D] (its states are not used)."""

    def __init__(self, net, tokenizer, jit: bool = False):
        self.tokenizer = tokenizer

        def run(ids, mask):
            return net(ids, mask)[1]

        self._run = _compiled(run, jit)

    def __call__(self, captions: Sequence[str], images: np.ndarray) -> Dict[str, np.ndarray]:
        tokens = self.tokenizer(list(captions))
        pooled = self._run(Tensor(tokens["input_ids"]), Tensor(tokens["attention_mask"]))
        return {"text_pooled": pooled.asnumpy().astype(np.float32)}


class SecondStatesEncoder(StatesEncoder):
    """A second encoder's states [B, L, D] as the model's `text_pooled` (Step-Video's HunyuanCLIP,
    whose 77 states are all attended: its mask is not kept)."""

    def __call__(self, captions: Sequence[str], images: np.ndarray) -> Dict[str, np.ndarray]:
        return {"text_pooled": super().__call__(captions, images)["text_emb"]}


def text_encoder_configs(model_cfg) -> List[Tuple[str, object]]:
    """[(config key, encoder config)] of a model: model.text_encoder (states), then model.text_encoder_2
    (pooled) when the model has one. Checks each encoder's output fits its place."""
    out = []
    for i, key in enumerate(TEXT_ENCODER_KEYS):
        enc = model_cfg.get(key) if hasattr(model_cfg, "get") else getattr(model_cfg, key, None)
        if enc is None:
            if i == 0:
                raise WeightsError(f"model {model_cfg.get('name')}: no model.text_encoder to encode captions with")
            continue
        output = text_encoder_spec(enc.name).output
        # the second encoder gives a pooled vector (HunyuanVideo's CLIP) or states (Step-Video's BERT)
        wanted = (STATES, PROMPT_STATES) if i == 0 else (POOLED, STATES)
        if output not in wanted:
            role = "the caption states" if i == 0 else "the second text input (pooled vector or states)"
            raise WeightsError(f"model.{key}.name={enc.name}: gives {output}, but model.{key} makes {role}")
        out.append((key, enc))
    return out


class TextEncoders:
    """The frozen text encoders of a model, as one call: captions (and per caption whether its
    sample is an image file) -> {"text_emb" [B, L, D] float32, "text_mask" [B, L] int32} from
    model.text_encoder, plus {"text_pooled" [B, P] float32} from model.text_encoder_2 when the model
    has one. vgen-cache text and online training both call this, so they give the same arrays."""

    def __init__(self, parts: Sequence[Tuple[str, str, object]]):
        self.parts = list(parts)  # (config key, encoder name, encoder)

    @classmethod
    def from_model_config(cls, model_cfg, seed: int = 0, jit: bool = False) -> "TextEncoders":
        parts = []
        for key, enc in text_encoder_configs(model_cfg):
            spec = text_encoder_spec(enc.name)
            net, tokenizer = build_text_encoder(enc, seed, key)
            if spec.output == PROMPT_STATES:
                encoder = PromptStatesEncoder(net, tokenizer, enc.max_length, spec.official_crop, jit)
            elif spec.output == POOLED:
                encoder = PooledEncoder(net, tokenizer, jit)
            elif key == TEXT_ENCODER_KEYS[1]:  # a second encoder's states: the model's text_pooled
                encoder = SecondStatesEncoder(net, tokenizer, jit)
            else:
                encoder = StatesEncoder(net, tokenizer, jit)
            parts.append((key, enc.name, encoder))
        return cls(parts)

    def encoder(self, key: str):
        return next(e for k, _, e in self.parts if k == key)

    def __call__(self, captions: Sequence[str], images: Optional[Sequence[bool]] = None) -> Dict[str, np.ndarray]:
        captions = [str(c) for c in captions]
        images = np.zeros(len(captions), bool) if images is None else np.asarray(images, bool).reshape(-1)
        if len(images) != len(captions):
            raise ValueError(f"{len(captions)} captions but {len(images)} image flags")
        out = {}
        for _, _, encoder in self.parts:
            out.update(encoder(captions, images))
        return out


def build_vae(cfg, seed: int = 0):
    spec = vae_spec(cfg.name)
    return build_frozen(spec.build, cfg.name, cfg.path, seed, "VAE")
