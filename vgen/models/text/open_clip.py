"""OpenCLIP ViT-H/14 text tower, frozen, as VideoCrafter2 / T2V-Turbo run it (lvdm's
`FrozenOpenCLIPEmbedder(layer="penultimate")`): the per-token states [B, 77, 1024] of their text caches.

Facts from the official code (open_clip v2.22.0, the version VideoCrafter's requirements pin; the
names and their order are the same in open_clip's current CLIP):
- model_configs/ViT-H-14.json text_cfg: width 1024, 16 heads, 24 layers, context 77, vocab 49408; no
  `quick_gelu`, so the MLP uses nn.GELU (erf). LayerNorm eps 1e-5 everywhere (torch's default).
- Names and order are open_clip `CLIP`'s state dict, i.e. the VC2 checkpoint's keys under
  `cond_stage_model.model.` with the prefix stripped. `CLIP.__init__` copies the text tower's parts
  onto itself, so its own parameters come first: `positional_embedding [77, 1024]`,
  `text_projection [1024, 1024]`, `logit_scale []`; then its children: `transformer.resblocks.{i}`
  (ResidualAttentionBlock: `ln_1`, `attn` = nn.MultiheadAttention `in_proj_weight [3072, 1024]`,
  `in_proj_bias`, `out_proj.{weight,bias}`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`), `token_embedding.weight`,
  `ln_final`. lvdm deletes `model.visual` only, so `text_projection` and `logit_scale` stay in the
  checkpoint: they are declared here so it loads key for key, and are not used. `attn_mask` is a
  non-persistent buffer (not in the checkpoint) and is rebuilt here; `logit_bias` does not exist
  (init_logit_bias is None). 354,032,641 parameters.
- Forward (lvdm `encode_with_transformer` / `text_transformer_forward`): token embedding + positional
  embedding, the residual blocks except the last `layer_idx` (penultimate: 1, so 23 of 24 run), then
  `ln_final` on every token. No text projection, no pooling.
- Attention: the additive causal mask of `build_attention_mask` (-inf above the diagonal) and nothing
  else; padding is attended like any token (the causal mask keeps it out of the real tokens' states).
  `in_proj` rows are q, k, v in that order; heads are consecutive head_dim channels; scale head_dim^-0.5.
- Tokens (`open_clip.tokenize`): [sot] + BPE + [eot], cut to 77 with the last kept as eot, then padded
  with id 0 (a zeros tensor), not with eot as transformers' CLIPTokenizer does.
"""
import math

import mindspore as ms
from mindspore import nn, ops

from ..layers.attention import merge_heads, split_heads
from ..layers.init import constant, new_param, normal, uniform_fan_in, zeros
from ..layers.linear import Linear
from ..layers.norms import LayerNorm
from ..layers.sharding import ShardableLayer
from .clip import CLIPTokenizer
from .llama import attention_with_bias, causal_key_bias
from .t5 import Embedding

_CONFIGS = {
    # open_clip model_configs/ViT-H-14.json text_cfg (laion2b_s32b_b79k; VC2's cond_stage_model)
    "open-clip-vit-h-14": dict(width=1024, heads=16, layers=24, context_length=77, vocab_size=49408),
    # a stand-in for tests: the same code, 3 layers so that the penultimate output skips one
    "tiny": dict(width=32, heads=2, layers=3, context_length=16, vocab_size=512),
}
LAYERS = {"last": 0, "penultimate": 1}  # lvdm's layer_idx: how many final blocks are skipped
PAD_ID = 0  # open_clip.tokenize pads with zeros


def open_clip_text_config(name: str) -> dict:
    """Keyword arguments of OpenCLIPTextEncoder for a named size."""
    if name not in _CONFIGS:
        raise KeyError(f"unknown OpenCLIP text config {name!r}; known: {sorted(_CONFIGS)}")
    return dict(_CONFIGS[name], mlp_ratio=4.0, layer="penultimate")


class MultiheadSelfAttention(ShardableLayer):
    """torch nn.MultiheadAttention as open_clip uses it (self-attention, kdim = vdim = width): a fused
    `in_proj_weight` [3 * width, width] (q, k, v rows), `in_proj_bias`, then `out_proj`."""

    shardable = ("in_proj_weight", "in_proj_bias")

    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        # TextTransformer.init_parameters; MultiheadAttention zeroes both biases
        self.in_proj_weight = new_param((3 * width, width), normal(width ** -0.5))
        self.in_proj_bias = new_param((3 * width,), zeros)
        self.out_proj = Linear(width, width, init=normal(width ** -0.5 * (2 * layers) ** -0.5))

    def construct(self, x, bias):
        qkv = ops.dense(x, self.read("in_proj_weight", self.in_proj_weight),
                        self.read("in_proj_bias", self.in_proj_bias))
        width = qkv.shape[-1] // 3
        q, k, v = (split_heads(qkv[..., i * width:(i + 1) * width], self.heads) for i in range(3))
        return self.out_proj(merge_heads(attention_with_bias(q, k, v, bias, self.scale)))


class GELU(nn.Cell):
    """nn.GELU() (exact, erf): ViT-H-14 is not a quick_gelu model."""

    def construct(self, x):
        return ops.gelu(x, approximate="none")


