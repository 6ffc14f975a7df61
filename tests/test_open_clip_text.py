"""OpenCLIP ViT-H/14 text tower as VideoCrafter2 / T2V-Turbo's FrozenOpenCLIPEmbedder(layer="penultimate").

The full size is only declared: its layout is checked against tests/layouts/open_clip_vit_h14_text.txt
(read off open_clip v2.22.0's CLIP / TextTransformer / ResidualAttentionBlock and torch's
nn.MultiheadAttention). The tiny size runs on random weights large enough that attention is far from
uniform and is compared with a float64 numpy re-implementation of the official formulas. The tokenizer
is a tiny tokenizer.json with CLIP's special tokens (tests/tiny_tokenizers.py).
"""
import math
import re

import numpy as np
import pytest
from mindspore import Tensor

from conftest import layout_lines
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.text.open_clip import OpenCLIPTokenizer, build_encoder, open_clip_text_config

FULL_PARAMS = 354_032_641  # 77*1024 + 1024*1024 + 1 + 24 * 12,596,224 + 49408*1024 + 2*1024


# ---- (1) full-size layout ----------------------------------------------------------------------

def test_full_preset_has_the_official_layout_and_count():
    cfg = open_clip_text_config("open-clip-vit-h-14")
    assert (cfg["width"], cfg["heads"], cfg["layers"], cfg["context_length"], cfg["vocab_size"]) == \
        (1024, 16, 24, 77, 49408)
    with declare_only():
        net = build_encoder("open-clip-vit-h-14")
    lines = [f"{n} {list(p.shape)}" for n, p in named_params(net)]
    assert lines == layout_lines("open_clip_vit_h14_text.txt")
    assert len(lines) == 294
    assert count_params(net) == (FULL_PARAMS, 0)
    # penultimate: 23 of the 24 declared blocks run
    assert net.num_blocks == 23


def test_tiny_preset_is_the_same_code():
    def pattern(n):
        return re.sub(r"resblocks\.\d+\.", "resblocks.*.", n)

    with declare_only():
        full, tiny = build_encoder("open-clip-vit-h-14"), build_encoder("tiny")
    assert [*dict.fromkeys(pattern(n) for n, _ in named_params(tiny))] == \
        [*dict.fromkeys(pattern(n) for n, _ in named_params(full))]
    assert tiny.num_blocks == 2


# ---- (2) tiny forward vs numpy -----------------------------------------------------------------

def randomize(net, seed):
    """Norms ~1, matrices ~N(0, 1/fan_in) with the q and k rows of in_proj doubled, embeddings ~N(0, 1):
    the official inits would leave attention nearly uniform and hide mask and order errors."""
    rng = np.random.default_rng(seed)
    for name, p in named_params(net):
        shape = tuple(p.shape)
        if re.search(r"ln_\w+\.weight$", name):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            value = 0.2 * rng.standard_normal(shape)
        elif "embedding" in name or len(shape) < 2:
            value = rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(shape[-1])
            if name.endswith("in_proj_weight"):
                value[: 2 * shape[1]] *= 2.0  # q and k rows
        p.set_data(Tensor(np.asarray(value, np.float32)))
    return net


def tiny(seed=0, **overrides):
    with declare_only():
        net = build_encoder("tiny", **overrides)
    return randomize(materialize(net, seed), seed)


def params_np(net):
    return {n: p.asnumpy().astype(np.float64) for n, p in named_params(net)}


_erf = np.vectorize(math.erf)


def np_ln(P, x, pre):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * P[pre + ".weight"] + P[pre + ".bias"]


