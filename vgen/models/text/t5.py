"""T5 v1.1 text encoder (encoder half only, as transformers' T5EncoderModel), frozen, used by
OpenSora 1.0 (120 tokens) and 1.1 (200 tokens); and its tokenizer.

Parameter names and order are transformers' state dict: `shared.weight`, then
`encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight` (+ `relative_attention_bias.weight` in
block 0 only), `...layer.0.layer_norm.weight`, `...layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight`,
`...layer.1.layer_norm.weight`, `encoder.final_layer_norm.weight`. The official state dict also
lists `encoder.embed_tokens.weight`, which is the same tensor as `shared.weight` (tied); it is
not a separate parameter here.

T5 specifics kept on purpose: RMS-style layer norm (no mean, no bias), no 1/sqrt(d) attention
scaling (folded into the init), one relative-position bias table (block 0) shared by all blocks,
gated tanh-GELU feed-forward, no embedding scaling.
"""
import math
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import merge_heads, split_heads
from ..layers.init import new_param, normal
from ..layers.linear import Linear
from ..layers.norms import RMSNorm

NEG_INF = -1e9  # added in fp32 to the logits of padded keys
FP16_MAX = 65504.0

_CONFIGS = {
    # google/t5-v1_1-xxl (DeepFloyd/t5-v1_1-xxl): encoder 4,762,310,656 parameters
    "t5-v1_1-xxl": dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
    # a few-thousand-parameter stand-in for tests; d_kv * heads != d_model on purpose
    "tiny": dict(vocab_size=64, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_heads=4),
}


def t5_config(name: str) -> dict:
    """Keyword arguments of T5Encoder for a named size."""
    if name not in _CONFIGS:
        raise KeyError(f"unknown T5 config {name!r}; known: {sorted(_CONFIGS)}")
    return dict(_CONFIGS[name], relative_attention_num_buckets=32, relative_attention_max_distance=128,
                layer_norm_epsilon=1e-6)


