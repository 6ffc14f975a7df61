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
