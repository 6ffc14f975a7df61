"""Step-Video's Step-LLM text encoder: the official parameter names and count, the sqrt-ALiBi
slopes, and the forward against a float64 numpy reference of Step1Model (per-group key/value rows,
repeat_interleave of the groups, causal sqrt-ALiBi, stacked SwiGLU, no final norm)."""
import math

import numpy as np
from mindspore import Tensor

from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.text.step_llm import alibi_slopes, build_encoder
from np_reference import bert_reference
from vgen.runtime import setup_device

setup_device("auto")


def test_official_names_and_count():
    with declare_only():
        net = build_encoder("step-llm")
    names = [n for n, _ in named_params(net)]
    per_layer = ["attention.wqkv.weight", "attention.wo.weight", "feed_forward.w1.weight", "feed_forward.w2.weight",
                 "attention_norm.weight", "ffn_norm.weight"]
    assert names == ["tok_embeddings.word_embeddings.weight"] + [f"transformer.layers.{i}.{p}" for i in range(48)
                                                                  for p in per_layer]
    shapes = dict((n, tuple(p.shape)) for n, p in named_params(net))
    assert shapes["transformer.layers.0.attention.wqkv.weight"] == (8192, 6144)
    assert shapes["transformer.layers.0.feed_forward.w1.weight"] == (33792, 6144)
    assert count_params(net) == (19_579_600_896, 0)


def test_slopes_of_48_heads():
    want = [2 ** (-0.25 * k) for k in range(1, 33)] + [2 ** (-0.125 * k) for k in range(1, 32, 2)]
    np.testing.assert_allclose(alibi_slopes(48), want, rtol=1e-6)
    np.testing.assert_allclose(alibi_slopes(48)[[0, 1, 32, 47]], [0.8409, 0.7071, 0.9170, 0.0682], atol=1e-4)
    np.testing.assert_allclose(alibi_slopes(8), [2 ** -(k) for k in range(1, 9)], rtol=1e-6)  # a power of two


def rms(x, w, eps=1e-5):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def reference(P, ids, heads, groups, layers):
    x = P["tok_embeddings.word_embeddings.weight"][ids]  # [B, N, D]
    b, n, d = x.shape
    hd = d // heads
    slopes = alibi_slopes(heads).astype(np.float64)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    bias = np.where(j <= i, -np.sqrt(np.maximum(i - j, 0))[None] * slopes[:, None, None], -np.inf)  # [H, N, N]
    for layer in range(layers):
        pre = f"transformer.layers.{layer}"
        h = rms(x, P[f"{pre}.attention_norm.weight"])
        qkv = h @ P[f"{pre}.attention.wqkv.weight"].T
        q = qkv[..., :d].reshape(b, n, heads, hd)
        kv = qkv[..., d:].reshape(b, n, groups, 2 * hd)  # view(groups, 2 * hd), then chunk(2)
        k, v = kv[..., :hd], kv[..., hd:]
        k, v = np.repeat(k, heads // groups, axis=2), np.repeat(v, heads // groups, axis=2)  # repeat_interleave
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd) + bias[None]
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        att = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, n, d)
        x = x + att @ P[f"{pre}.attention.wo.weight"].T
        g = rms(x, P[f"{pre}.ffn_norm.weight"]) @ P[f"{pre}.feed_forward.w1.weight"].T
        gate, up = np.split(g, 2, -1)
        x = x + (gate / (1 + np.exp(-gate)) * up) @ P[f"{pre}.feed_forward.w2.weight"].T
    return x


def test_forward_matches_the_reference():
    with declare_only():
        net = build_encoder("tiny")
    materialize(net, 2)
    rng = np.random.default_rng(3)
    P = {}
    for n, p in named_params(net):
        value = p.asnumpy().astype(np.float64)
        if n.endswith("norm.weight"):
            value = value + 0.2 * rng.standard_normal(value.shape)
        P[n] = value
        p.set_data(Tensor(value.astype(np.float32)))
    ids = rng.integers(0, 96, (2, 7))
    got = net(Tensor(ids.astype(np.int32))).asnumpy()
    np.testing.assert_allclose(got, reference(P, ids, heads=6, groups=2, layers=3), rtol=1e-4, atol=1e-4)