def np_blocks(P, x, prefix, blocks, heads, mask=0.0, gelu="erf"):
    """open_clip ResidualAttentionBlocks `prefix`{i} for i < blocks on x [B, N, W]: pre-LN;
    nn.MultiheadAttention with in_proj rows q, k, v and the additive `mask`."""
    b, n, w = x.shape
    d = w // heads

    def act(x):
        if gelu == "erf":
            return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
        return x / (1.0 + np.exp(-1.702 * x))  # quick_gelu, to show the test tells them apart

    for i in range(blocks):
        pre = f"{prefix}{i}."
        h = np_ln(P, x, pre + "ln_1")
        qkv = h @ P[pre + "attn.in_proj_weight"].T + P[pre + "attn.in_proj_bias"]
        q, k, v = (t.reshape(b, n, heads, d).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + mask
        e = np.exp(logits - logits.max(-1, keepdims=True))
        a = (e / e.sum(-1, keepdims=True)) @ v
        a = a.transpose(0, 2, 1, 3).reshape(b, n, w)
        x = x + a @ P[pre + "attn.out_proj.weight"].T + P[pre + "attn.out_proj.bias"]
        h = act(np_ln(P, x, pre + "ln_2") @ P[pre + "mlp.c_fc.weight"].T + P[pre + "mlp.c_fc.bias"])
        x = x + h @ P[pre + "mlp.c_proj.weight"].T + P[pre + "mlp.c_proj.bias"]
    return x


def np_reference(P, ids, cfg, skip_last=1, gelu="erf"):
    """lvdm encode_with_transformer: token + positional embedding, the blocks under the
    -inf-above-diagonal mask of build_attention_mask, stopping `skip_last` blocks before the end,
    then ln_final."""
    n = ids.shape[1]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    x = P["token_embedding.weight"][ids] + P["positional_embedding"][:n]
    x = np_blocks(P, x, "transformer.resblocks.", cfg["layers"] - skip_last, cfg["heads"], mask, gelu)
    return np_ln(P, x, "ln_final")


def token_batch(cfg, seed=0):
    """Rows laid out as open_clip.tokenize makes them: sot, words, eot, zeros (sot/eot the last ids)."""
    rng = np.random.default_rng(seed)
    n, sot, eot = cfg["context_length"], cfg["vocab_size"] - 2, cfg["vocab_size"] - 1
    ids = np.zeros((3, n), np.int32)
    for row, words in enumerate((3, 9, n - 2)):
        ids[row, :words + 2] = [sot, *rng.integers(1, sot, words), eot]
    return ids


def test_tiny_penultimate_matches_numpy():
    cfg = open_clip_text_config("tiny")
    net = tiny(seed=1)
    ids = token_batch(cfg)
    out = net(Tensor(ids)).asnumpy()
    assert out.shape == (3, cfg["context_length"], cfg["width"]) and out.dtype == np.float32
    P = params_np(net)
    ref = np_reference(P, ids, cfg)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    # the reference tells apart the last layer and quick_gelu
    assert not np.allclose(out, np_reference(P, ids, cfg, skip_last=0), rtol=1e-2, atol=1e-2)
    assert not np.allclose(out, np_reference(P, ids, cfg, gelu="quick"), rtol=1e-3, atol=1e-3)


def test_tiny_last_layer_runs_every_block():
    cfg = open_clip_text_config("tiny")
    net = tiny(seed=2, layer="last")
    ids = token_batch(cfg, seed=2)
    np.testing.assert_allclose(net(Tensor(ids)).asnumpy(), np_reference(params_np(net), ids, cfg, skip_last=0),
                               rtol=1e-4, atol=1e-4)


def test_last_block_weights_and_padding_do_not_reach_the_text_states():
    cfg = open_clip_text_config("tiny")
    net = tiny(seed=3)
    ids = token_batch(cfg, seed=3)
    before = net(Tensor(ids)).asnumpy()
    # the mask argument is ignored, as the official forward uses only the causal mask
    np.testing.assert_array_equal(net(Tensor(ids), Tensor((ids > 0).astype(np.int32))).asnumpy(), before)
    for name, p in named_params(net):
        if name.startswith(f"transformer.resblocks.{cfg['layers'] - 1}."):
            p.set_data(Tensor(np.full(tuple(p.shape), 3.0, np.float32)))
    np.testing.assert_array_equal(net(Tensor(ids)).asnumpy(), before)
    # causal: other tokens after the end-of-text leave the states up to it unchanged
    changed = ids.copy()
    changed[0, 5:] = 7
    after = net(Tensor(changed)).asnumpy()
    np.testing.assert_allclose(after[0, :5], before[0, :5], rtol=1e-6, atol=1e-6)
    assert not np.allclose(after[0, 5:], before[0, 5:])
    # shorter inputs take the first positions
    np.testing.assert_allclose(net(Tensor(ids[:, :8])).asnumpy(), before[:, :8], rtol=1e-5, atol=1e-5)


def _encode(net, ids, mask):
    return net(ids, mask)


def test_tiny_compiles_under_jit_with_the_same_states():
    import mindspore as ms

    net = tiny(seed=4)
    ids = token_batch(open_clip_text_config("tiny"), seed=4)
    mask = Tensor((ids > 0).astype(np.int32))
    eager = net(Tensor(ids), mask).asnumpy()
    compiled = ms.jit(_encode)(net, Tensor(ids), mask).asnumpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)


# ---- (3) tokenizer -----------------------------------------------------------------------------

# id 0 is "!" as in CLIP's vocabulary: the padding id is a real token
WORDS = ["!", "a", "red", "car", "drives", "on", "the", "road", "at", "night", "two", "birds", "fly", "over", "lake"]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from tiny_tokenizers import write_clip_tokenizer

    return str(write_clip_tokenizer(tmp_path_factory.mktemp("open_clip_tok") / "tokenizer.json", WORDS))


def open_clip_tokenize(token_lists, sot, eot, context_length):
    """open_clip.tokenize (v2.22.0) on already-BPE'd texts: zeros, [sot] + tokens + [eot], cut with the
    last token set to eot."""
    result = np.zeros((len(token_lists), context_length), np.int64)
    for i, tokens in enumerate(token_lists):
        tokens = [sot] + list(tokens) + [eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eot
        result[i, :len(tokens)] = tokens
    return result


def test_tokenizer_pads_with_zeros_as_open_clip(tokenizer_file):
    tok = OpenCLIPTokenizer(tokenizer_file, max_length=8)
    sot, eot = tok.tokenizer.token_to_id("<|startoftext|>"), tok.tokenizer.token_to_id("<|endoftext|>")
    assert tok.pad_id == 0 and eot != 0 and tok.max_length == 8
    texts = ["A Red car", "two birds fly over the lake at night"]
    out = tok(texts)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (2, 8)
    words = [[WORDS.index(w) for w in t.lower().split()] for t in texts]
    np.testing.assert_array_equal(ids, open_clip_tokenize(words, sot, eot, 8))
    assert list(ids[0]) == [sot, 1, 2, 3, eot, 0, 0, 0]  # padded with 0, not with eot
    assert list(ids[1, -1:]) == [eot] and mask[1].all()  # truncated: eot kept last
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 0, 0, 0])
    # the default length is open_clip's context_length
    assert OpenCLIPTokenizer(tokenizer_file)(texts[0])["input_ids"].shape == (1, 77)


def test_tokenizer_ignores_a_pad_token_in_tokenizer_config(tokenizer_file, tmp_path):
    import json
    import shutil

    shutil.copy(tokenizer_file, tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<|endoftext|>"}))
    assert OpenCLIPTokenizer(str(tmp_path)).pad_id == 0
