"""CLIP text encoder (transformers' CLIPTextModel), frozen: HunyuanVideo's second text encoder, whose
pooled output (768-d for ViT-L/14, 77 tokens) feeds the DiT's `vector_in`; and its tokenizer.

Parameter names and order are transformers' CLIPTextModel state dict:
`text_model.embeddings.{token_embedding,position_embedding}.weight`, then per layer
`text_model.encoder.layers.{i}.self_attn.{k,v,q,out}_proj.{weight,bias}` (k, v, q: CLIPAttention's
registration order), `layer_norm1`, `mlp.fc1`, `mlp.fc2`, `layer_norm2`, then `text_model.final_layer_norm`.
`text_model.embeddings.position_ids` is a non-persistent buffer in current transformers (0..76) and is
recomputed here. The official openai/clip-vit-large-patch14 checkpoint is a whole CLIPModel: the
converter keeps the `text_model.*` keys and drops `vision_model.*`, `visual_projection.weight`,
`text_projection.weight`, `logit_scale` and, where an older export carries it,
`text_model.embeddings.position_ids`.

CLIP specifics kept on purpose: pre-norm LayerNorm (eps 1e-5, affine), learned absolute positions,
causal self-attention (padded keys masked as well when a mask is given), quick_gelu MLP,
final LayerNorm on every token; the pooled output is the final-normed state at the end-of-text token.
"""
import mindspore as ms
from mindspore import nn, ops

from ..layers.attention import merge_heads, split_heads
from ..layers.init import normal
from ..layers.linear import Linear
from ..layers.norms import LayerNorm
from .llama import FixedLengthTokenizer, attention_with_bias, causal_key_bias
from .t5 import Embedding

# The original CLIP configs carry eos_token_id = 2 (a stale value; the real end-of-text id is 49407).
# For that value transformers pools at argmax(input_ids): the first position of the largest id, which
# is the end-of-text token because it is the last id of the vocabulary (the pads after it share the id,
# argmax takes the first). For any other value it pools at the first position equal to eos_token_id.
LEGACY_EOS_TOKEN_ID = 2

_CONFIGS = {
    # openai/clip-vit-large-patch14 text tower (HunyuanVideo's text_encoder_2): 123,060,480 parameters
    "clip-vit-large-patch14": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                   num_attention_heads=12, max_position_embeddings=77),
    # ModelScope's (= Stable Diffusion 2's) text encoder: OpenCLIP ViT-H/14's text tower in transformers'
    # names with its last block dropped (23 of 24, the penultimate layer) before the final
    # LayerNorm, erf GELU: 340,387,840 parameters
    "clip-vit-h-14-sd2": dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                              num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu"),
    # a stand-in for tests: the end-of-text id is the last of 64 as in CLIP's vocabulary
    "tiny": dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=16),
}


def clip_text_config(name: str) -> dict:
    """Keyword arguments of CLIPTextEncoder for a named size."""
    if name not in _CONFIGS:
        raise KeyError(f"unknown CLIP text config {name!r}; known: {sorted(_CONFIGS)}")
    return dict(_CONFIGS[name], layer_norm_eps=1e-5, eos_token_id=LEGACY_EOS_TOKEN_ID)


def quick_gelu(x):
    """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x)."""
    return x * ops.sigmoid(1.702 * x)


def first_max_position(values):
    """[B, N] -> [B] int32: the first index of each row's maximum (torch.argmax's tie rule, which
    MindSpore's argmax does not promise). Compared in fp32: exact for ids below 2^24."""
    values = values.astype(ms.float32)
    n = values.shape[1]
    positions = ops.arange(n).astype(ms.float32)[None, :]
    at_max = values == values.max(axis=-1, keepdims=True)
    return ops.where(at_max, positions, float(n)).min(axis=-1).astype(ms.int32)


def rows_at(x, index):
    """x [B, N, D], index [B] -> [B, D] (x[b, index[b]])."""
    b, n, d = x.shape
    flat = ops.arange(b).astype(ms.int32) * n + index.astype(ms.int32)
    return ops.gather(x.reshape(b * n, d), flat, 0)


class CLIPTextEmbeddings(nn.Cell):
    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int, init_std: float = 0.02):
        super().__init__()
        self.token_embedding = Embedding(vocab_size, hidden_size, std=init_std)
        self.position_embedding = Embedding(max_position_embeddings, hidden_size, std=init_std)
        self.max_positions = max_position_embeddings

    def construct(self, input_ids):
        n = input_ids.shape[1]
        if n > self.max_positions:
            raise ValueError(f"sequence length {n} exceeds max_position_embeddings {self.max_positions}")
        return self.token_embedding(input_ids) + self.position_embedding(ops.arange(n))[None]


