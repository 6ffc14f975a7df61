"""LLaMA decoder stack used as a frozen text encoder (HunyuanVideo's LLaVA-LLaMA-3-8B), the official
prompt template + crop that turns a caption into HunyuanVideo's text states, and a tokenizer wrapper.

Parameter names and order are transformers' `LlamaModel` state dict: `embed_tokens.weight`, then per
layer `layers.{i}.self_attn.{q,k,v,o}_proj.weight` (no bias), `layers.{i}.mlp.{gate,up,down}_proj.weight`,
`layers.{i}.input_layernorm.weight`, `layers.{i}.post_attention_layernorm.weight`, then `norm.weight`.
The rotary `inv_freq` and the causal-mask table are non-persistent in transformers and are recomputed
here. Checkpoints carry a prefix the converter strips: `model.` (LlamaForCausalLM, e.g. HunyuanVideo's
ckpts/text_encoder, whose `lm_head.weight` is dropped), `language_model.model.` (the LLaVA checkpoint
xtuner/llava-llama-3-8b-v1_1-transformers, older transformers layout) or `model.language_model.` (the
same model saved by transformers >= 4.52); vision tower, projector and lm_head keys are dropped.

LLaMA specifics kept on purpose: pre-norm RMSNorm (eps 1e-5), rotate-half RoPE (theta 500000 for
Llama-3, no rope scaling in the LLaVA config), grouped-query attention (32 query / 8 key-value heads),
causal attention with padded keys masked too, SwiGLU MLP, no biases, positions 0..N-1 whatever the mask
(right padding, as HunyuanVideo tokenizes).

`construct(..., output_layer)` indexes transformers' `hidden_states` tuple: 0 = embeddings, i = output of
decoder layer i-1 (no final norm) for 1 <= i < L, L (= -1) = final-normed output of the last layer.
HunyuanVideo takes hidden_states[-(hidden_state_skip_layer + 1)] = hidden_states[-3] with
apply_final_norm=False: the output of layer 30 of 32 (0-based 29), not normalised.
"""
import json
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import merge_heads, split_heads
from ..layers.init import normal
from ..layers.linear import Linear
from ..layers.norms import RMSNorm
from .t5 import Embedding

NEG_INF = -1e9  # added in fp32 to masked logits; every valid query keeps its own key

_LLAMA_3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0)
_CONFIGS = {
    # xtuner/llava-llama-3-8b-v1_1-transformers text_config, as HunyuanVideo's ckpts/text_encoder:
    # Llama-3-8B-Instruct with 64 more embedding rows (<image>, <pad>, ... added by LLaVA); 7,505,186,816 params
    "llava-llama-3-8b": dict(_LLAMA_3_8B, vocab_size=128320),
    # meta-llama/Meta-Llama-3-8B decoder without lm_head: 7,504,924,672 parameters
    "llama-3-8b": dict(_LLAMA_3_8B, vocab_size=128256),
    # a few-thousand-parameter stand-in for tests: GQA with 2 query heads per kv head, 4 layers so that
    # hidden_states[-3] is an inner layer
    "tiny": dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0),
}


def llama_config(name: str) -> dict:
    """Keyword arguments of LlamaEncoder for a named size."""
    if name not in _CONFIGS:
        raise KeyError(f"unknown LLaMA config {name!r}; known: {sorted(_CONFIGS)}")
    return dict(_CONFIGS[name])


# ---- pieces shared with the CLIP text encoder --------------------------------------------------

def causal_key_bias(key_mask, length: int):
    """[B, 1, N, N] fp32 additive bias: NEG_INF on future keys (j > i) and on padded keys
    (key_mask [B, N], 1 = token), 0 elsewhere. The query rows of padding are left as they come:
    they are never read."""
    positions = ops.arange(length)
    future = (positions[None, :] > positions[:, None]).astype(ms.float32) * NEG_INF  # [N, N]
    padded = (1.0 - key_mask.astype(ms.float32)) * NEG_INF  # [B, N]
    return future[None, None] + padded[:, None, None, :]


