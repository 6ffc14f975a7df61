"""Frozen encoders for the cache tools: the SD VAE (diffusers AutoencoderKL) and the T5 v1.1 encoder.

Full-size models are only declared (layout and counts against the official state dicts); tiny ones
run and are compared with straightforward numpy re-implementations of the official math.
"""
import math
import re

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import layout_lines
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.text.t5 import T5Encoder, T5Tokenizer, relative_position_bucket, t5_config
from vgen.models.vae.sd_vae import SCALING_FACTOR, AutoencoderKL

TINY_VAE = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)


def params_np(net):
    return {n: p.asnumpy().astype(np.float64) for n, p in named_params(net)}


def tiny_vae(seed=0):
    with declare_only():
        net = AutoencoderKL(**TINY_VAE)
    return materialize(net, seed)


def tiny_t5(seed=0):
    with declare_only():
        net = T5Encoder(**t5_config("tiny"))
    return materialize(net, seed)


# ---- numpy references (written from the diffusers / transformers math, not from our cells) -----

def np_conv(x, w, b, stride=1, pad=(0, 0, 0, 0)):
    """PyTorch Conv2d on [B, C, H, W]; pad = (left, right, top, bottom) zeros."""
    left, right, top, bottom = pad
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    k = w.shape[-1]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("bchwij,ocij->bohw", win, w) + b[None, :, None, None]


