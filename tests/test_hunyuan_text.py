"""HunyuanVideo's frozen text encoders: LLaVA-LLaMA-3-8B (hidden_states[-3] after the prompt template and
crop) and CLIP ViT-L/14's text tower (pooled at the end-of-text token).

Full-size models are only declared (names, shapes, exact counts from the transformers architectures);
tiny ones run with random weights large enough that attention is far from uniform, and are compared with
straightforward numpy re-implementations of the transformers math. Tokenizers are tiny `tokenizers`
files built here with the special tokens and post-processors of the real ones.
"""
import json
import re

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.text.clip import CLIPTextEncoder, CLIPTokenizer, clip_text_config
from vgen.models.text.llama import (PROMPT_TEMPLATES, HunyuanPromptEncoder, LlamaEncoder, LlamaTokenizer,
                                    llama_config, template_prefix_length)

tokenizers = pytest.importorskip("tokenizers")


def params_np(net):
    return {n: p.asnumpy().astype(np.float64) for n, p in named_params(net)}


def randomize(net, seed):
    """Weights with O(1) activations and peaked attention: norms ~1, matrices ~N(0, 1/fan_in) with q/k
    doubled, embeddings ~N(0, 1). The official inits (std 0.02) would make every attention uniform and
    hide position and masking errors."""
    rng = np.random.default_rng(seed)
    for name, p in named_params(net):
        shape = tuple(p.shape)
        if "norm" in name and name.endswith("weight"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            value = 0.2 * rng.standard_normal(shape)
        elif "embed" in name:
            value = rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(shape[-1])
            if re.search(r"\.(q|k)_proj\.weight$", name):
                value *= 2.0
        p.set_data(Tensor(value.astype(np.float32)))
    return net


def tiny_llama(seed=0, **overrides):
    with declare_only():
        net = LlamaEncoder(**dict(llama_config("tiny"), **overrides))
    return randomize(materialize(net, seed), seed)


def tiny_clip(seed=0, **overrides):
    with declare_only():
        net = CLIPTextEncoder(**dict(clip_text_config("tiny"), **overrides))
    return randomize(materialize(net, seed), seed)


# ---- numpy references (from the transformers math, not from our cells) ---------------------------

def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_masked_attention(q, k, v, mask, scale):
    """softmax(q k^T * scale) v with future keys and padded keys (mask 0) excluded."""
    n = q.shape[2]
    allowed = np.tril(np.ones((n, n), bool))[None, None] & (mask[:, None, None, :] > 0)
    logits = np.where(allowed, q @ k.transpose(0, 1, 3, 2) * scale, -np.inf)
    return np_softmax(logits) @ v


def np_llama_hidden_states(P, ids, mask, cfg, rope="half", kv="repeat"):
    """All of transformers' hidden_states (embeddings, each layer's output, the last one final-normed).
    `rope` / `kv` select the layout; the alternatives exist to show the test can tell them apart."""
    heads, kv_heads, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    d = cfg["hidden_size"] // heads
    b, n = ids.shape

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    inv_freq = 1.0 / cfg["rope_theta"] ** (np.arange(0, d, 2) / d)
    angles = np.arange(n)[:, None] * inv_freq[None, :]  # [N, D/2]

    def rotate(x):  # x [B, H, N, D]
        cos, sin = np.cos(angles), np.sin(angles)
        if rope == "half":  # (x_i, x_{i+D/2}) rotated together
            x1, x2 = x[..., :d // 2], x[..., d // 2:]
            return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
        x1, x2 = x[..., 0::2], x[..., 1::2]  # interleaved pairs (x_{2i}, x_{2i+1})
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
        return out

    def heads_of(t, h):
        return t.reshape(b, n, h, d).transpose(0, 2, 1, 3)

    def expand(t):  # [B, Hkv, N, D] -> [B, H, N, D]
        group = heads // kv_heads
        return np.repeat(t, group, axis=1) if kv == "repeat" else np.tile(t, (1, group, 1, 1))

    x = P["embed_tokens.weight"][ids]
    states = [x]
    for i in range(cfg["num_hidden_layers"]):
        pre = f"layers.{i}."
        h = rms(x, P[pre + "input_layernorm.weight"])
        q = rotate(heads_of(h @ P[pre + "self_attn.q_proj.weight"].T, heads))
        k = rotate(heads_of(h @ P[pre + "self_attn.k_proj.weight"].T, kv_heads))
        v = heads_of(h @ P[pre + "self_attn.v_proj.weight"].T, kv_heads)
        a = np_masked_attention(q, expand(k), expand(v), mask, d ** -0.5)
        x = x + a.transpose(0, 2, 1, 3).reshape(b, n, heads * d) @ P[pre + "self_attn.o_proj.weight"].T
        h = rms(x, P[pre + "post_attention_layernorm.weight"])
        gate, up = h @ P[pre + "mlp.gate_proj.weight"].T, h @ P[pre + "mlp.up_proj.weight"].T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ P[pre + "mlp.down_proj.weight"].T
        states.append(x)
    states[-1] = rms(x, P["norm.weight"])
    return states


def np_clip_text(P, ids, mask, cfg):
    """CLIPTextTransformer: (final-normed states, pooled at argmax(input_ids)), eos_token_id == 2."""
    heads, eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]
    b, n = ids.shape
    d = cfg["hidden_size"] // heads

    def ln(x, pre):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * P[pre + ".weight"] + P[pre + ".bias"]

    def lin(x, pre):
        return x @ P[pre + ".weight"].T + P[pre + ".bias"]

    def heads_of(t):
        return t.reshape(b, n, heads, d).transpose(0, 2, 1, 3)

    embeddings = "text_model.embeddings."
    x = P[embeddings + "token_embedding.weight"][ids] + P[embeddings + "position_embedding.weight"][:n]
    for i in range(cfg["num_hidden_layers"]):
        pre = f"text_model.encoder.layers.{i}."
        h = ln(x, pre + "layer_norm1")
        q, k, v = (heads_of(lin(h, pre + f"self_attn.{m}_proj")) for m in "qkv")
        a = np_masked_attention(q, k, v, mask, d ** -0.5).transpose(0, 2, 1, 3).reshape(b, n, heads * d)
        x = x + lin(a, pre + "self_attn.out_proj")
        h = lin(ln(x, pre + "layer_norm2"), pre + "mlp.fc1")
        x = x + lin(h / (1.0 + np.exp(-1.702 * h)), pre + "mlp.fc2")
    x = ln(x, "text_model.final_layer_norm")
    return x, x[np.arange(b), ids.argmax(-1)]  # numpy's argmax takes the first maximum


# ---- (a) full-size layouts and exact counts --------------------------------------------------------

def expected_llama_layout(cfg):
    h, ff, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    lines = [f"embed_tokens.weight [{cfg['vocab_size']}, {h}]"]
    for i in range(layers):
        pre = f"layers.{i}."
        lines += [f"{pre}self_attn.q_proj.weight [{h}, {h}]", f"{pre}self_attn.k_proj.weight [{kv}, {h}]",
                  f"{pre}self_attn.v_proj.weight [{kv}, {h}]", f"{pre}self_attn.o_proj.weight [{h}, {h}]",
                  f"{pre}mlp.gate_proj.weight [{ff}, {h}]", f"{pre}mlp.up_proj.weight [{ff}, {h}]",
                  f"{pre}mlp.down_proj.weight [{h}, {ff}]", f"{pre}input_layernorm.weight [{h}]",
                  f"{pre}post_attention_layernorm.weight [{h}]"]
    return lines + [f"norm.weight [{h}]"]


@pytest.mark.parametrize("name,vocab,count", [
    ("llava-llama-3-8b", 128320, 7_505_186_816),  # HunyuanVideo's text encoder (LLaVA's 64 extra rows)
    ("llama-3-8b", 128256, 7_504_924_672),        # Meta-Llama-3-8B's LlamaModel, the published figure
])
def test_llama_layout_and_count(name, vocab, count):
    cfg = llama_config(name)
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["vocab_size"], cfg["rope_theta"], cfg["rms_norm_eps"]) == \
        (4096, 14336, 32, 32, 8, vocab, 500000.0, 1e-5)
    with declare_only():
        net = LlamaEncoder(**cfg)
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == expected_llama_layout(cfg)
    assert count_params(net) == (count, 0)
    pattern = re.compile(r"embed_tokens\.weight|norm\.weight|layers\.\d+\.(self_attn\.[qkvo]_proj|"
                         r"mlp\.(gate|up|down)_proj|input_layernorm|post_attention_layernorm)\.weight")
    assert all(pattern.fullmatch(n) for n, _ in named_params(net))
    # the difference between the two is exactly the LLaVA embedding rows
    assert count - 7_504_924_672 == (vocab - 128256) * 4096