def attention_with_bias(q, k, v, bias, scale: float):
    """softmax(scale * q k^T + bias) v on [B, H, N, D], logits and softmax in fp32 (as transformers'
    eager attention with its softmax in fp32). AttentionCore only takes a key mask, so the causal
    encoders use this."""
    logits = ops.matmul(q, k.swapaxes(-1, -2)).astype(ms.float32) * scale + bias
    return ops.matmul(ops.softmax(logits, -1).astype(v.dtype), v)


# ---- rotary position embedding ------------------------------------------------------------------

def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """transformers' default RoPE frequencies 1 / theta^(2i/d), i < d/2, as fp32."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)  # fp32 throughout, as torch


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] over the last dim (halves, not interleaved pairs)."""
    half = x.shape[-1] // 2
    return ops.cat((-x[..., half:], x[..., :half]), -1)


class LlamaRotaryEmbedding(nn.Cell):
    """cos/sin [N, head_dim] of positions 0..N-1: fp32 angles pos * inv_freq, the frequency row
    repeated twice ([f, f]), then cast to the compute dtype as transformers does."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.inv_freq = Tensor(rope_inv_freq(head_dim, theta))  # not a parameter: recomputed, never loaded

    def construct(self, length: int, dtype=ms.float32):
        angles = ops.arange(length).astype(ms.float32)[:, None] * self.inv_freq[None, :]
        angles = ops.cat((angles, angles), -1)
        return ops.cos(angles).astype(dtype), ops.sin(angles).astype(dtype)


def apply_rope(x, cos, sin):
    """x [B, H, N, D] rotated by the position tables cos/sin [N, D]."""
    return x * cos + rotate_half(x) * sin


# ---- layers -----------------------------------------------------------------------------------

def repeat_kv_heads(x, groups: int):
    """[B, Hkv, N, D] -> [B, Hkv * groups, N, D], each kv head repeated for its `groups` consecutive
    query heads (transformers' repeat_kv, torch's repeat_interleave on the head dim)."""
    if groups == 1:
        return x
    b, hkv, n, d = x.shape
    return ops.broadcast_to(x[:, :, None], (b, hkv, groups, n, d)).reshape(b, hkv * groups, n, d)


class LlamaAttention(nn.Cell):
    """Grouped-query self-attention: key/value head j serves query heads j*G .. j*G+G-1 (transformers'
    repeat_kv), G = num_heads / num_kv_heads."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, init_std: float = 0.02):
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim ** -0.5
        self.q_proj = Linear(hidden_size, num_heads * head_dim, bias=False, init=normal(init_std))
        self.k_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=False, init=normal(init_std))
        self.v_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=False, init=normal(init_std))
        self.o_proj = Linear(num_heads * head_dim, hidden_size, bias=False, init=normal(init_std))

    def repeat_kv(self, x):
        return repeat_kv_heads(x, self.num_heads // self.num_kv_heads)

    def construct(self, x, cos, sin, bias):
        q = apply_rope(split_heads(self.q_proj(x), self.num_heads), cos, sin)
        k = apply_rope(split_heads(self.k_proj(x), self.num_kv_heads), cos, sin)
        v = split_heads(self.v_proj(x), self.num_kv_heads)
        out = attention_with_bias(q, self.repeat_kv(k), self.repeat_kv(v), bias, self.scale)
        return self.o_proj(merge_heads(out))


class LlamaMLP(nn.Cell):
    """SwiGLU: down(silu(gate x) * up x)."""

    def __init__(self, hidden_size: int, intermediate_size: int, init_std: float = 0.02):
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=False, init=normal(init_std))
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False, init=normal(init_std))
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False, init=normal(init_std))

    def construct(self, x):
        return self.down_proj(ops.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Cell):
    def __init__(self, hidden_size, intermediate_size, num_heads, num_kv_heads, head_dim, eps):
        super().__init__()
        # registration order = state-dict order: self_attn, mlp, input_layernorm, post_attention_layernorm
        self.self_attn = LlamaAttention(hidden_size, num_heads, num_kv_heads, head_dim)
        self.mlp = LlamaMLP(hidden_size, intermediate_size)
        self.input_layernorm = RMSNorm(hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, eps)

    def construct(self, x, cos, sin, bias):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, bias)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaEncoder(nn.Cell):
    """input_ids [B, N] int, attention_mask [B, N] (1 = token, 0 = padding) -> the hidden state
    hidden_states[output_layer] [B, N, hidden] in fp32 (transformers' indexing, see the module doc).
    Layers after the requested one are not run."""

    def __init__(self, vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                 num_attention_heads: int, num_key_value_heads: int = None, rms_norm_eps: float = 1e-5,
                 rope_theta: float = 500000.0, head_dim: int = None, rope_scaling=None):
        super().__init__()
        if rope_scaling is not None:
            raise NotImplementedError("rope_scaling is not supported (LLaVA-LLaMA-3-8B's config has none)")
        num_key_value_heads = num_key_value_heads or num_attention_heads
        head_dim = head_dim or hidden_size // num_attention_heads
        self.num_layers = num_hidden_layers
        self.embed_tokens = Embedding(vocab_size, hidden_size, std=0.02)
        self.layers = nn.CellList([
            LlamaDecoderLayer(hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, head_dim,
                              rms_norm_eps)
            for _ in range(num_hidden_layers)])
        self.norm = RMSNorm(hidden_size, rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(head_dim, rope_theta)

    def hidden_state_index(self, output_layer: int) -> int:
        """A hidden_states index (negative counts from the end) as 0..L."""
        count = self.num_layers + 1
        if not -count <= output_layer < count:
            raise IndexError(f"output_layer {output_layer} out of range for {count} hidden states")
        return output_layer % count

    def construct(self, input_ids, attention_mask=None, output_layer: int = -3):
        index = self.hidden_state_index(output_layer)
        x = self.embed_tokens(input_ids)
        if index == 0:
            return x.astype(ms.float32)
        n = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = ops.ones(input_ids.shape, ms.float32)
        bias = causal_key_bias(attention_mask, n)
        cos, sin = self.rotary_emb(n, x.dtype)
        for i in range(index):
            x = self.layers[i](x, cos, sin, bias)
        if index == self.num_layers:  # the last entry of hidden_states is after the final norm
            x = self.norm(x)
        return x.astype(ms.float32)


# ---- tokenizer --------------------------------------------------------------------------------

def _token_name(value):
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class FixedLengthTokenizer:
    """A `tokenizer.json` (read with the `tokenizers` package) called as transformers' fast tokenizer
    is with `padding="max_length", truncation=True`: the file's own post-processor adds the special
    tokens (BOS for Llama-3; BOS/EOS for CLIP), truncation on the right keeps room for them, then right
    padding with the pad token up to max_length; mask 1 on every non-pad token.

    The pad token is, in order: `pad_token`, the `pad_token` of a tokenizer_config.json beside the
    tokenizer.json, then the first of `pad_fallbacks` the vocabulary holds.
    """

    pad_fallbacks = ()

    def __init__(self, path: str, max_length: int, pad_token: str = None):
        from tokenizers import Tokenizer

        path = self._resolve(path)
        self.path, self.max_length = path, max_length
        self.tokenizer = Tokenizer.from_file(path)
        self.pad_token = self._pad_token(path, pad_token)
        self.pad_id = self.tokenizer.token_to_id(self.pad_token)

    @staticmethod
    def _resolve(path: str) -> str:
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path} (a tokenizer.json or its directory)")
        return path

    def _pad_token(self, path: str, pad_token):
        if pad_token:  # asked for by name: it must exist
            candidates = [pad_token]
        else:
            candidates = []
            config = os.path.join(os.path.dirname(path), "tokenizer_config.json")
            if os.path.isfile(config):
                with open(config, encoding="utf-8") as f:
                    found = _token_name(json.load(f).get("pad_token"))
                candidates += [found] if found else []
            candidates += list(self.pad_fallbacks)
        for token in candidates:
            if self.tokenizer.token_to_id(token) is not None:
                return token
        raise ValueError(f"{path}: none of the pad tokens {candidates} is in the vocabulary; pass pad_token=")

    def token_ids(self, text: str, add_special_tokens: bool = True):
        """The untruncated, unpadded ids of one text."""
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, texts, max_length: int = None):
        """texts (str or list) -> {"input_ids", "attention_mask"}: int32 numpy arrays [B, max_length]."""
        if isinstance(texts, str):
            texts = [texts]
        length = max_length or self.max_length
        self.tokenizer.enable_truncation(max_length=length, strategy="longest_first", direction="right")
        self.tokenizer.enable_padding(direction="right", pad_id=self.pad_id, pad_token=self.pad_token, length=length)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        ids = np.array([e.ids for e in encodings], np.int32).reshape(len(texts), length)
        mask = np.array([e.attention_mask for e in encodings], np.int32).reshape(len(texts), length)
        return {"input_ids": ids, "attention_mask": mask}


