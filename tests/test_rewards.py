"""T2V-Turbo's reward models (vgen/models/rewards): HPSv2.1's CLIP at full size against its official
layout (tests/layouts/hpsv2_1_vit_h14.txt, read off open_clip's CLIP and VisionTransformer as HPSv2's
copy has them), the preprocessing's resize against PIL's antialiased bicubic, and the tiny model's
score against a float64 numpy re-implementation of the official formulas."""
import numpy as np
import pytest
from mindspore import Tensor

from conftest import layout_lines
from test_open_clip_text import np_blocks, np_ln, params_np, randomize, token_batch
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.rewards.hps import CLIP_MEAN, CLIP_STD, ImageTextScore, build_hps, max_size_matrices
from vgen.models.rewards.resample import resample_matrix, resize_max_size
from vgen.models.text.open_clip import open_clip_text_config
from vgen.runtime import setup_device

setup_device("auto")  # before any kernel runs (a Trainer later in the process sets it too)


def test_hps_full_size_has_the_official_layout_and_count():
    with declare_only():
        net = build_hps("hpsv2.1")
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == layout_lines("hpsv2_1_vit_h14.txt")
    assert count_params(net) == (986_109_441, 0)  # open_clip ViT-H-14: 632,076,800 image + 354,032,641 text
    assert net.num_blocks == 24  # the text features come from the last block


@pytest.mark.parametrize("n_in,n_out", [(512, 224), (320, 140), (40, 28), (16, 28), (7, 7)])
def test_resize_is_pils_antialiased_bicubic(n_in, n_out):
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.random((n_in, 9)).astype(np.float32)
    want = np.asarray(Image.fromarray(image, mode="F").resize((9, n_out), Image.BICUBIC))
    got = resample_matrix(n_in, n_out) @ image
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_resize_max_size_fits_the_longer_side_and_centres_the_padding():
    assert resize_max_size(320, 512, 224) == (140, 224, (42, 42, 0, 0))
    assert resize_max_size(8, 5, 28) == (28, 18, (0, 0, 5, 5))
    rows, cols = max_size_matrices(8, 5, 28)
    assert rows.shape == (28, 8) and cols.shape == (5, 28)
    assert not cols[:, :5].any() and not cols[:, 23:].any() and np.allclose(cols[:, 5:23].sum(0), 1.0)


def np_image_features(P, pixels, cfg):
    """open_clip VisionTransformer.forward + encode_image(normalize=True) in float64."""
    p = cfg["patch_size"]
    n, _, s, _ = pixels.shape
    g = s // p
    patches = pixels.reshape(n, 3, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, g * g, -1)
    x = patches @ P["visual.conv1.weight"].reshape(cfg["width"], -1).T
    x = np.concatenate([np.broadcast_to(P["visual.class_embedding"], (n, 1, cfg["width"])), x], 1)
    x = np_ln(P, x + P["visual.positional_embedding"], "visual.ln_pre")
    x = np_blocks(P, x, "visual.transformer.resblocks.", cfg["layers"], cfg["heads"])
    f = np_ln(P, x[:, 0], "visual.ln_post") @ P["visual.proj"]
    return f / np.linalg.norm(f, axis=-1, keepdims=True)


def test_tiny_hps_score_matches_numpy():
    from PIL import Image

    from vgen.models.rewards.clip_vision import VISION_CONFIGS

    with declare_only():
        net = build_hps("hpsv2.1-tiny")
    randomize(materialize(net, 0), 3)
    P = params_np(net)
    cfg_text = open_clip_text_config("tiny")
    ids = token_batch(cfg_text)
    text = net.text_features(Tensor(ids)).asnumpy()
    # encode_text(normalize=True): ln_final of every block's output at the eot token, @ text_projection
    n = ids.shape[1]
    x = P["token_embedding.weight"][ids] + P["positional_embedding"][:n]
    x = np_ln(P, np_blocks(P, x, "transformer.resblocks.", cfg_text["layers"], cfg_text["heads"],
                           np.triu(np.full((n, n), -np.inf), 1)), "ln_final")
    t = x[np.arange(len(ids)), ids.argmax(-1)] @ P["text_projection"]
    want_text = t / np.linalg.norm(t, axis=-1, keepdims=True)
    np.testing.assert_allclose(text, want_text, rtol=1e-4, atol=1e-5)

    # frames [-1, 1] of 20 x 12 -> [0, 1] -> ResizeMaxSize(28) (PIL bicubic, zero padding) -> normalised
    rng = np.random.default_rng(1)
    frames = rng.uniform(-1.2, 1.2, (3, 3, 20, 12)).astype(np.float32)  # a little outside: the clamp acts
    h, w, (top, bottom, left, right) = resize_max_size(20, 12, 28)
    image = np.clip(frames.astype(np.float64) / 2 + 0.5, 0, 1)
    resized = np.stack([[np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), Image.BICUBIC))
                         for c in f] for f in image]).astype(np.float64)
    padded = np.pad(resized, ((0, 0), (0, 0), (top, bottom), (left, right)))
    pixels = (padded - np.array(CLIP_MEAN).reshape(1, 3, 1, 1)) / np.array(CLIP_STD).reshape(1, 3, 1, 1)
    want = (np_image_features(P, pixels, VISION_CONFIGS["tiny"]) * want_text).sum(-1)
    rows, cols = max_size_matrices(20, 12, 28)
    got = ImageTextScore(net)(Tensor(frames), Tensor(text), Tensor(rows), Tensor(cols)).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.ptp(got) > 1e-3  # the score tells the frames apart


