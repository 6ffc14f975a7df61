"""BERT text encoder (transformers' BertModel), frozen: Step-Video-T2V's second text encoder
"HunyuanCLIP" (HunyuanDiT's clip_text_encoder), whose last hidden states [B, 77, 1024] the DiT
prepends to the Step-LLM states through its clip_projection; and its WordPiece tokenizer.

Parameter names and order are BertModel's state dict without the pooler (its output is not used):
`embeddings.{word,position,token_type}_embeddings.weight`, `embeddings.LayerNorm.{weight,bias}`, then
per layer `encoder.layer.{i}.attention.self.{query,key,value}`, `attention.output.dense`,
`attention.output.LayerNorm`, `intermediate.dense`, `output.dense`, `output.LayerNorm` (weights and
biases). The released file prefixes every key with `bert.` (the converter strips it) and may carry
`embeddings.position_ids` (recomputed). The HunyuanDiT CLIP config: hidden 1024, 24 layers, 16 heads,
intermediate 4096, vocab 47020, 512 positions, 2 token types, LayerNorm eps 1e-12, exact GELU:
350,986,240 parameters.

BERT specifics kept on purpose: post-norm residual blocks, padded keys masked, token types all 0
(the official call passes none), absolute positions 0..N-1.
"""
import json
import os

import mindspore as ms
from mindspore import nn, ops

from ..layers.attention import AttentionCore, merge_heads, split_heads
from ..layers.init import normal
from ..layers.linear import Linear
from ..layers.norms import LayerNorm
from .llama import FixedLengthTokenizer
from .t5 import Embedding

_CONFIGS = {
    # HunyuanDiT's clip_text_encoder (Step-Video-T2V's hunyuan_clip)
    "hunyuan-clip": dict(vocab_size=47020, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                         max_positions=512, type_vocab_size=2, eps=1e-12),
    # a stand-in for tests
    "tiny": dict(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_positions=16,
                 type_vocab_size=2, eps=1e-12),
}


def bert_config(name: str) -> dict:
    if name not in _CONFIGS:
        raise KeyError(f"unknown BERT config {name!r}; known: {sorted(_CONFIGS)}")
    return dict(_CONFIGS[name])


def dense(i: int, o: int) -> Linear:
    return Linear(i, o, init=normal(0.02))


class BertEmbeddings(nn.Cell):
    def __init__(self, vocab, hidden, positions, types, eps):
        super().__init__()
        self.word_embeddings = Embedding(vocab, hidden, std=0.02)
        self.position_embeddings = Embedding(positions, hidden, std=0.02)
        self.token_type_embeddings = Embedding(types, hidden, std=0.02)
        self.LayerNorm = LayerNorm(hidden, eps, affine=True)

    def construct(self, ids):
        n = ids.shape[1]
        positions = ops.arange(0, n, dtype=ms.int32)[None]
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + \
            self.token_type_embeddings(ops.zeros_like(ids).astype(ms.int32))
        return self.LayerNorm(x)


class BertSelfAttention(nn.Cell):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = dense(hidden, hidden), dense(hidden, hidden), dense(hidden, hidden)
        self.core = AttentionCore(hidden // heads)

    def construct(self, x, mask):
        q, k, v = (split_heads(f(x), self.heads) for f in (self.query, self.key, self.value))
        return merge_heads(self.core(q, k, v, mask))


class DenseLayerNorm(nn.Cell):
    """BertSelfOutput / BertOutput: LayerNorm(dense(x) + residual)."""

    def __init__(self, i, hidden, eps):
        super().__init__()
        self.dense = dense(i, hidden)
        self.LayerNorm = LayerNorm(hidden, eps, affine=True)

    def construct(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Cell):
    def __init__(self, hidden, heads, eps):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = DenseLayerNorm(hidden, hidden, eps)

    def construct(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Cell):
    def __init__(self, hidden, inner):
        super().__init__()
        self.dense = dense(hidden, inner)

    def construct(self, x):
        return ops.gelu(self.dense(x), approximate="none")


class BertLayer(nn.Cell):
    def __init__(self, hidden, heads, inner, eps):
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps)
        self.intermediate = BertIntermediate(hidden, inner)
        self.output = DenseLayerNorm(inner, hidden, eps)

    def construct(self, x, mask):
        h = self.attention(x, mask)
        return self.output(self.intermediate(h), h)


class BertEncoderStack(nn.Cell):
    def __init__(self, hidden, heads, inner, eps, num_layers):
        super().__init__()
        self.layer = nn.CellList([BertLayer(hidden, heads, inner, eps) for _ in range(num_layers)])

    def construct(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertEncoder(nn.Cell):
    """input_ids [B, N] int, attention_mask [B, N] (1 = token) -> last_hidden_state [B, N, hidden] fp32."""

    def __init__(self, vocab_size=47020, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                 max_positions=512, type_vocab_size=2, eps=1e-12):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_positions, type_vocab_size, eps)
        self.encoder = BertEncoderStack(hidden_size, num_heads, intermediate_size, eps, num_layers)

    def construct(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = ops.ones(input_ids.shape, ms.float32)
        x = self.embeddings(input_ids)
        return self.encoder(x, attention_mask.astype(ms.float32)).astype(ms.float32)


class BertTokenizer(FixedLengthTokenizer):
    """transformers' BertTokenizer (WordPiece on vocab.txt, [CLS] text [SEP], [PAD] = 0) called with
    `padding="max_length", truncation=True`. Lower-casing follows a tokenizer_config.json beside
    vocab.txt (`do_lower_case`, BertTokenizer's default True). `path`: vocab.txt or its directory."""

    def __init__(self, path: str, max_length: int = 77, pad_token: str = "[PAD]"):
        from tokenizers.implementations import BertWordPieceTokenizer

        if os.path.isdir(path):
            path = os.path.join(path, "vocab.txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path} (a BERT vocab.txt or its directory)")
        config = os.path.join(os.path.dirname(path), "tokenizer_config.json")
        lower = True
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as f:
                lower = bool(json.load(f).get("do_lower_case", True))
        self.path, self.max_length = path, max_length
        self.tokenizer = BertWordPieceTokenizer(path, lowercase=lower)._tokenizer
        self.pad_token, self.pad_id = pad_token, self.tokenizer.token_to_id(pad_token)
        if self.pad_id is None:
            raise ValueError(f"{path}: no {pad_token} token in the vocabulary")


def build_encoder(name: str, **overrides) -> BertEncoder:
    """The encoder of a named size (declared when called under declare_only())."""
    return BertEncoder(**{**bert_config(name), **overrides})


def config_names():
    return sorted(_CONFIGS)