class LlamaTokenizer(FixedLengthTokenizer):
    """The Llama-3 BPE tokenizer.json of the text encoder (HunyuanVideo's ckpts/text_encoder, saved with
    its tokenizer_config.json, whose pad token is used; LLaVA adds `<pad>`, the fallback here). BOS
    `<|begin_of_text|>` comes from the file's post-processor."""

    pad_fallbacks = ("<pad>",)


# ---- HunyuanVideo's prompt template and crop ---------------------------------------------------

PROMPT_TEMPLATE_ENCODE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
PROMPT_TEMPLATE_ENCODE_VIDEO = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
# crop_start = tokens of the template before the caption (BOS included) with the Llama-3 tokenizer;
# the official code hard-codes them, so do we (template_prefix_length() recomputes them as a check)
PROMPT_TEMPLATES = {
    "dit-llm-encode": {"template": PROMPT_TEMPLATE_ENCODE, "crop_start": 36},
    "dit-llm-encode-video": {"template": PROMPT_TEMPLATE_ENCODE_VIDEO, "crop_start": 95},
}


def template_prefix_length(tokenizer: FixedLengthTokenizer, template: str) -> int:
    """Tokens before the caption's `{}` (special tokens included); equals crop_start when the prefix
    tokenizes the same alone as before a caption (true for these templates: they end in `\\n\\n`, which
    Llama-3's pre-tokenizer splits off the following word)."""
    return len(tokenizer.token_ids(template.split("{}")[0]))