def np_group_norm(x, groups, w, b, eps=1e-6):
    bsz, c = x.shape[:2]
    g = x.reshape(bsz, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return g.reshape(x.shape) * w[None, :, None, None] + b[None, :, None, None]


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_vae_resnet(P, pre, x, groups):
    h = np_group_norm(x, groups, P[pre + "norm1.weight"], P[pre + "norm1.bias"])
    h = np_conv(np_silu(h), P[pre + "conv1.weight"], P[pre + "conv1.bias"], pad=(1, 1, 1, 1))
    h = np_group_norm(h, groups, P[pre + "norm2.weight"], P[pre + "norm2.bias"])
    h = np_conv(np_silu(h), P[pre + "conv2.weight"], P[pre + "conv2.bias"], pad=(1, 1, 1, 1))
    if pre + "conv_shortcut.weight" in P:
        x = np_conv(x, P[pre + "conv_shortcut.weight"], P[pre + "conv_shortcut.bias"])
    return x + h


def np_vae_attention(P, pre, x, groups):
    b, c, h, w = x.shape
    t = np_group_norm(x, groups, P[pre + "group_norm.weight"], P[pre + "group_norm.bias"])
    t = t.reshape(b, c, h * w).transpose(0, 2, 1)
    q, k, v = (t @ P[pre + f"to_{n}.weight"].T + P[pre + f"to_{n}.bias"] for n in "qkv")
    a = np_softmax(q @ k.transpose(0, 2, 1) / math.sqrt(c)) @ v  # one head of all c channels
    out = a @ P[pre + "to_out.0.weight"].T + P[pre + "to_out.0.bias"]
    return x + out.transpose(0, 2, 1).reshape(b, c, h, w)


def np_vae_mid(P, pre, x, groups):
    x = np_vae_resnet(P, pre + "resnets.0.", x, groups)
    x = np_vae_attention(P, pre + "attentions.0.", x, groups)
    return np_vae_resnet(P, pre + "resnets.1.", x, groups)


def np_vae_encode(P, x, n_blocks, layers, groups):
    h = np_conv(x, P["encoder.conv_in.weight"], P["encoder.conv_in.bias"], pad=(1, 1, 1, 1))
    for i in range(n_blocks):
        for j in range(layers):
            h = np_vae_resnet(P, f"encoder.down_blocks.{i}.resnets.{j}.", h, groups)
        if i < n_blocks - 1:  # asymmetric pad (right, bottom) then stride-2 conv
            pre = f"encoder.down_blocks.{i}.downsamplers.0.conv."
            h = np_conv(h, P[pre + "weight"], P[pre + "bias"], stride=2, pad=(0, 1, 0, 1))
    h = np_vae_mid(P, "encoder.mid_block.", h, groups)
    h = np_silu(np_group_norm(h, groups, P["encoder.conv_norm_out.weight"], P["encoder.conv_norm_out.bias"]))
    h = np_conv(h, P["encoder.conv_out.weight"], P["encoder.conv_out.bias"], pad=(1, 1, 1, 1))
    moments = np_conv(h, P["quant_conv.weight"], P["quant_conv.bias"])
    mean, logvar = np.split(moments, 2, axis=1)
    return mean, np.exp(0.5 * np.clip(logvar, -30.0, 20.0))


def np_vae_decode(P, z, n_blocks, layers, groups):
    h = np_conv(z, P["post_quant_conv.weight"], P["post_quant_conv.bias"])
    h = np_conv(h, P["decoder.conv_in.weight"], P["decoder.conv_in.bias"], pad=(1, 1, 1, 1))
    h = np_vae_mid(P, "decoder.mid_block.", h, groups)
    for i in range(n_blocks):
        for j in range(layers + 1):
            h = np_vae_resnet(P, f"decoder.up_blocks.{i}.resnets.{j}.", h, groups)
        if i < n_blocks - 1:
            pre = f"decoder.up_blocks.{i}.upsamplers.0.conv."
            h = h.repeat(2, axis=2).repeat(2, axis=3)
            h = np_conv(h, P[pre + "weight"], P[pre + "bias"], pad=(1, 1, 1, 1))
    h = np_silu(np_group_norm(h, groups, P["decoder.conv_norm_out.weight"], P["decoder.conv_norm_out.bias"]))
    return np_conv(h, P["decoder.conv_out.weight"], P["decoder.conv_out.bias"], pad=(1, 1, 1, 1))


def np_t5_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128):
    """One offset at a time, the Mesh-TF / transformers formula with its fp32 log arithmetic."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if rel > 0 else 0
        dist = abs(rel)
    else:
        dist = max(-rel, 0)
    max_exact = num_buckets // 2
    if dist < max_exact:
        return bucket + dist
    f32 = np.float32
    log_ratio = np.log(f32(dist) / f32(max_exact)) / f32(math.log(max_distance / max_exact))
    large = max_exact + int(log_ratio * f32(num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


def np_t5_encode(P, ids, mask, cfg):
    """T5 encoder: RMS norm, unscaled attention + relative bias, padded keys at -inf, gated tanh-GELU."""
    heads, d_kv, eps = cfg["num_heads"], cfg["d_kv"], cfg["layer_norm_epsilon"]
    n = ids.shape[1]

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    def heads_of(t):
        return t.reshape(t.shape[0], n, heads, d_kv).transpose(0, 2, 1, 3)

    buckets = np.array([[np_t5_bucket(k - q) for k in range(n)] for q in range(n)])
    pos_bias = P["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][buckets]  # [q, k, H]
    pos_bias = pos_bias.transpose(2, 0, 1)[None]
    x = P["shared.weight"][ids]
    for i in range(cfg["num_layers"]):
        pre = f"encoder.block.{i}.layer."
        h = rms(x, P[pre + "0.layer_norm.weight"])
        q, k, v = (heads_of(h @ P[pre + f"0.SelfAttention.{m}.weight"].T) for m in "qkv")
        logits = q @ k.transpose(0, 1, 3, 2) + pos_bias
        logits = np.where(mask[:, None, None, :] > 0, logits, -np.inf)
        a = (np_softmax(logits) @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], n, heads * d_kv)
        x = x + a @ P[pre + "0.SelfAttention.o.weight"].T
        h = rms(x, P[pre + "1.layer_norm.weight"])
        ff = gelu_tanh(h @ P[pre + "1.DenseReluDense.wi_0.weight"].T) * (h @ P[pre + "1.DenseReluDense.wi_1.weight"].T)
        x = x + ff @ P[pre + "1.DenseReluDense.wo.weight"].T
    return rms(x, P["encoder.final_layer_norm.weight"])


# ---- (a) SD VAE layout -------------------------------------------------------------------------

def test_sd_vae_matches_official_layout():
    with declare_only():
        net = AutoencoderKL()
    lines = [f"{n} {list(p.shape)}" for n, p in named_params(net)]
    assert lines == layout_lines("sd_vae_ft_ema_diffusers.txt")
    assert count_params(net) == (83_653_863, 0)
    assert SCALING_FACTOR == AutoencoderKL.scaling_factor == 0.18215


# ---- (b) tiny VAE: shapes, numerics, frame by frame --------------------------------------------

def test_tiny_vae_encode_decode_against_numpy():
    net = tiny_vae()
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 3, 12, 12)).astype(np.float32)
    mean, std = net.encode(Tensor(x))
    assert mean.shape == std.shape == (2, 4, 6, 6)
    P = params_np(net)
    ref_mean, ref_std = np_vae_encode(P, x.astype(np.float64), 2, 1, 8)
    np.testing.assert_allclose(mean.asnumpy(), ref_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.asnumpy(), ref_std, rtol=1e-4, atol=1e-4)

    z = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    image = net.decode(Tensor(z))
    assert image.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(image.asnumpy(), np_vae_decode(P, z.astype(np.float64), 2, 1, 8),
                               rtol=1e-4, atol=1e-4)


def test_tiny_vae_odd_size_follows_the_asymmetric_downsample_pad():
    net = tiny_vae()
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 10, 14)).astype(np.float32)
    mean, _ = net.encode(Tensor(x))
    ref_mean, _ = np_vae_encode(params_np(net), x.astype(np.float64), 2, 1, 8)
    assert mean.shape == ref_mean.shape == (1, 4, 5, 7)
    np.testing.assert_allclose(mean.asnumpy(), ref_mean, rtol=1e-4, atol=1e-4)


def test_encode_video_is_frame_by_frame():
    net = tiny_vae()
    b, t, size = 2, 3, 8
    video = np.random.default_rng(3).uniform(-1, 1, (b, 3, t, size, size)).astype(np.float32)
    frames = video.transpose(0, 2, 1, 3, 4).reshape(b * t, 3, size, size)  # (b, t) order
    latent_shape = (b, 4, t, size // 2, size // 2)
    mean_ref, std_ref = (a.asnumpy().reshape(b, t, 4, size // 2, size // 2).transpose(0, 2, 1, 3, 4)
                         for a in net.encode(Tensor(frames)))
    for per_call in (1, 4):  # 4 does not divide B*T: the last call gets the remainder
        mean, std = net.encode_video(Tensor(video), frames_per_call=per_call)
        assert mean.shape == std.shape == latent_shape
        np.testing.assert_allclose(mean.asnumpy(), mean_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(std.asnumpy(), std_ref, rtol=1e-5, atol=1e-5)

    decoded = net.decode_video(mean, frames_per_call=4)
    assert decoded.shape == (b, 3, t, size, size)
    single = net.decode(Tensor(mean.asnumpy()[1, :, 2][None]))
    np.testing.assert_allclose(decoded.asnumpy()[1, :, 2], single.asnumpy()[0], rtol=1e-5, atol=1e-5)


# ---- (c) T5 XXL layout -------------------------------------------------------------------------

def expected_t5_layout(cfg):
    d, inner, ff = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"]
    lines = [f"shared.weight [{cfg['vocab_size']}, {d}]"]
    for i in range(cfg["num_layers"]):
        pre = f"encoder.block.{i}.layer."
        lines += [f"{pre}0.SelfAttention.{m}.weight [{inner}, {d}]" for m in "qkv"]
        lines.append(f"{pre}0.SelfAttention.o.weight [{d}, {inner}]")
        if i == 0:
            lines.append(f"{pre}0.SelfAttention.relative_attention_bias.weight "
                         f"[{cfg['relative_attention_num_buckets']}, {cfg['num_heads']}]")
        lines.append(f"{pre}0.layer_norm.weight [{d}]")
        lines += [f"{pre}1.DenseReluDense.wi_{j}.weight [{ff}, {d}]" for j in (0, 1)]
        lines += [f"{pre}1.DenseReluDense.wo.weight [{d}, {ff}]", f"{pre}1.layer_norm.weight [{d}]"]
    return lines + [f"encoder.final_layer_norm.weight [{d}]"]


def test_t5_xxl_encoder_layout_and_count():
    cfg = t5_config("t5-v1_1-xxl")
    assert (cfg["d_model"], cfg["num_layers"], cfg["num_heads"], cfg["d_kv"], cfg["d_ff"], cfg["vocab_size"]) == \
        (4096, 24, 64, 64, 10240, 32128)
    with declare_only():
        net = T5Encoder(**cfg)
    lines = [f"{n} {list(p.shape)}" for n, p in named_params(net)]
    assert lines == expected_t5_layout(cfg)
    assert count_params(net) == (4_762_310_656, 0)  # transformers T5EncoderModel, google/t5-v1_1-xxl
    pattern = re.compile(r"shared\.weight|encoder\.final_layer_norm\.weight|encoder\.block\.\d+\.layer\."
                         r"(0\.(SelfAttention\.([qkvo]|relative_attention_bias)|layer_norm)|"
                         r"1\.(DenseReluDense\.(wi_0|wi_1|wo)|layer_norm))\.weight")
    assert all(pattern.fullmatch(n) for n, _ in named_params(net))
    assert not any(n.endswith(".bias") for n, _ in named_params(net))


# ---- (d) tiny T5 forward -----------------------------------------------------------------------

def test_tiny_t5_matches_numpy_reference():
    cfg = t5_config("tiny")
    net = tiny_t5()
    rng = np.random.default_rng(4)
    ids = rng.integers(2, cfg["vocab_size"], (2, 9)).astype(np.int32)
    mask = np.ones((2, 9), np.int32)
    mask[1, 5:] = 0
    ids[1, 5:] = 0  # <pad>
    out = net(Tensor(ids), Tensor(mask))
    assert out.shape == (2, 9, cfg["d_model"]) and out.dtype == ms.float32
    ref = np_t5_encode(params_np(net), ids, mask, cfg)
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-4, atol=1e-4)


def test_t5_padding_does_not_change_valid_tokens():
    cfg = t5_config("tiny")
    net = tiny_t5(seed=5)
    rng = np.random.default_rng(6)
    valid = rng.integers(2, cfg["vocab_size"], (1, 6)).astype(np.int32)
    alone = net(Tensor(valid), Tensor(np.ones((1, 6), np.int32))).asnumpy()
    for pad_ids in (np.zeros((1, 7), np.int32), rng.integers(0, cfg["vocab_size"], (1, 7)).astype(np.int32)):
        ids = np.concatenate([valid, pad_ids], 1)
        mask = np.concatenate([np.ones((1, 6)), np.zeros((1, 7))], 1).astype(np.int32)
        padded = net(Tensor(ids), Tensor(mask)).asnumpy()
        np.testing.assert_allclose(padded[:, :6], alone, rtol=1e-5, atol=1e-5)


def test_t5_fp16_compute_stays_close_to_fp32():
    net32 = tiny_t5(seed=7)
    with declare_only():
        net16 = T5Encoder(**t5_config("tiny"))
    materialize(net16, 7, dtype=ms.float16)
    ids = Tensor(np.random.default_rng(8).integers(2, 64, (1, 7)).astype(np.int32))
    a, b = net32(ids).asnumpy(), net16(ids).asnumpy()
    assert np.isfinite(b).all()
    np.testing.assert_allclose(b, a, atol=5e-2)


# ---- (e) relative position buckets -------------------------------------------------------------

@pytest.mark.parametrize("bidirectional,num_buckets,max_distance", [(True, 32, 128), (False, 32, 128),
                                                                    (True, 16, 40)])
def test_relative_position_buckets_match_formula(bidirectional, num_buckets, max_distance):
    offsets = np.arange(-400, 401, dtype=np.int32)
    got = relative_position_bucket(Tensor(offsets), bidirectional, num_buckets, max_distance).asnumpy()
    ref = np.array([np_t5_bucket(int(r), bidirectional, num_buckets, max_distance) for r in offsets])
    np.testing.assert_array_equal(got, ref)
    assert got.min() >= 0 and got.max() == num_buckets - 1
    # where the log formula is exactly an integer (distance = max_exact * r^k, r = (max_distance /
    # max_exact)^(1/(half - max_exact))), fp32 rounding must not truncate it to the bucket below
    half = num_buckets // 2 if bidirectional else num_buckets
    max_exact = half // 2
    for k in range(1, half - max_exact):
        dist = max_exact * (max_distance / max_exact) ** (k / (half - max_exact))
        if abs(dist - round(dist)) < 1e-9:
            sign = 1 if bidirectional else -1
            upper = half if bidirectional else 0
            bucket = relative_position_bucket(Tensor(np.array([sign * round(dist)], np.int32)), bidirectional,
                                              num_buckets, max_distance).asnumpy()[0]
            assert bucket == upper + max_exact + k, (dist, bucket)


# ---- tokenizer ---------------------------------------------------------------------------------

CORPUS = [
    "a cat walks on the grass", "a dog runs in the park", "the sun sets over the sea",
    "a red car drives down the road", "waves crash on the rocks at night", "two birds fly over a lake",
    "a man plays the guitar on a stage", "snow falls on a quiet town", "a girl reads a book by the window",
    "clouds drift across a blue sky", "a train passes through the mountains", "rain drops on a glass roof",
] * 4


@pytest.fixture(scope="module")
def spiece_model(tmp_path_factory):
    """A small sentencepiece unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos)."""
    spm = pytest.importorskip("sentencepiece")
    path = tmp_path_factory.mktemp("spiece") / "spiece.model"
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=f, vocab_size=90,
                                       model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                       hard_vocab_limit=False, minloglevel=2)
    return str(path)


def test_sentencepiece_tokenizer_pads_truncates_and_appends_eos(spiece_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spiece_model)
    tok = T5Tokenizer(spiece_model, max_length=12)
    assert tok.backend == "sentencepiece" and (tok.eos_id, tok.pad_id) == (1, 0)
    texts = ["a cat runs", "a man plays the guitar on a stage at night over the sea"]
    out = tok(texts)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (2, 12) and ids.dtype == np.int32
    short = sp.encode(texts[0])
    assert list(ids[0, :len(short) + 1]) == short + [1]
    assert (ids[0, len(short) + 1:] == 0).all() and mask[0].sum() == len(short) + 1
    long = sp.encode(texts[1])
    assert len(long) > 11
    assert list(ids[1]) == long[:11] + [1] and mask[1].all()
    assert tok("a cat", max_length=4)["input_ids"].shape == (1, 4)


def test_tokenizer_json_backend_matches_sentencepiece(spiece_model, tmp_path):
    import sentencepiece as spm

    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, processors

    # rebuild the same unigram vocabulary as a tokenizer.json, with T5's "$A </s>" post-processor
    sp = spm.SentencePieceProcessor(model_file=spiece_model)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tk = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tk.enable_padding(length=50)  # settings stored in the file must not leak through
    path = tmp_path / "tokenizer.json"
    tk.save(str(path))

    from_json = T5Tokenizer(str(tmp_path), max_length=10)  # a directory: tokenizer.json wins
    from_sp = T5Tokenizer(spiece_model, max_length=10)
    assert from_json.backend == "tokenizers" and (from_json.eos_id, from_json.pad_id) == (1, 0)
    texts = ["a dog walks by the lake", "snow", "a train passes through the quiet town at night"]
    a, b = from_json(texts), from_sp(texts)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])
    assert (a["input_ids"] == 1).sum() == len(texts)  # exactly one </s> per row


# ---- optional cross-checks against the official PyTorch code (never installed here) ------------

def test_optional_t5_against_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = t5_config("tiny")
    net = tiny_t5(seed=9)
    ref = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=cfg["vocab_size"], d_model=cfg["d_model"], d_kv=cfg["d_kv"], d_ff=cfg["d_ff"],
        num_layers=cfg["num_layers"], num_heads=cfg["num_heads"], feed_forward_proj="gated-gelu",
        dropout_rate=0.0, layer_norm_epsilon=1e-6)).eval()
    state = {n: torch.from_numpy(p.asnumpy()) for n, p in named_params(net)}
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert set(missing) <= {"encoder.embed_tokens.weight"} and not unexpected
    ids = np.random.default_rng(10).integers(2, cfg["vocab_size"], (2, 8)).astype(np.int64)
    mask = np.ones((2, 8), np.int64)
    mask[0, 6:] = 0
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    got = net(Tensor(ids.astype(np.int32)), Tensor(mask.astype(np.int32))).asnumpy()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_optional_vae_against_diffusers():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    net = tiny_vae(seed=11)
    ref = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                                  **TINY_VAE).eval()
    ref.load_state_dict({n: torch.from_numpy(p.asnumpy()) for n, p in named_params(net)}, strict=True)
    x = np.random.default_rng(12).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        dist = ref.encode(torch.from_numpy(x)).latent_dist
        image = ref.decode(dist.mean).sample
    mean, std = net.encode(Tensor(x))
    np.testing.assert_allclose(mean.asnumpy(), dist.mean.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.asnumpy(), dist.std.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.decode(mean).asnumpy(), image.numpy(), rtol=1e-4, atol=1e-4)