def test_clip_large_layout_and_count():
    cfg = clip_text_config("clip-vit-large-patch14")
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
            cfg["num_attention_heads"], cfg["max_position_embeddings"], cfg["layer_norm_eps"],
            cfg["eos_token_id"]) == (49408, 768, 3072, 12, 12, 77, 1e-5, 2)
    with declare_only():
        net = CLIPTextEncoder(**cfg)
    lines = [f"{n} {list(p.shape)}" for n, p in named_params(net)]
    h, ff = 768, 3072
    expected = ["text_model.embeddings.token_embedding.weight [49408, 768]",
                "text_model.embeddings.position_embedding.weight [77, 768]"]
    for i in range(12):
        pre = f"text_model.encoder.layers.{i}."
        for m in ("k", "v", "q", "out"):  # CLIPAttention registers k, v, q, out
            expected += [f"{pre}self_attn.{m}_proj.weight [{h}, {h}]", f"{pre}self_attn.{m}_proj.bias [{h}]"]
        expected += [f"{pre}layer_norm1.weight [{h}]", f"{pre}layer_norm1.bias [{h}]",
                     f"{pre}mlp.fc1.weight [{ff}, {h}]", f"{pre}mlp.fc1.bias [{ff}]",
                     f"{pre}mlp.fc2.weight [{h}, {ff}]", f"{pre}mlp.fc2.bias [{h}]",
                     f"{pre}layer_norm2.weight [{h}]", f"{pre}layer_norm2.bias [{h}]"]
    expected += ["text_model.final_layer_norm.weight [768]", "text_model.final_layer_norm.bias [768]"]
    assert lines == expected
    assert count_params(net) == (123_060_480, 0)  # transformers CLIPTextModel, openai/clip-vit-large-patch14