class HunyuanPromptEncoder:
    """Captions -> HunyuanVideo's LLM text states, as its TextEncoder (text2tokens + encode) does:
    caption formatted into the template, tokenized to text_len + crop_start (truncating, right-padded),
    hidden_states[-(hidden_state_skip_layer + 1)] of the encoder, then the first crop_start positions of
    the states and of the mask dropped. Returns (states [B, text_len, hidden] fp32 Tensor, mask
    [B, text_len] int32 numpy). The valid part of each row is the caption's tokens plus the template's
    closing `<|eot_id|>` (fewer when truncated)."""

    def __init__(self, encoder: LlamaEncoder, tokenizer: FixedLengthTokenizer, template="dit-llm-encode-video",
                 text_len: int = 256, hidden_state_skip_layer: int = 2, apply_final_norm: bool = False):
        spec = PROMPT_TEMPLATES[template] if isinstance(template, str) else dict(template)
        if "{}" not in spec["template"]:
            raise ValueError("a prompt template needs a `{}` placeholder for the caption")
        self.encoder, self.tokenizer = encoder, tokenizer
        self.template, self.crop_start = spec["template"], int(spec["crop_start"])
        self.text_len = text_len
        self.output_layer = -(hidden_state_skip_layer + 1)
        self.apply_final_norm = apply_final_norm

    @property
    def max_length(self) -> int:
        return self.text_len + self.crop_start

    def tokenize(self, captions):
        """The templated prompts' ids and mask [B, text_len + crop_start] (before the crop)."""
        if isinstance(captions, str):
            captions = [captions]
        return self.tokenizer([self.template.format(c) for c in captions], max_length=self.max_length)

    def __call__(self, captions):
        tokens = self.tokenize(captions)
        states = self.encoder(Tensor(tokens["input_ids"]), Tensor(tokens["attention_mask"]), self.output_layer)
        # official: the final norm only for intermediate layers, and only when asked (HunyuanVideo: never)
        if self.apply_final_norm and self.encoder.hidden_state_index(self.output_layer) != self.encoder.num_layers:
            states = self.encoder.norm(states)
        return states[:, self.crop_start:], tokens["attention_mask"][:, self.crop_start:]


def build_encoder(name: str, **overrides) -> "LlamaEncoder":
    """The encoder of a named size (declared when called under declare_only())."""
    return LlamaEncoder(**{**llama_config(name), **overrides})


def config_names():
    return sorted(_CONFIGS)