# ---- InternVideo2-S2 (the video reward) ---------------------------------------------------------

def test_internvideo2_declares_the_parts_its_score_runs_in_the_official_order():
    """tests/layouts/internvideo2_s2_1b_f8.txt: the demo InternVideo2_Stage2's state dict at 8 frames,
    each entry marked U (the score reads it), C (computed and discarded) or - (never run); ours is
    the U entries in their order, less the int64 position_ids buffer (recomputed)."""
    from vgen.models.rewards.internvideo2 import build_internvideo2

    official = [ln.rsplit(" ", 1) for ln in layout_lines("internvideo2_s2_1b_f8.txt")]
    assert len(official) == 1013
    used = [entry for entry, flag in official if flag == "U" and not entry.startswith("text_encoder.embeddings.position_ids")]
    with declare_only():
        net = build_internvideo2("internvideo2-s2")
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == used
    assert count_params(net) == (1_292_738_304, 0)
    with declare_only():
        four = build_internvideo2("internvideo2-s2", frames=4)
    assert count_params(four) == (1_291_296_512, 0)


def iv2_tiny(seed=0):
    from vgen.models.rewards.internvideo2 import build_internvideo2

    with declare_only():
        net = build_internvideo2("internvideo2-s2-tiny", frames=4)
    materialize(net, seed)
    rng = np.random.default_rng(seed)
    for name, p in named_params(net):  # scales that keep every path visible (LayerScale starts at 1e-5)
        shape = tuple(p.shape)
        if len(shape) == 1 and not name.endswith("bias"):
            value = 1.0 + 0.3 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.2 * rng.standard_normal(shape)
        elif "embed" in name or "token" in name:
            value = rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        p.set_data(Tensor(np.asarray(value, np.float32)))
    return net


def np_iv2_video(P, clips, cfg, heads):
    """PretrainInternVideo2 (mask None) + clip_projector + vision_proj + L2, float64."""
    import math

    def rms(x, w, eps=1e-6):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def attend(q, k, v):
        b, nq, c = q.shape
        d = c // heads
        q, k, v = (t.reshape(b, -1, heads, d).transpose(0, 2, 1, 3) for t in (q, k, v))
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b, nq, c)

    V = "vision_encoder."
    b, _, t, s, _ = clips.shape
    p, w = cfg["patch_size"], cfg["width"]
    g = s // p
    patches = clips.reshape(b, 3, t, g, p, g, p).transpose(0, 2, 3, 5, 1, 4, 6).reshape(b, t * g * g, -1)
    x = patches @ P[V + "patch_embed.proj.weight"].reshape(w, -1).T + P[V + "patch_embed.proj.bias"]
    x = np.concatenate([np.broadcast_to(P[V + "cls_token"], (b, 1, w)), x], 1) + P[V + "pos_embed"]
    for i in range(cfg["depth"]):
        pre = f"{V}blocks.{i}."
        qkv = rms(x, P[pre + "norm1.weight"]) @ P[pre + "attn.qkv.weight"].T
        q, k, v = np.split(qkv, 3, -1)
        a = attend(rms(q, P[pre + "attn.q_norm.weight"]), rms(k, P[pre + "attn.k_norm.weight"]), v)
        x = x + P[pre + "ls1.gamma"] * (a @ P[pre + "attn.proj.weight"].T + P[pre + "attn.proj.bias"])
        h = rms(x, P[pre + "norm2.weight"]) @ P[pre + "mlp.fc1.weight"].T + P[pre + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))  # tanh GELU
        x = x + P[pre + "ls2.gamma"] * (h @ P[pre + "mlp.fc2.weight"].T + P[pre + "mlp.fc2.bias"])
    C = V + "clip_projector."
    ln = lambda v, n: np_ln(P, v, n)  # noqa: E731 (eps 1e-5, as open_clip's)
    q = ln(x.mean(1, keepdims=True), C + "norm1_q") @ P[C + "cross_attn.q.weight"].T + P[C + "cross_attn.q_bias"]
    k = ln(x, C + "norm1_k") @ P[C + "cross_attn.k.weight"].T + P[C + "cross_attn.k_bias"]
    v = ln(x, C + "norm1_v") @ P[C + "cross_attn.v.weight"].T + P[C + "cross_attn.v_bias"]
    pooled = attend(q, k, v)[:, 0] @ P[C + "cross_attn.proj.weight"].T + P[C + "cross_attn.proj.bias"]
    f = pooled @ P["vision_proj.weight"].T + P["vision_proj.bias"]
    return f / np.linalg.norm(f, axis=-1, keepdims=True)