# ---- (b) tiny LLaMA forward vs numpy ---------------------------------------------------------------

def llama_batch(cfg, seed, n=10):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg["vocab_size"], (2, n)).astype(np.int32)
    mask = np.ones((2, n), np.int32)
    mask[1, 6:] = 0  # right padding, as HunyuanVideo's tokenizer pads
    return ids, mask


def test_tiny_llama_matches_numpy_for_every_output_layer():
    cfg = llama_config("tiny")
    net = tiny_llama(seed=1)
    ids, mask = llama_batch(cfg, 2)
    ref = np_llama_hidden_states(params_np(net), ids, mask, cfg)
    assert len(ref) == cfg["num_hidden_layers"] + 1
    for layer in (0, 1, 2, -3, -2, -1, cfg["num_hidden_layers"]):
        out = net(Tensor(ids), Tensor(mask), layer)
        assert out.shape == (2, 10, cfg["hidden_size"]) and out.dtype == ms.float32
        # padded query rows included: they see the valid keys before them and no padded key
        np.testing.assert_allclose(out.asnumpy(), ref[layer], rtol=2e-4, atol=2e-4, err_msg=f"layer {layer}")
    # hidden_states[-3] is an unnormalised inner layer; only the last entry carries the final norm
    np.testing.assert_allclose(net(Tensor(ids), Tensor(mask), -3).asnumpy(), ref[cfg["num_hidden_layers"] - 2],
                               rtol=2e-4, atol=2e-4)
    with pytest.raises(IndexError):
        net(Tensor(ids), Tensor(mask), cfg["num_hidden_layers"] + 1)