class MLP(nn.Cell):
    """The block's nn.Sequential(c_fc, gelu, c_proj) (the GELU holds no parameters)."""

    def __init__(self, width: int, hidden: int, layers: int):
        super().__init__()
        # weights as TextTransformer.init_parameters; biases keep nn.Linear's default init
        self.c_fc = Linear(width, hidden, init=normal((2 * width) ** -0.5), bias_init=uniform_fan_in(width))
        self.gelu = GELU()
        self.c_proj = Linear(hidden, width, init=normal(width ** -0.5 * (2 * layers) ** -0.5),
                             bias_init=uniform_fan_in(hidden))

    def construct(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Cell):
    """Pre-LN block; ls_1 / ls_2 are Identity (no ls_init_value in the config)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, layers: int):
        super().__init__()
        # registration order = state-dict order: ln_1, attn, ln_2, mlp
        self.ln_1 = LayerNorm(width, 1e-5)
        self.attn = MultiheadSelfAttention(width, heads, layers)
        self.ln_2 = LayerNorm(width, 1e-5)
        self.mlp = MLP(width, int(width * mlp_ratio), layers)

    def construct(self, x, bias):
        x = x + self.attn(self.ln_1(x), bias)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Cell):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.CellList([ResidualAttentionBlock(width, heads, mlp_ratio, layers) for _ in range(layers)])

    def construct(self, x, bias, num_blocks: int):
        for i in range(num_blocks):  # lvdm breaks out of the loop before the skipped blocks
            x = self.resblocks[i](x, bias)
        return x


class OpenCLIPTextEncoder(nn.Cell):
    """input_ids [B, N <= context_length] int (open_clip tokens), attention_mask (accepted for the
    common encoder call, ignored: the official forward masks nothing but the future) -> per-token states
    [B, N, width] in fp32: ln_final of the output of block L-1-layer_idx (penultimate: the 23rd of 24)."""

    def __init__(self, width: int, heads: int, layers: int, context_length: int = 77, vocab_size: int = 49408,
                 mlp_ratio: float = 4.0, layer: str = "penultimate", visual: nn.Cell = None, embed_dim: int = None):
        """`visual`: the whole CLIP model (its vision tower, registered where CLIP's state dict has
        it); `embed_dim`: the width of the text projection (default: width)."""
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer {layer!r}: one of {sorted(LAYERS)} (FrozenOpenCLIPEmbedder.LAYERS)")
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.context_length = context_length
        self.num_blocks = layers - LAYERS[layer]
        # CLIP's own parameters first (state-dict order), then its children
        self.positional_embedding = new_param((context_length, width), normal(0.01))
        self.text_projection = new_param((width, embed_dim or width), normal(width ** -0.5))  # ViT-H-14: = width
        self.logit_scale = new_param((), constant(lambda: math.log(1 / 0.07)))
        if visual is not None:
            self.visual = visual
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.token_embedding = Embedding(vocab_size, width, std=0.02)
        self.ln_final = LayerNorm(width, 1e-5)

    def construct(self, input_ids, attention_mask=None):
        n = input_ids.shape[1]
        if n > self.context_length:
            raise ValueError(f"sequence length {n} exceeds context_length {self.context_length}")
        x = self.token_embedding(input_ids) + self.positional_embedding[:n][None]
        bias = causal_key_bias(ops.ones((1, n), ms.float32), n)  # future keys only, as build_attention_mask
        return self.ln_final(self.transformer(x, bias, self.num_blocks)).astype(ms.float32)

    def text_features(self, input_ids, attention_mask=None):
        """CLIP's encode_text(normalize=True) [B, embed_dim]: the end-of-text token's state (the
        highest id, as text.argmax finds it) through text_projection, unit length (the mask is not
        read: the causal mask alone applies). Use with layer="last" (every block)."""
        x = self.construct(input_ids)
        eot = ops.argmax(input_ids, -1)
        pooled = ops.gather_elements(x, 1, eot.reshape(-1, 1, 1).broadcast_to((x.shape[0], 1, x.shape[2])))[:, 0]
        return unit(ops.matmul(pooled, self.text_projection.astype(ms.float32)))


def unit(x):
    """F.normalize(x, dim=-1): x / max(|x|, 1e-12)."""
    return x / ops.maximum(ops.sqrt((x * x).sum(-1, keepdims=True)), 1e-12)


class OpenCLIPTokenizer(CLIPTokenizer):
    """CLIP's BPE tokenizer.json called as `open_clip.tokenize`: <|startoftext|>, the text,
    <|endoftext|> (kept when truncating), then id 0 as padding ("!" in CLIP's vocabulary; open_clip
    fills a zeros tensor). The attention_mask (1 on sot..eot) is informational: the encoder ignores it.
    open_clip's own cleaning (ftfy, html unescape) is not reproduced; the tokenizer.json normaliser
    (whitespace, lowercase) is."""

    def __init__(self, path: str, max_length: int = 77):
        super().__init__(path, max_length)

    def _pad_token(self, path: str, pad_token):
        token = self.tokenizer.id_to_token(PAD_ID)
        if token is None:
            raise ValueError(f"{path}: the vocabulary has no id {PAD_ID}, open_clip's padding id")
        return token


def build_encoder(name: str, **overrides) -> OpenCLIPTextEncoder:
    """The encoder of a named size (declared when called under declare_only())."""
    return OpenCLIPTextEncoder(**{**open_clip_text_config(name), **overrides})


def config_names():
    return sorted(_CONFIGS)