class CLIPAttention(nn.Cell):
    def __init__(self, hidden_size: int, num_heads: int, num_layers: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (hidden_size // num_heads) ** -0.5
        in_std = hidden_size ** -0.5 * (2 * num_layers) ** -0.5  # transformers' _init_weights
        # registration order k, v, q, out = the official state-dict order
        self.k_proj = Linear(hidden_size, hidden_size, init=normal(in_std))
        self.v_proj = Linear(hidden_size, hidden_size, init=normal(in_std))
        self.q_proj = Linear(hidden_size, hidden_size, init=normal(in_std))
        self.out_proj = Linear(hidden_size, hidden_size, init=normal(hidden_size ** -0.5))

    def construct(self, x, bias):
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        return self.out_proj(merge_heads(attention_with_bias(q, k, v, bias, self.scale)))


class CLIPMLP(nn.Cell):
    def __init__(self, hidden_size: int, intermediate_size: int, num_layers: int, hidden_act: str = "quick_gelu"):
        super().__init__()
        if hidden_act not in ("quick_gelu", "gelu"):
            raise ValueError(f"hidden_act={hidden_act!r}: expected quick_gelu or gelu")
        self.quick = hidden_act == "quick_gelu"
        self.fc1 = Linear(hidden_size, intermediate_size, init=normal((2 * hidden_size) ** -0.5))
        self.fc2 = Linear(intermediate_size, hidden_size, init=normal(hidden_size ** -0.5 * (2 * num_layers) ** -0.5))

    def construct(self, x):
        h = self.fc1(x)
        return self.fc2(quick_gelu(h) if self.quick else ops.gelu(h, approximate="none"))


class CLIPEncoderLayer(nn.Cell):
    def __init__(self, hidden_size, intermediate_size, num_heads, num_layers, eps, hidden_act="quick_gelu"):
        super().__init__()
        self.self_attn = CLIPAttention(hidden_size, num_heads, num_layers)
        self.layer_norm1 = LayerNorm(hidden_size, eps, affine=True)
        self.mlp = CLIPMLP(hidden_size, intermediate_size, num_layers, hidden_act)
        self.layer_norm2 = LayerNorm(hidden_size, eps, affine=True)

    def construct(self, x, bias):
        x = x + self.self_attn(self.layer_norm1(x), bias)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Cell):
    def __init__(self, hidden_size, intermediate_size, num_layers, num_heads, eps, hidden_act="quick_gelu"):
        super().__init__()
        self.layers = nn.CellList([CLIPEncoderLayer(hidden_size, intermediate_size, num_heads, num_layers, eps,
                                                    hidden_act) for _ in range(num_layers)])

    def construct(self, x, bias):
        for layer in self.layers:
            x = layer(x, bias)
        return x


class CLIPTextTransformer(nn.Cell):
    def __init__(self, vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                 max_position_embeddings, layer_norm_eps, eos_token_id, hidden_act="quick_gelu"):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(vocab_size, hidden_size, max_position_embeddings)
        self.encoder = CLIPEncoder(hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                                   layer_norm_eps, hidden_act)
        self.final_layer_norm = LayerNorm(hidden_size, layer_norm_eps, affine=True)
        self.eos_token_id = eos_token_id

    def pooled_index(self, input_ids):
        """Position of the end-of-text token per row (see LEGACY_EOS_TOKEN_ID)."""
        if self.eos_token_id == LEGACY_EOS_TOKEN_ID:
            return first_max_position(input_ids)
        return first_max_position(input_ids == self.eos_token_id)

    def construct(self, input_ids, attention_mask=None):
        x = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = ops.ones(input_ids.shape, ms.float32)
        x = self.final_layer_norm(self.encoder(x, causal_key_bias(attention_mask, input_ids.shape[1])))
        return x, rows_at(x, self.pooled_index(input_ids))


class CLIPTextEncoder(nn.Cell):
    """input_ids [B, N<=77] int, attention_mask [B, N] (optional; 1 = token) -> (last_hidden_state
    [B, N, hidden], pooled [B, hidden]) in fp32, as CLIPTextModel's last_hidden_state / pooler_output."""

    def __init__(self, vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                 num_attention_heads: int, max_position_embeddings: int = 77, layer_norm_eps: float = 1e-5,
                 eos_token_id: int = LEGACY_EOS_TOKEN_ID, hidden_act: str = "quick_gelu"):
        super().__init__()
        self.text_model = CLIPTextTransformer(vocab_size, hidden_size, intermediate_size, num_hidden_layers,
                                              num_attention_heads, max_position_embeddings, layer_norm_eps,
                                              eos_token_id, hidden_act)

    def construct(self, input_ids, attention_mask=None):
        states, pooled = self.text_model(input_ids, attention_mask)
        return states.astype(ms.float32), pooled.astype(ms.float32)


class CLIPStatesEncoder(CLIPTextEncoder):
    """The last hidden states [B, N, hidden] alone, with the causal mask only: ModelScope's
    pipeline passes no attention mask, so the padding's states are the model's own (the
    StatesEncoder's mask argument is accepted and not applied)."""

    def construct(self, input_ids, attention_mask=None):
        return self.text_model(input_ids, None)[0].astype(ms.float32)


class CLIPTokenizer(FixedLengthTokenizer):
    """CLIP's BPE tokenizer.json (openai/clip-vit-large-patch14, HunyuanVideo's text_encoder_2) with
    transformers' `padding="max_length", max_length=77, truncation=True`: <|startoftext|>, the text,
    <|endoftext|> (kept when truncating), then <|endoftext|> as padding (CLIP's pad token)."""

    pad_fallbacks = ("<|endoftext|>",)

    def __init__(self, path: str, max_length: int = 77, pad_token: str = None):
        super().__init__(path, max_length, pad_token)


def build_encoder(name: str, **overrides) -> "CLIPTextEncoder":
    """The encoder of a named size (declared when called under declare_only())."""
    return CLIPTextEncoder(**{**clip_text_config(name), **overrides})


def build_states_encoder(name: str, **overrides) -> CLIPStatesEncoder:
    return CLIPStatesEncoder(**{**clip_text_config(name), **overrides})


def config_names():
    return sorted(_CONFIGS)