def test_tiny_llama_uses_rotate_half_rope_and_grouped_kv_heads():
    """The reference with interleaved RoPE pairs, or with kv heads tiled instead of repeated, is far
    from the output: the comparison above can tell these layouts apart."""
    cfg = llama_config("tiny")
    net = tiny_llama(seed=3)
    ids, mask = llama_batch(cfg, 4)
    out = net(Tensor(ids), Tensor(mask), -1).asnumpy()
    P = params_np(net)
    np.testing.assert_allclose(out, np_llama_hidden_states(P, ids, mask, cfg)[-1], rtol=2e-4, atol=2e-4)
    for wrong in (dict(rope="interleaved"), dict(kv="tile")):
        assert np.abs(out - np_llama_hidden_states(P, ids, mask, cfg, **wrong)[-1]).max() > 1e-2, wrong


def test_llama_fp16_compute_stays_close_to_fp32():
    cfg = llama_config("tiny")
    net32 = tiny_llama(seed=5)
    with declare_only():
        net16 = LlamaEncoder(**cfg)
    materialize(net16, 0, dtype=ms.float16)
    for (_, p16), (_, p32) in zip(named_params(net16), named_params(net32)):
        p16.set_data(p32.astype(ms.float16))
    ids, mask = llama_batch(cfg, 6)
    a, b = net32(Tensor(ids), Tensor(mask)).asnumpy(), net16(Tensor(ids), Tensor(mask)).asnumpy()
    assert b.dtype == np.float32 and np.isfinite(b).all()
    np.testing.assert_allclose(b, a, atol=5e-2 * np.abs(a).max())


# ---- (c) tiny CLIP forward + pooled vs numpy -----------------------------------------------------

def clip_batch(cfg):
    """Rows [<|startoftext|>, words..., <|endoftext|>, pads = <|endoftext|>], CLIP's id layout: the
    end-of-text id is the largest of the vocabulary."""
    eot = cfg["vocab_size"] - 1
    rng = np.random.default_rng(7)
    n = 12
    ids = np.full((3, n), eot, np.int32)
    mask = np.zeros((3, n), np.int32)
    for row, words in enumerate((4, 9, 10)):  # the last row fills the sequence (no padding)
        ids[row, 0] = eot - 1
        ids[row, 1:1 + words] = rng.integers(0, eot - 1, words)
        mask[row, :words + 2] = 1
    return ids, mask


def test_tiny_clip_matches_numpy_and_pools_at_end_of_text():
    cfg = clip_text_config("tiny")
    net = tiny_clip(seed=8)
    ids, mask = clip_batch(cfg)
    ref_states, ref_pooled = np_clip_text(params_np(net), ids, mask, cfg)
    for m in (mask, None):  # HunyuanVideo passes the mask; without it only padded rows change
        states, pooled = net(Tensor(ids), None if m is None else Tensor(m))
        assert states.shape == (3, 12, cfg["hidden_size"]) and pooled.shape == (3, cfg["hidden_size"])
        assert states.dtype == pooled.dtype == ms.float32
        np.testing.assert_allclose(pooled.asnumpy(), ref_pooled, rtol=2e-4, atol=2e-4)
        valid = mask.astype(bool)
        np.testing.assert_allclose(states.asnumpy()[valid], ref_states[valid], rtol=2e-4, atol=2e-4)
    # pooled = the state at the FIRST end-of-text position (pads share its id)
    np.testing.assert_allclose(pooled.asnumpy(), states.asnumpy()[np.arange(3), mask.sum(1) - 1], rtol=0, atol=0)


