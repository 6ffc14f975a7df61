"""Step-LLM (Step-Video-T2V's `step_llm`, class Step1Model), frozen: the 48-layer text encoder whose
last hidden states [B, 320, 6144] the Step-Video DiT reads (caption_norm -> caption_projection).

Parameter names and order are Step1Model's state dict: `tok_embeddings.word_embeddings.weight`, then
per layer `transformer.layers.{i}.attention.wqkv.weight`, `attention.wo.weight`,
`feed_forward.w1.weight`, `feed_forward.w2.weight`, `attention_norm.weight`, `ffn_norm.weight`; no
biases, no final norm, no lm_head. The official config (step_llm/config.json): hidden 6144, 48 layers,
48 heads of 128, 8 key-value groups, ffn 16896, vocab 65536, RMSNorm eps 1e-5: 19,579,600,896
parameters.

What a port gets wrong:
- wqkv rows: the 48 query heads first ([0, 6144)), then per key-value group g its key and value
  heads side by side ([6144 + 256 g, +128) key, the next 128 value).
- Query head h reads key-value group h // 6 (repeat_interleave).
- Positions are not rotary: the attention kernel (the closed Optimus flash kernel) adds a causal
  sqrt-ALiBi bias, -slope[h] * sqrt(i - j) for keys j <= i, after the 1/sqrt(128) scale, with the
  ALiBi slopes of 48 heads (32 as a power of two: 2^(-8 k / 32), k = 1..32, then 2^(-4 k / 32) for
  k = 1, 3, .., 31), as the public PyTorch port of Step1 (modeling_step1.py) and the MindSpore /
  MindSpeed ports compute it.
- The padding mask is not applied inside the model (right padding under a causal mask never reaches
  a valid token); the caller keeps the mask for the DiT's cross-attention.
- w1 is [gate; up] stacked: silu(first half) * second half.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import merge_heads, split_heads
from ..layers.init import normal
from ..layers.linear import Linear
from ..layers.norms import RMSNorm
from .llama import attention_with_bias, repeat_kv_heads
from .t5 import Embedding, framed

NEG_INF = -1e9

_STEP_LLM = dict(vocab_size=65536, hidden_size=6144, num_layers=48, num_heads=48, num_groups=8, ffn_hidden_size=16896,
                 eps=1e-5)
_CONFIGS = {
    "step-llm": _STEP_LLM,
    # a few-thousand-parameter stand-in for tests: 6 heads in 2 groups, 3 layers
    "tiny": dict(vocab_size=96, hidden_size=48, num_layers=3, num_heads=6, num_groups=2, ffn_hidden_size=256,
                 eps=1e-5),
}


def step_llm_config(name: str) -> dict:
    if name not in _CONFIGS:
        raise KeyError(f"unknown Step-LLM config {name!r}; known: {sorted(_CONFIGS)}")
    return dict(_CONFIGS[name])


def alibi_slopes(heads: int) -> np.ndarray:
    """ALiBi slopes (Press et al.; for a head count that is not a power of two, the interleaved
    extension): n = 2^floor(log2 heads) slopes 2^(-8k/n), then 2^(-4k/n) for odd k."""
    n = 2 ** int(math.floor(math.log2(heads)))
    slopes = [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]
    slopes += [2.0 ** (-4.0 * k / n) for k in range(1, 2 * (heads - n), 2)]
    return np.array(slopes, np.float32)


def sqrt_alibi_bias(slopes: Tensor, length: int):
    """[1, H, N, N] fp32: -slope[h] * sqrt(i - j) for keys j <= i, NEG_INF for future keys."""
    pos = ops.arange(0, length, dtype=ms.float32)
    dist = pos[:, None] - pos[None, :]  # i - j
    past = dist >= 0
    bias = -ops.sqrt(ops.maximum(dist, ops.zeros_like(dist)))[None] * slopes[:, None, None]
    return ops.where(past[None], bias, ops.ones_like(bias) * NEG_INF)[None]


class MultiQueryAttention(nn.Cell):
    def __init__(self, hidden: int, heads: int, groups: int):
        super().__init__()
        self.heads, self.groups, self.head_dim = heads, groups, hidden // heads
        self.wqkv = Linear(hidden, hidden + 2 * self.head_dim * groups, bias=False, init=normal(0.02))
        self.wo = Linear(hidden, hidden, bias=False, init=normal(0.02))

    def construct(self, x, bias):
        b, n, c = x.shape
        qkv = self.wqkv(x)
        q = split_heads(qkv[..., :c], self.heads)
        kv = qkv[..., c:].reshape(b, n, self.groups, 2, self.head_dim).transpose(3, 0, 2, 1, 4)  # per group [k | v]
        per = self.heads // self.groups
        k, v = repeat_kv_heads(kv[0], per), repeat_kv_heads(kv[1], per)
        out = attention_with_bias(q, k, v, bias, self.head_dim ** -0.5)
        return self.wo(merge_heads(out))


class FeedForward(nn.Cell):
    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        ffn = 256 * ((ffn + 255) // 256)  # rounded up to a multiple of 256, as the official layer
        self.ffn = ffn
        self.w1 = Linear(hidden, 2 * ffn, bias=False, init=normal(0.02))
        self.w2 = Linear(ffn, hidden, bias=False, init=normal(0.02))

    def construct(self, x):
        h = self.w1(x)
        return self.w2(ops.silu(h[..., :self.ffn]) * h[..., self.ffn:])


class TransformerBlock(nn.Cell):
    def __init__(self, hidden: int, heads: int, groups: int, ffn: int, eps: float):
        super().__init__()
        # registration order = state-dict order: attention, feed_forward, attention_norm, ffn_norm
        self.attention = MultiQueryAttention(hidden, heads, groups)
        self.feed_forward = FeedForward(hidden, ffn)
        self.attention_norm = RMSNorm(hidden, eps)
        self.ffn_norm = RMSNorm(hidden, eps)

    def construct(self, x, bias):
        h = x + self.attention(self.attention_norm(x), bias)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Cell):
    def __init__(self, hidden, heads, groups, ffn, eps, num_layers):
        super().__init__()
        self.layers = nn.CellList([TransformerBlock(hidden, heads, groups, ffn, eps) for _ in range(num_layers)])

    def construct(self, x, bias):
        for layer in self.layers:
            x = layer(x, bias)
        return x


class WordEmbeddings(nn.Cell):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.word_embeddings = Embedding(vocab, hidden, std=0.02)

    def construct(self, ids):
        return self.word_embeddings(ids)


class StepLLMEncoder(nn.Cell):
    """input_ids [B, N] int (BOS, tokens, EOS, then padding) -> the last layer's states [B, N, hidden]
    in fp32 (no final norm). `attention_mask` is accepted and, as officially, not applied."""

    def __init__(self, vocab_size=65536, hidden_size=6144, num_layers=48, num_heads=48, num_groups=8,
                 ffn_hidden_size=16896, eps=1e-5):
        super().__init__()
        if num_heads % num_groups:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_groups {num_groups}")
        self.tok_embeddings = WordEmbeddings(vocab_size, hidden_size)
        self.transformer = Transformer(hidden_size, num_heads, num_groups, ffn_hidden_size, eps, num_layers)
        self.slopes = Tensor(alibi_slopes(num_heads))

    def construct(self, input_ids, attention_mask=None):
        x = self.tok_embeddings(input_ids)
        x = self.transformer(x, sqrt_alibi_bias(self.slopes, input_ids.shape[1]))
        return x.astype(ms.float32)


def build_encoder(name: str, **overrides) -> StepLLMEncoder:
    """The encoder of a named size (declared when called under declare_only())."""
    return StepLLMEncoder(**{**step_llm_config(name), **overrides})


def config_names():
    return sorted(_CONFIGS)


class StepTokenizer:
    """Step-LLM's tokenizer (Wrapped_StepChatTokenizer on step1_chat_tokenizer.model, sentencepiece):
    the caption's pieces cut to max_length - 2, framed as [BOS=1] + pieces + [EOS=2], right-padded with
    PAD=2; mask 1 from BOS to EOS. `path`: the .model file or its directory."""

    BOS, EOS, PAD = 1, 2, 2
    FILES = ("step1_chat_tokenizer.model",)

    def __init__(self, path: str, max_length: int = 320):
        import os

        import sentencepiece as spm

        if os.path.isdir(path):
            path = os.path.join(path, self.FILES[0])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such tokenizer file (step1_chat_tokenizer.model)")
        self.path, self.max_length = path, max_length
        self._sp = spm.SentencePieceProcessor(model_file=path)

    def __call__(self, texts, max_length: int = None):
        """texts (str or list) -> {"input_ids", "attention_mask"}: int32 numpy arrays [B, max_length]."""
        if isinstance(texts, str):
            texts = [texts]
        return framed(self._sp.encode(list(texts), out_type=int), max_length or self.max_length, self.PAD,
                      head=(self.BOS,), tail=(self.EOS,))