def test_tiny_internvideo2_score_matches_numpy(tmp_path):
    from PIL import Image

    from np_reference import bert_reference
    from vgen.models.rewards.internvideo2 import (IV2_CONFIGS, InternVideo2Tokenizer, VideoTextScore,
                                                  min_size_crop_matrices)
    from vgen.models.rewards.resample import resize_min_size

    net = iv2_tiny(2)
    P = params_np(net)
    cfg = IV2_CONFIGS["internvideo2-s2-tiny"]
    words = ["a", "cat", "runs", "the", "sun", "sets", "over", "sea"]
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = InternVideo2Tokenizer(str(tmp_path), 40)(["A cat runs", "the sun sets over the sea"])
    ids, mask = tok["input_ids"], tok["attention_mask"]
    assert ids.shape == (2, 40) and list(ids[0, :5]) == [2, 5, 6, 7, 0] and mask[0].sum() == 4  # [CLS] a cat runs, no [SEP]
    text = net.text_features(Tensor(ids), Tensor(mask)).asnumpy()
    T = {n[len("text_encoder."):]: a for n, a in P.items() if n.startswith("text_encoder.")}
    states = bert_reference(T, ids, mask, cfg["text"]["num_heads"], cfg["text"]["num_layers"])
    t = states[:, 0] @ P["text_proj.weight"].T + P["text_proj.bias"]
    want_text = t / np.linalg.norm(t, axis=-1, keepdims=True)
    np.testing.assert_allclose(text, want_text, rtol=1e-4, atol=1e-5)

    rng = np.random.default_rng(4)
    clips = rng.uniform(-1.2, 1.2, (2, 4, 3, 20, 30)).astype(np.float32)
    rows, cols = min_size_crop_matrices(20, 30, 28, np.random.default_rng(9))
    h, w = resize_min_size(20, 30, 28)
    crop = np.random.default_rng(9)
    top, left = int(crop.integers(0, h - 28 + 1)), int(crop.integers(0, w - 28 + 1))
    x = np.clip(clips.astype(np.float64) / 2 + 0.5, 0, 1)
    resized = np.stack([[[np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), Image.BICUBIC))
                          for c in frame] for frame in clip] for clip in x]).astype(np.float64)
    pixels = resized[..., top:top + 28, left:left + 28]
    pixels = (pixels - np.array([0.485, 0.456, 0.406]).reshape(1, 1, 3, 1, 1)) / \
        np.array([0.229, 0.224, 0.225]).reshape(1, 1, 3, 1, 1)
    want = (np_iv2_video(P, pixels.transpose(0, 2, 1, 3, 4), cfg["vision"], cfg["vision"]["heads"]) * want_text).sum(-1)
    got = VideoTextScore(net)(Tensor(clips), Tensor(text), Tensor(rows), Tensor(cols)).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.ptp(got) > 1e-3


def test_checkpoint_pos_embed_is_interpolated_along_time_as_the_official_load():
    from vgen.models.rewards.internvideo2 import checkpoint_reshape

    rng = np.random.default_rng(0)
    four = rng.standard_normal((1, 1 + 4 * 3, 5))
    eight = checkpoint_reshape("vision_encoder.pos_embed", four, (1, 1 + 8 * 3, 5))
    p = four[0, 1:].reshape(4, 3, 5)
    # F.interpolate(size=8, mode="linear", align_corners=False): src = (t + 0.5) / 2 - 0.5, clamped
    want = [p[0], .75 * p[0] + .25 * p[1], .25 * p[0] + .75 * p[1], .75 * p[1] + .25 * p[2],
            .25 * p[1] + .75 * p[2], .75 * p[2] + .25 * p[3], .25 * p[2] + .75 * p[3], p[3]]
    np.testing.assert_allclose(eight[0, 1:].reshape(8, 3, 5), np.stack(want), rtol=1e-12)
    np.testing.assert_array_equal(eight[0, 0], four[0, 0])  # the class row
    assert checkpoint_reshape("vision_encoder.pos_embed", four, four.shape) is four