def test_clip_with_a_real_eos_token_id_pools_at_its_first_occurrence():
    net = tiny_clip(seed=9, eos_token_id=5)
    ids = np.array([[62, 10, 5, 40, 5, 63], [62, 5, 63, 63, 63, 63]], np.int32)  # max id is elsewhere
    states, pooled = net(Tensor(ids))
    np.testing.assert_array_equal(pooled.asnumpy(), states.asnumpy()[[0, 1], [2, 1]])


# ---- tokenizers built here ---------------------------------------------------------------------------

CORPUS = [
    "a cat walks on the grass", "a dog runs in the park", "the sun sets over the sea",
    "a red car drives down the road", "waves crash on the rocks at night", "two birds fly over a lake",
    "describe the video: the content, colors and camera", "system user",
] * 3
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<pad>"]
# the official templates' structure: header, instruction, <|eot_id|>, user header, caption, <|eot_id|>
TINY_TEMPLATE = ("<|start_header_id|>system<|end_header_id|>describe the video: the content, colors and camera"
                 "<|eot_id|><|start_header_id|>user<|end_header_id|>{}<|eot_id|>")


def unpadded(path):
    """The raw `tokenizers` file with its stored padding turned off, to read plain token ids."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(path)
    raw.no_padding()
    return raw


@pytest.fixture(scope="module")
def llama_tokenizer_dir(tmp_path_factory):
    """A byte-level BPE tokenizer.json with Llama-3's special tokens and its "<|begin_of_text|> $A"
    post-processor, plus a tokenizer_config.json naming the pad token as transformers saves it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=110, special_tokens=LLAMA_SPECIALS,
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    tok.enable_padding(length=7)  # settings stored in the file must not leak through
    path = tmp_path_factory.mktemp("llama_tok")
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "<pad>", "special": True}}))
    return path