def bucket_of_distance(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every distance 0..max_distance (larger ones share the last bucket), by transformers'
    formula: exact buckets below num_buckets // 2, then log-spaced ones up to max_distance. The log
    part runs in fp32 in the reference, and its truncation to an integer is sensitive to the last
    bit at distances 16, 32, 64 (exactly 2, 4, 6); MindSpore's fp32 log lands a bit low there, so
    the table is computed once on the host with numpy and looked up on the device."""
    max_exact = num_buckets // 2
    distance = np.arange(max_distance + 1)
    # clamping to >= 1 only keeps log finite for distances that take the exact branch anyway
    ratio = np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact)
    scaled = np.log(ratio) / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
    return np.where(distance < max_exact, distance, large).astype(np.int32)


def relative_position_bucket(relative_position, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128, table=None):
    """Bucket ids of (key - query) offsets, as transformers' T5Attention._relative_position_bucket.
    With bidirectional, the upper half of the buckets holds positive offsets. `table` is
    bucket_of_distance() for the buckets of one direction, as a Tensor (built here when not given)."""
    half = num_buckets // 2 if bidirectional else num_buckets
    if table is None:
        table = Tensor(bucket_of_distance(half, max_distance))
    relative_position = relative_position.astype(ms.int32)
    if bidirectional:
        base = (relative_position > 0).astype(ms.int32) * half
        distance = ops.abs(relative_position)
    else:
        base = ops.zeros_like(relative_position)
        distance = ops.maximum(-relative_position, ops.zeros_like(relative_position))
    distance = ops.minimum(distance, ops.full_like(distance, max_distance))
    return base + ops.gather(table, distance, 0)


class Embedding(nn.Cell):
    """torch.nn.Embedding: `weight` [num, dim], rows looked up by integer ids."""

    def __init__(self, num_embeddings: int, dim: int, std: float = 1.0):
        super().__init__()
        self.weight = new_param((num_embeddings, dim), normal(std))

    def construct(self, ids):
        return ops.gather(self.weight, ids.astype(ms.int32), 0)


def clamp_fp16(x):
    """T5Block's fp16 guard: once any value overflowed to inf, clamp everything to max - 1000."""
    if x.dtype != ms.float16:
        return x
    limit = (FP16_MAX - 1000.0 * ops.isinf(x).any().astype(ms.float32)).astype(x.dtype)
    return ops.clamp(x, -limit, limit)


def biased_attention(q, k, v, bias):
    """softmax(q k^T + bias) v on [B, H, N, D] with NO 1/sqrt(D) scale (T5); bias [B|1, H|1, Nq, Nk]
    in fp32 holds the relative-position bias plus the key-padding mask; the softmax runs in fp32."""
    logits = ops.matmul(q, k.swapaxes(-1, -2)).astype(ms.float32) + bias
    return ops.matmul(ops.softmax(logits, -1).astype(v.dtype), v)


class T5Attention(nn.Cell):
    def __init__(self, d_model: int, d_kv: int, num_heads: int, has_relative_attention_bias: bool = False,
                 num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        inner = num_heads * d_kv
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        # Mesh-TensorFlow init (transformers' _init_weights): the softmax scale lives in q's std
        self.q = Linear(d_model, inner, bias=False, init=normal((d_model * d_kv) ** -0.5))
        self.k = Linear(d_model, inner, bias=False, init=normal(d_model ** -0.5))
        self.v = Linear(d_model, inner, bias=False, init=normal(d_model ** -0.5))
        self.o = Linear(inner, d_model, bias=False, init=normal(inner ** -0.5))
        self.relative_attention_bias = (Embedding(num_buckets, num_heads, std=d_model ** -0.5)
                                        if has_relative_attention_bias else None)
        # a constant lookup table, not a parameter (see bucket_of_distance)
        self.bucket_table = (Tensor(bucket_of_distance(num_buckets // 2, max_distance))
                             if has_relative_attention_bias else None)

    def compute_bias(self, length: int):
        """[1, H, N, N] fp32 bias of every (query, key) pair from its bucketed offset."""
        positions = ops.arange(length)
        offsets = positions[None, :] - positions[:, None]  # key - query
        buckets = relative_position_bucket(offsets, True, self.num_buckets, self.max_distance, self.bucket_table)
        values = self.relative_attention_bias(buckets).astype(ms.float32)  # [N, N, H]
        return values.transpose(2, 0, 1)[None]

    def construct(self, x, bias):
        q = split_heads(self.q(x), self.num_heads)
        k = split_heads(self.k(x), self.num_heads)
        v = split_heads(self.v(x), self.num_heads)
        return self.o(merge_heads(biased_attention(q, k, v, bias)))


class T5LayerSelfAttention(nn.Cell):
    def __init__(self, d_model, d_kv, num_heads, has_relative_attention_bias, num_buckets, max_distance, eps):
        super().__init__()
        self.SelfAttention = T5Attention(d_model, d_kv, num_heads, has_relative_attention_bias, num_buckets,
                                         max_distance)
        self.layer_norm = RMSNorm(d_model, eps)

    def construct(self, x, bias):
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseGatedActDense(nn.Cell):
    """wo(gelu_tanh(wi_0 x) * wi_1 x): T5 v1.1's 'gated-gelu' (gelu_new = tanh approximation)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.wi_0 = Linear(d_model, d_ff, bias=False, init=normal(d_model ** -0.5))
        self.wi_1 = Linear(d_model, d_ff, bias=False, init=normal(d_model ** -0.5))
        self.wo = Linear(d_ff, d_model, bias=False, init=normal(d_ff ** -0.5))

    def construct(self, x):
        return self.wo(ops.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class T5LayerFF(nn.Cell):
    def __init__(self, d_model: int, d_ff: int, eps: float):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(d_model, d_ff)
        self.layer_norm = RMSNorm(d_model, eps)

    def construct(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Cell):
    def __init__(self, d_model, d_kv, d_ff, num_heads, has_relative_attention_bias, num_buckets, max_distance, eps):
        super().__init__()
        self.layer = nn.CellList([
            T5LayerSelfAttention(d_model, d_kv, num_heads, has_relative_attention_bias, num_buckets,
                                 max_distance, eps),
            T5LayerFF(d_model, d_ff, eps),
        ])

    def construct(self, x, bias):
        x = clamp_fp16(self.layer[0](x, bias))
        return clamp_fp16(self.layer[1](x))


class T5Stack(nn.Cell):
    """The encoder stack; token embedding is done by the owner (`shared`, tied in the official model)."""

    def __init__(self, d_model, d_kv, d_ff, num_layers, num_heads, num_buckets, max_distance, eps):
        super().__init__()
        self.block = nn.CellList([
            T5Block(d_model, d_kv, d_ff, num_heads, i == 0, num_buckets, max_distance, eps)
            for i in range(num_layers)])
        self.final_layer_norm = RMSNorm(d_model, eps)

    def construct(self, x, key_mask):
        n = x.shape[1]
        bias = self.block[0].layer[0].SelfAttention.compute_bias(n)  # [1, H, N, N], reused by every block
        bias = bias + ((1.0 - key_mask.astype(ms.float32)) * NEG_INF)[:, None, None, :]
        for block in self.block:
            x = block(x, bias)
        return self.final_layer_norm(x)


class T5Encoder(nn.Cell):
    """input_ids [B, L] int, attention_mask [B, L] (1 = token, 0 = padding) -> last hidden state
    [B, L, d_model] in fp32 (what OpenSora feeds its caption embedder)."""

    def __init__(self, vocab_size: int, d_model: int, d_kv: int, d_ff: int, num_layers: int, num_heads: int,
                 relative_attention_num_buckets: int = 32, relative_attention_max_distance: int = 128,
                 layer_norm_epsilon: float = 1e-6):
        super().__init__()
        self.shared = Embedding(vocab_size, d_model, std=1.0)
        self.encoder = T5Stack(d_model, d_kv, d_ff, num_layers, num_heads, relative_attention_num_buckets,
                               relative_attention_max_distance, layer_norm_epsilon)

    def construct(self, input_ids, attention_mask=None):
        x = self.shared(input_ids)
        if attention_mask is None:
            attention_mask = ops.ones(input_ids.shape, ms.float32)
        return self.encoder(x, attention_mask).astype(ms.float32)


# ---- tokenizer --------------------------------------------------------------------------------

def framed(pieces, length: int, pad_id: int, head=(), tail=()) -> dict:
    """Token pieces per text -> {"input_ids", "attention_mask"} int32 [B, length]: head + the pieces
    cut to fit + tail, right-padded with pad_id; mask 1 on everything but the padding."""
    pieces = list(pieces)
    ids = np.full((len(pieces), length), pad_id, np.int32)
    mask = np.zeros((len(pieces), length), np.int32)
    room = length - len(head) - len(tail)
    for row, p in enumerate(pieces):
        seq = list(head) + list(p)[:room] + list(tail)
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


class T5Tokenizer:
    """T5's tokenizer with HF's `padding="max_length", truncation=True` behaviour: the text's pieces,
    cut to max_length - 1, then `</s>`, then `<pad>` up to max_length; mask 1 on text and `</s>`.

    `path` is a `tokenizer.json` (read with the `tokenizers` package), a sentencepiece
    `spiece.model` (read with `sentencepiece`), or a directory holding either (tokenizer.json first).
    """

    def __init__(self, path: str, max_length: int = 120):
        self.max_length = max_length
        path = self._resolve(path)
        if path.endswith(".json"):
            self._init_tokenizers(path)
        else:
            self._init_sentencepiece(path)
        if self.eos_id is None or self.eos_id < 0 or self.pad_id is None or self.pad_id < 0:
            raise ValueError(f"{path} defines no </s> or <pad> token")

    @staticmethod
    def _resolve(path: str) -> str:
        if not os.path.isdir(path):
            return path
        for name in ("tokenizer.json", "spiece.model"):
            candidate = os.path.join(path, name)
            if os.path.exists(candidate):
                return candidate
        raise FileNotFoundError(f"{path} holds neither tokenizer.json nor spiece.model")

    def _init_tokenizers(self, path: str):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(path)
        # the file's own padding/truncation settings would fight ours
        tok.no_padding()
        tok.no_truncation()
        self.eos_id, self.pad_id = tok.token_to_id("</s>"), tok.token_to_id("<pad>")
        # without special tokens: T5's post-processor would add </s> itself, we add it after truncation
        self._encode = lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        self.backend = "tokenizers"

    def _init_sentencepiece(self, path: str):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=path)
        self.eos_id, self.pad_id = sp.eos_id(), sp.pad_id()
        self._encode = lambda texts: sp.encode(texts, out_type=int)
        self.backend = "sentencepiece"

    def __call__(self, texts, max_length: int = None):
        """texts (str or list) -> {"input_ids", "attention_mask"}: int32 numpy arrays [B, max_length]."""
        if isinstance(texts, str):
            texts = [texts]
        return framed(self._encode(list(texts)), max_length or self.max_length, self.pad_id, tail=(self.eos_id,))


def build_encoder(name: str, **overrides) -> "T5Encoder":
    """The encoder of a named size (declared when called under declare_only())."""
    return T5Encoder(**{**t5_config(name), **overrides})


def config_names():
    return sorted(_CONFIGS)