def test_tokenizer_frames_truncates_and_pads(tmp_path):
    spm = __import__("pytest").importorskip("sentencepiece")
    from vgen.models.text.step_llm import StepTokenizer

    corpus = ["a cat walks on the grass", "a dog runs in the park", "the sun sets over the sea",
              "snow falls on a quiet town", "clouds drift across a blue sky"] * 4
    path = tmp_path / "step1_chat_tokenizer.model"
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=f, vocab_size=60,
                                       model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                       hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    tok = StepTokenizer(str(tmp_path), max_length=10)  # a directory holding the model
    texts = ["a cat runs", "the sun sets over the sea and snow falls on a quiet town"]
    out = tok(texts)
    ids, mask = out["input_ids"], out["attention_mask"]
    short, long = sp.encode(texts[0]), sp.encode(texts[1])
    assert list(ids[0, :len(short) + 2]) == [1] + short + [2] and (ids[0, len(short) + 2:] == 2).all()
    assert mask[0].sum() == len(short) + 2 and mask[0, :len(short) + 2].all()
    assert len(long) > 8 and list(ids[1]) == [1] + long[:8] + [2] and mask[1].all()


# ---- HunyuanCLIP (BERT) -------------------------------------------------------------------------------

def test_bert_names_and_count():
    from vgen.models.text.bert import build_encoder as bert

    with declare_only():
        net = bert("hunyuan-clip")
    names = [n for n, _ in named_params(net)]
    assert names[:5] == ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                         "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                         "embeddings.LayerNorm.bias"]
    layer = ["attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
             "attention.self.key.bias", "attention.self.value.weight", "attention.self.value.bias",
             "attention.output.dense.weight", "attention.output.dense.bias", "attention.output.LayerNorm.weight",
             "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
             "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias"]
    assert names[5:] == [f"encoder.layer.{i}.{p}" for i in range(24) for p in layer]
    assert count_params(net) == (350_986_240, 0)


def test_bert_forward_matches_the_reference():
    from vgen.models.text.bert import build_encoder as bert

    with declare_only():
        net = bert("tiny")
    materialize(net, 4)
    rng = np.random.default_rng(5)
    P = {}
    for n, p in named_params(net):
        value = p.asnumpy().astype(np.float64) + (0.1 * rng.standard_normal(p.shape) if "LayerNorm" in n else 0.0)
        P[n] = value
        p.set_data(Tensor(value.astype(np.float32)))
    ids = rng.integers(0, 64, (2, 6))
    mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], np.float32)
    got = net(Tensor(ids.astype(np.int32)), Tensor(mask)).asnumpy()
    want = bert_reference(P, ids, mask, heads=2, layers=2)
    np.testing.assert_allclose(got[0, :4], want[0, :4], rtol=1e-4, atol=1e-4)  # padded query rows are never read
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)


def test_bert_tokenizer(tmp_path):
    from vgen.models.text.bert import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "runs", "the", "sun", "sets", "##s", "over",
             "sea", "红", "色"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(tmp_path), max_length=8)
    out = tok(["A cat runs", "the sun sets over the sea 红色"])
    ids, mask = out["input_ids"], out["attention_mask"]
    v = {t: i for i, t in enumerate(vocab)}
    assert list(ids[0]) == [v["[CLS]"], v["a"], v["cat"], v["runs"], v["[SEP]"], 0, 0, 0]  # lower-cased, padded
    assert list(mask[0]) == [1, 1, 1, 1, 1, 0, 0, 0]
    assert list(ids[1]) == [v["[CLS]"], v["the"], v["sun"], v["sets"], v["over"], v["the"], v["sea"], v["[SEP]"]]