@pytest.fixture(scope="module")
def clip_tokenizer_file(tmp_path_factory):
    """A word-end-suffix BPE tokenizer.json with CLIP's lowercasing and "<|startoftext|> $A <|endoftext|>"."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=60, end_of_word_suffix="</w>",
                                                        special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                                        show_progress=False))
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    path = tmp_path_factory.mktemp("clip_tok") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_clip_tokenizer_pads_with_end_of_text_and_keeps_it_when_truncating(clip_tokenizer_file):
    raw = unpadded(clip_tokenizer_file)
    bos, eos = raw.token_to_id("<|startoftext|>"), raw.token_to_id("<|endoftext|>")
    tok = CLIPTokenizer(clip_tokenizer_file, max_length=10)
    assert tok.pad_id == eos and tok.max_length == 10
    texts = ["A Cat walks", "a dog runs in the park over the sea at night"]
    out = tok(texts)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (2, 10) and ids.dtype == mask.dtype == np.int32
    words = raw.encode("a cat walks", add_special_tokens=False).ids  # lowercased
    assert list(ids[0, :len(words) + 2]) == [bos] + words + [eos]
    assert (ids[0, len(words) + 2:] == eos).all() and mask[0].sum() == len(words) + 2
    long = raw.encode(texts[1], add_special_tokens=False).ids
    assert len(long) > 8 and list(ids[1]) == [bos] + long[:8] + [eos] and mask[1].all()
    assert tok(texts[0], max_length=77)["input_ids"].shape == (1, 77)


def test_clip_tokenizer_and_encoder_pool_at_the_tokenized_end_of_text(clip_tokenizer_file):
    tok = CLIPTokenizer(clip_tokenizer_file, max_length=12)
    assert clip_text_config("tiny")["vocab_size"] >= tok.tokenizer.get_vocab_size()
    # unlike CLIP's real vocabulary, this one's <|endoftext|> is not the largest id: pool by the id
    net = tiny_clip(seed=10, eos_token_id=tok.pad_id)
    out = tok(["a red car", "two birds fly over a lake"])
    states, pooled = net(Tensor(out["input_ids"]), Tensor(out["attention_mask"]))
    last = out["attention_mask"].sum(1) - 1
    np.testing.assert_array_equal(pooled.asnumpy(), states.asnumpy()[[0, 1], last])


def test_llama_tokenizer_reads_pad_from_tokenizer_config_and_adds_bos(llama_tokenizer_dir):
    with pytest.raises(ValueError, match="pad_token"):
        LlamaTokenizer(str(llama_tokenizer_dir), max_length=9, pad_token="<|no such token|>")
    raw = unpadded(str(llama_tokenizer_dir / "tokenizer.json"))
    tok = LlamaTokenizer(str(llama_tokenizer_dir), max_length=9)
    assert tok.pad_token == "<pad>" and tok.pad_id == raw.token_to_id("<pad>")
    out = tok(["a cat walks", "a red car drives down the road at night"])
    words = raw.encode("a cat walks", add_special_tokens=False).ids
    bos = raw.token_to_id("<|begin_of_text|>")
    assert list(out["input_ids"][0, :len(words) + 1]) == [bos] + words
    assert (out["input_ids"][0, len(words) + 1:] == tok.pad_id).all()
    assert out["attention_mask"][0].sum() == len(words) + 1
    assert out["attention_mask"][1].all() and out["input_ids"][1, 0] == bos


# ---- (d) HunyuanVideo's template + crop -----------------------------------------------------------

def test_official_templates_and_crop_starts():
    video, image = PROMPT_TEMPLATES["dit-llm-encode-video"], PROMPT_TEMPLATES["dit-llm-encode"]
    assert (video["crop_start"], image["crop_start"]) == (95, 36)
    for spec in (video, image):
        assert spec["template"].count("{}") == 1 and spec["template"].endswith("\n\n{}<|eot_id|>")
        assert spec["template"].startswith("<|start_header_id|>system<|end_header_id|>\n\nDescribe the ")


def test_prompt_template_and_crop_give_256_states_and_the_caption_mask(llama_tokenizer_dir):
    raw = unpadded(str(llama_tokenizer_dir / "tokenizer.json"))
    crop_start = len(raw.encode(TINY_TEMPLATE.split("{}")[0]).ids)  # BOS + the prefix tokens
    tok = LlamaTokenizer(str(llama_tokenizer_dir), max_length=8)
    assert template_prefix_length(tok, TINY_TEMPLATE) == crop_start and crop_start > 5
    cfg = llama_config("tiny")
    assert cfg["vocab_size"] >= raw.get_vocab_size()
    net = tiny_llama(seed=11)
    encoder = HunyuanPromptEncoder(net, tok, {"template": TINY_TEMPLATE, "crop_start": crop_start})
    assert encoder.max_length == 256 + crop_start and encoder.output_layer == -3

    long_caption = " ".join(["a cat walks on the grass"] * 60)
    captions = ["a cat walks on the grass", "two birds fly over a lake at night", long_caption]
    states, mask = encoder(captions)
    assert states.shape == (3, 256, cfg["hidden_size"]) and states.dtype == ms.float32
    assert mask.shape == (3, 256)

    eot = raw.token_to_id("<|eot_id|>")
    tokens = encoder.tokenize(captions)
    for row, caption in enumerate(captions[:2]):
        words = raw.encode(caption, add_special_tokens=False).ids
        # the valid part after the crop: the caption's tokens, then the template's closing <|eot_id|>
        assert mask[row].sum() == len(words) + 1 and mask[row, :len(words) + 1].all()
        assert list(tokens["input_ids"][row, crop_start:crop_start + len(words) + 1]) == words + [eot]
    assert len(raw.encode(long_caption, add_special_tokens=False).ids) > 256
    assert mask[2].all()  # truncated to text_len + crop_start: no room left for <|eot_id|>

    # the states are hidden_states[-3] of the whole templated prompt, cropped
    full = net(Tensor(tokens["input_ids"]), Tensor(tokens["attention_mask"]), -3).asnumpy()
    np.testing.assert_array_equal(states.asnumpy(), full[:, crop_start:])
    ref = np_llama_hidden_states(params_np(net), tokens["input_ids"][:2], tokens["attention_mask"][:2], cfg)
    valid = mask[:2].astype(bool)
    np.testing.assert_allclose(states.asnumpy()[:2][valid], ref[-3][:, crop_start:][valid], rtol=5e-4, atol=5e-4)

    # apply_final_norm (off in HunyuanVideo) normalises the intermediate layer with the model's final norm
    normed = HunyuanPromptEncoder(net, tok, {"template": TINY_TEMPLATE, "crop_start": crop_start}, text_len=16,
                                  apply_final_norm=True)
    states, mask = normed(captions[:1])
    assert states.shape == (1, 16, cfg["hidden_size"]) and mask.shape == (1, 16)
    short = normed.tokenize(captions[:1])
    ref = np_llama_hidden_states(params_np(net), short["input_ids"], short["attention_mask"], cfg)[-3]
    eps, w = cfg["rms_norm_eps"], params_np(net)["norm.weight"]
    ref = ref / np.sqrt((ref * ref).mean(-1, keepdims=True) + eps) * w
    np.testing.assert_allclose(states.asnumpy(), ref[:, crop_start:], rtol=5e-4, atol=5e-4)


# ---- (e) padding does not change valid outputs ----------------------------------------------------

def test_llama_padding_does_not_change_valid_tokens():
    cfg = llama_config("tiny")
    net = tiny_llama(seed=12)
    rng = np.random.default_rng(13)
    valid = rng.integers(0, cfg["vocab_size"], (1, 6)).astype(np.int32)
    alone = net(Tensor(valid), Tensor(np.ones((1, 6), np.int32)), -3).asnumpy()  # HunyuanVideo's layer
    mask = np.concatenate([np.ones((1, 6)), np.zeros((1, 5))], 1).astype(np.int32)
    for pad_ids in (np.full((1, 5), 7, np.int32), rng.integers(0, cfg["vocab_size"], (1, 5)).astype(np.int32)):
        padded = net(Tensor(np.concatenate([valid, pad_ids], 1)), Tensor(mask), -3).asnumpy()
        np.testing.assert_allclose(padded[:, :6], alone, rtol=1e-5, atol=1e-5)


def test_clip_padding_does_not_change_valid_tokens_or_pooled():
    cfg = clip_text_config("tiny")
    net = tiny_clip(seed=14)
    eot = cfg["vocab_size"] - 1
    valid = np.array([[eot - 1, 3, 17, 40, eot]], np.int32)
    alone_states, alone_pooled = (t.asnumpy() for t in net(Tensor(valid), Tensor(np.ones((1, 5), np.int32))))
    ids = np.concatenate([valid, np.full((1, 7), eot, np.int32)], 1)
    mask = np.concatenate([np.ones((1, 5)), np.zeros((1, 7))], 1).astype(np.int32)
    for m in (mask, None):
        states, pooled = (t.asnumpy() for t in net(Tensor(ids), None if m is None else Tensor(m)))
        np.testing.assert_allclose(states[:, :5], alone_states, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pooled, alone_pooled, rtol=1e-5, atol=1e-5)


# ---- compiled, as the online encoders and cache tools call them ---------------------------------

def test_encoders_compile_under_jit():
    llama, clip = tiny_llama(seed=15), tiny_clip(seed=15)
    ids, mask = clip_batch(clip_text_config("tiny"))
    ids, mask = Tensor(ids), Tensor(mask)

    @ms.jit
    def encode(i, m):
        return llama(i, m, -3), clip(i, m)

    states, (clip_states, pooled) = encode(ids, mask)
    np.testing.assert_allclose(states.asnumpy(), llama(ids, mask, -3).asnumpy(), rtol=1e-6, atol=1e-6)
    eager_states, eager_pooled = clip(ids, mask)
    np.testing.assert_allclose(clip_states.asnumpy(), eager_states.asnumpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pooled.asnumpy(), eager_pooled.asnumpy(), rtol=1e-6, atol=1e-6)
