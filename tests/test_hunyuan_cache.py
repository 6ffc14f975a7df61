"""HunyuanVideo's frozen encoders in vgen-cache and in online training (model=hunyuan_tiny).

The quickstart set (8 clips and 1 image) is cached with the tiny LLaMA, CLIP and causal VAE
(seeded weights) and tokenizers built here with the `tokenizers` package; the cached arrays are
compared with the encoders called directly on the same captions and frames (HunyuanPromptEncoder
per template, CLIP's pooled output, the VAE's plain encode per segment), the readers with the
formulas of cached_video.py, the manifest checks with their messages; then a few steps train on
the caches and online, and caption dropout is checked to feed text/empty.npz."""
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose, read_metrics
from tiny_tokenizers import write_clip_tokenizer, write_llama_tokenizer
from vgen.cli import cache as cache_cli
from vgen.data import cache_build
from vgen.data.cached_video import CachedVideoDataset, build_video_dataset
from vgen.data.errors import DataError
from vgen.data.manifest import (check_latent_manifest, check_text_manifest, ensure_manifest, latent_folder,
                                read_manifest, text_folder, text_manifest)
from vgen.models.family import LatentSpec, TextSpec
from vgen.train.pipeline import named_inputs

tokenizers = pytest.importorskip("tokenizers")

_spec = importlib.util.spec_from_file_location("make_quickstart_data", REPO / "tools" / "make_quickstart_data.py")
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

STRIDE = 4  # clips of 24-48 frames give 6-12 frames: one or two 5-frame segments
FRAMES = 5  # pixel frames per sample: 1 + 4 k, 2 latent frames
RES = (32, 32)
# hunyuan_tiny's specs (test_specs_are_the_tiny_familys checks them against the family)
TEXT_SPEC = TextSpec("llama-tiny", 32, 16, 0.2, pooled_dim=32, pooled_encoder="clip-tiny", drop_to="empty")
LATENT_SPEC = LatentSpec("hunyuan-vae-tiny", 16, (3, 16, 16), (4, 8, 8), 0.476986)
WORDS = quickstart.caption_vocabulary()


def test_specs_are_the_tiny_familys():
    from vgen.models.registry import build_family

    family = build_family(compose(["model=hunyuan_tiny"]).model)
    assert (family.text, family.latent) == (TEXT_SPEC, LATENT_SPEC)
    assert LATENT_SPEC.latent_shape(FRAMES, *RES) == (16, 2, 4, 4)
    full = compose(["model=hunyuan"]).model  # the official encoders by default
    assert (full.text_encoder.name, full.text_encoder.max_length, full.text_encoder_2.name,
            full.text_encoder_2.max_length, full.vae.name) == (
        "llava-llama-3-8b", 256, "clip-vit-large-patch14", 77, "hunyuan-vae-884-16c")
    official = build_family(full)  # declared only: no memory
    assert official.text == TextSpec("llava-llama-3-8b", 4096, 256, 0.2, pooled_dim=768,
                                     pooled_encoder="clip-vit-large-patch14", drop_to="empty")
    assert official.latent == LatentSpec("hunyuan-vae-884-16c", 16, (33, 90, 160), (4, 8, 8), 0.476986)


def test_registry_entries_are_the_official_models():
    """The full-size entries, declared only: HunyuanVideo's checkpoints load into them (names and counts
    as test_hunyuan_text / test_hunyuan_vae check against the official layouts)."""
    from conftest import layout_lines
    from vgen.models.encoders import POOLED, PROMPT_STATES, text_encoder_spec, vae_spec
    from vgen.models.layers.init import count_params, declare_only, named_params

    llm, clip, vae = text_encoder_spec("llava-llama-3-8b"), text_encoder_spec("clip-vit-large-patch14"), \
        vae_spec("hunyuan-vae-884-16c")
    assert (llm.dim, llm.output, llm.official_crop, clip.dim, clip.output, clip.max_positions) == (
        4096, PROMPT_STATES, True, 768, POOLED, 77)
    assert (vae.channels, vae.compression, vae.scale, vae.shift) == (16, (4, 8, 8), 0.476986, 0.0)
    with declare_only():
        nets = [llm.build(), clip.build(), vae.build()]
    assert [count_params(n)[0] for n in nets] == [7_505_186_816, 123_060_480, 246_478_803]
    assert [f"{n} {list(p.shape)}" for n, p in named_params(nets[2])] == layout_lines("hunyuanvideo_vae.txt")
    assert (nets[2].tile_sample_size, nets[2].tile_sample_tsize, nets[2].tile_overlap) == (256, 64, 0.25)


# ---- tokenizers and data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hunyuan_cache")
    csv_path = Path(quickstart.build(str(root / "data"), num=8, seed=0, num_images=1))
    return {"root": root, "csv": csv_path, "llama": write_llama_tokenizer(root / "llama_tok", WORDS),
            "clip": write_clip_tokenizer(root / "clip_tokenizer.json", WORDS)}


def overrides(qs, cache_dir, *more):
    return ["model=hunyuan_tiny", "data=video", f"data.csv_path={qs['csv']}", f"data.cache_dir={cache_dir}",
            f"model.text_encoder.tokenizer={qs['llama']}", f"model.text_encoder_2.tokenizer={qs['clip']}",
            f"data.frame_stride={STRIDE}", f"data.num_frames={FRAMES}", f"data.resolution=[{RES[0]},{RES[1]}]",
            "model.depth_double=1", "model.depth_single=1", "progress=false", *more]


def rows(qs):
    import pandas as pd

    df = pd.read_csv(qs["csv"])
    return [dict(r, stem=os.path.splitext(r["video"])[0], line=i + 2, image=r["video"].endswith(".png"))
            for i, r in enumerate(df.to_dict("records"))]


@pytest.fixture(scope="module")
def text_cache(qs):
    cache_dir = qs["root"] / "cache"
    return cache_dir, cache_cli.run("text", overrides(qs, cache_dir))


@pytest.fixture(scope="module")
def vae_cache(qs, text_cache):
    cache_dir = qs["root"] / "cache"
    return cache_dir, cache_cli.run("vae", overrides(qs, cache_dir))


# ---- text ------------------------------------------------------------------------------------------------

def direct_text(cfg, captions, images):
    """The encoders called directly: HunyuanPromptEncoder with the template of each caption (the crop
    counted with this tokenizer), CLIP's pooled output on its own tokens."""
    import mindspore as ms

    from vgen.models.encoders import build_text_encoder
    from vgen.models.text.llama import PROMPT_TEMPLATES, HunyuanPromptEncoder, template_prefix_length

    llama, llama_tok = build_text_encoder(cfg.model.text_encoder)
    clip, clip_tok = build_text_encoder(cfg.model.text_encoder_2, key="text_encoder_2")
    emb, mask = [], []
    for caption, image in zip(captions, images):
        spec = dict(PROMPT_TEMPLATES["dit-llm-encode" if image else "dit-llm-encode-video"])
        spec["crop_start"] = template_prefix_length(llama_tok, spec["template"])
        states, m = HunyuanPromptEncoder(llama, llama_tok, spec, text_len=cfg.model.text_len)([caption])
        emb.append(states.asnumpy()[0])
        mask.append(m[0])
    tokens = clip_tok(list(captions))
    _, pooled = clip(ms.Tensor(tokens["input_ids"]), ms.Tensor(tokens["attention_mask"]))
    return np.stack(emb), np.stack(mask), pooled.asnumpy()


def test_tiny_tokenizer_crop_lands_on_the_caption(qs):
    """The tiny LLaMA's crop is counted with the tokenizer (the official 95 / 36 hold for Llama-3's):
    after it come exactly the caption's tokens, then the template's closing <|eot_id|>."""
    from vgen.models.encoders import TextEncoders

    cfg = compose(overrides(qs, qs["root"] / "unused"))
    encoders = TextEncoders.from_model_config(cfg.model)
    llm = encoders.encoder("text_encoder")
    tok = llm.tokenizer
    caption = rows(qs)[0]["caption"]
    words = tok.token_ids(caption, add_special_tokens=False)
    for image in (False, True):
        prompt = llm.prompts[image]
        ids = prompt.tokenize([caption])["input_ids"][0]
        start = llm.crop_start(image)
        assert list(ids[start:start + len(words) + 1]) == words + [tok.tokenizer.token_to_id("<|eot_id|>")]
    assert llm.crop_start(False) > llm.crop_start(True) > 10  # the video template is the longer


def test_text_cache_matches_the_encoders(qs, text_cache):
    cache_dir, summary = text_cache
    assert (summary.rows, summary.encoded, summary.skipped, summary.bad) == (9, 9, 0, [])
    m = read_manifest(text_folder(cache_dir))
    assert {k: m[k] for k in ("kind", "encoder", "weights", "dim", "length", "dtype")} == {
        "kind": "text", "encoder": "llama-tiny", "weights": "random-init:llama-tiny:seed0", "dim": 32, "length": 16,
        "dtype": "fp32"}
    assert m["tokenizer"] == cache_build._file_sha256(str(qs["llama"] / "tokenizer.json"))
    assert m["pooled"] == {"encoder": "clip-tiny", "weights": "random-init:clip-tiny:seed0", "dim": 32, "length": 16,
                           "tokenizer": cache_build._file_sha256(str(qs["clip"]))}

    samples = rows(qs)
    assert [r["image"] for r in samples] == [False] * 8 + [True]
    cfg = compose(overrides(qs, cache_dir))
    captions, images = [r["caption"] for r in samples] + [""], [r["image"] for r in samples] + [False]
    emb, mask, pooled = direct_text(cfg, captions, images)
    files = [text_folder(cache_dir) / (r["stem"] + ".npz") for r in samples] + [text_folder(cache_dir) / "empty.npz"]
    for i, path in enumerate(files):
        with np.load(path, allow_pickle=False) as z:
            assert sorted(z.files) == ["mask", "text_emb", "text_pooled"]
            assert z["text_emb"].shape == (16, 32) and z["text_pooled"].shape == (32,) and z["mask"].shape == (16,)
            np.testing.assert_allclose(z["text_emb"], emb[i], atol=1e-5)
            np.testing.assert_array_equal(z["mask"], mask[i])
            np.testing.assert_allclose(z["text_pooled"], pooled[i], atol=1e-5)
    # the caption's tokens and the closing <|eot_id|>; the empty prompt keeps the <|eot_id|> only
    assert mask[0].sum() == len(samples[0]["caption"].split()) + 1 and mask[-1].sum() == 1
    # the image row took the image template: the video template gives other states
    video_states, _, _ = direct_text(cfg, [samples[-1]["caption"]], [False])
    assert not np.allclose(emb[-2], video_states[0], atol=1e-3)


def test_manifest_mismatch_names_the_encoder(qs, text_cache, tmp_path):
    folder = text_folder(text_cache[0])
    assert check_text_manifest(folder, TEXT_SPEC)["pooled"]["encoder"] == "clip-tiny"
    cases = [
        (TextSpec("llama-tiny", 32, 16, 0.2, pooled_dim=32, pooled_encoder="clip-vit-large-patch14"),
         ["in the pooled text encoder (model.text_encoder_2, cached 'clip-tiny')",
          "pooled encoder: cached 'clip-tiny', expected 'clip-vit-large-patch14'"]),
        (TextSpec("llama-tiny", 32, 16, 0.2, pooled_dim=768, pooled_encoder="clip-tiny"),
         ["model.text_encoder_2", "pooled dim: cached 32, expected 768"]),
        (TextSpec("llava-llama-3-8b", 4096, 256, 0.2, pooled_dim=32, pooled_encoder="clip-tiny"),
         ["in the text encoder (model.text_encoder, cached 'llama-tiny')",
          "encoder: cached 'llama-tiny', expected 'llava-llama-3-8b'", "dim: cached 32, expected 4096",
          "length: cached 16, expected 256"]),
    ]
    for spec, parts in cases:
        with pytest.raises(DataError) as e:
            check_text_manifest(folder, spec, model="hunyuan_tiny")
        for part in parts:
            assert part in str(e.value), (part, str(e.value))
        assert "vgen-cache text model=hunyuan_tiny" in str(e.value)
    with pytest.raises(DataError, match="pooled weights: cached 'random-init:clip-tiny:seed0', expected 'sha256:01'"):
        check_text_manifest(folder, TEXT_SPEC, pooled_weights="sha256:01")
    # a cache with one encoder only (as OpenSora's): the pooled encoder is missing
    single = tmp_path / "text"
    ensure_manifest(single, text_manifest("llama-tiny", "random-init:llama-tiny:seed0", 32, 16, "fp32"))
    with pytest.raises(DataError, match=r"pooled text encoder \(model.text_encoder_2, of which the cache has none\)"):
        check_text_manifest(single, TEXT_SPEC)
    # the training reader checks it at construction
    cfg = compose(overrides(qs, text_cache[0], "data.text=cache", "model.text_encoder_2.name=clip-vit-large-patch14"))
    from vgen.models.hunyuan.family import text_spec

    with pytest.raises(DataError, match="pooled encoder: cached 'clip-tiny', expected 'clip-vit-large-patch14'"):
        build_video_dataset(cfg.data, text_spec(cfg.model), LATENT_SPEC)


def test_tool_refuses_a_cache_of_another_pooled_encoder(qs, text_cache, tmp_path):
    """Resuming with another CLIP tokenizer (so another pooled identity) is refused before any work."""
    other = write_clip_tokenizer(tmp_path / "other_clip.json", WORDS)
    other.write_text(other.read_text() + "\n")  # the same vocabulary, another file
    with pytest.raises(DataError, match=r"pooled: cached \{.*'tokenizer': 'sha256:"):
        cache_cli.run("text", overrides(qs, text_cache[0], f"model.text_encoder_2.tokenizer={other}"))


# ---- latents ---------------------------------------------------------------------------------------------

def direct_segments(cfg, path, count):
    """The reference: each 5-frame segment of the clip at STRIDE, resized and cropped as read_clip does,
    through the VAE's plain encode (one causal pass per segment)."""
    import mindspore as ms

    from vgen.data.video import read_clip
    from vgen.models.encoders import build_vae

    vae = build_vae(cfg.model.vae)
    means, stds = [], []
    length = FRAMES if count >= FRAMES else 1
    for first in range(0, count - length + 1, length):
        clip = read_clip(path, length, stride=STRIDE, start=first * STRIDE, size=RES)  # [T, 3, H, W]
        mean, std = vae.encode(ms.Tensor(clip.transpose(1, 0, 2, 3)[None].copy()))
        means.append(mean.asnumpy()[0].transpose(1, 0, 2, 3))
        stds.append(std.asnumpy()[0].transpose(1, 0, 2, 3))
    return np.stack(means), np.stack(stds)


def test_vae_cache_holds_segments_encoded_on_their_own(qs, vae_cache):
    cache_dir, summary = vae_cache
    assert (summary.rows, summary.encoded, summary.skipped, summary.bad) == (9, 9, 0, [])
    folder = latent_folder(cache_dir, *RES)
    m = read_manifest(folder)
    assert {k: m[k] for k in ("vae", "weights", "channels", "compression", "scale", "shift", "resolution",
                              "frame_stride", "segment_frames")} == {
        "vae": "hunyuan-vae-tiny", "weights": "random-init:hunyuan-vae-tiny:seed0", "channels": 16,
        "compression": [4, 8, 8], "scale": 0.476986, "shift": 0.0, "resolution": [32, 32], "frame_stride": STRIDE,
        "segment_frames": FRAMES}
    cfg = compose(overrides(qs, cache_dir))
    samples = rows(qs)
    counts = {}
    for r in samples:
        count = 1 if r["image"] else (r["num_frames"] - 1) // STRIDE + 1  # frames at the stride
        with np.load(folder / (r["stem"] + ".npz"), allow_pickle=False) as z:
            segments = 1 if r["image"] else count // FRAMES
            assert z["latent_mean"].shape == (segments, 1 if r["image"] else 2, 16, 4, 4)
            counts[r["stem"]] = segments
    assert sorted(set(counts.values())) == [1, 2]  # clips of one and of two segments
    two = next(r for r in samples if counts[r["stem"]] == 2)
    for r in (samples[0], two, samples[-1]):
        mean, std = direct_segments(cfg, str(qs["csv"].parent / r["video"]), 1 if r["image"] else
                                    (r["num_frames"] - 1) // STRIDE + 1)
        with np.load(folder / (r["stem"] + ".npz"), allow_pickle=False) as z:
            np.testing.assert_allclose(z["latent_mean"], mean, atol=1e-5)
            np.testing.assert_allclose(z["latent_std"], std, atol=1e-5)
            assert list(z["ori_size"]) == [r["height"], r["width"]]


def test_cached_samples_take_a_segment_from_its_start(qs, vae_cache):
    cache_dir, _ = vae_cache
    cfg = compose(overrides(qs, cache_dir, "data.latents=cache", "data.text=cache"))
    ds = build_video_dataset(cfg.data, TEXT_SPEC, LATENT_SPEC)
    assert isinstance(ds, CachedVideoDataset)
    samples = rows(qs)
    for i in range(len(samples)):
        s = ds.get(i, np.random.default_rng(i))
        assert s["latent"].shape == (16, 2, 4, 4) and s["text_pooled"].shape == (32,)
        with np.load(latent_folder(cache_dir, *RES) / (samples[i]["stem"] + ".npz")) as z:
            mean, std = z["latent_mean"], z["latent_std"]
        rng = np.random.default_rng(i)  # the formula, replayed: segment, then noise
        seg = int(rng.integers(0, len(mean)))
        idx = np.zeros(2, int) if mean.shape[1] == 1 else np.arange(2)  # an image: a still clip
        noise = rng.standard_normal((2, 16, 4, 4), dtype=np.float32)
        np.testing.assert_allclose(s["latent"], ((mean[seg][idx] + std[seg][idx] * noise) * 0.476986)
                                   .transpose(1, 0, 2, 3), rtol=1e-6, atol=1e-7)
        with np.load(text_folder(cache_dir) / (samples[i]["stem"] + ".npz")) as z:
            np.testing.assert_array_equal(s["text_pooled"], z["text_pooled"])
    with np.load(text_folder(cache_dir) / "empty.npz") as z:
        empty = ds.empty_text()
        assert sorted(empty) == ["text_emb", "text_mask", "text_pooled"]
        np.testing.assert_array_equal(empty["text_pooled"], z["text_pooled"])
    # longer clips than the segments hold are refused before training, with the fix
    longer = compose(overrides(qs, cache_dir, "data.latents=cache", "data.num_frames=9"))
    with pytest.raises(DataError, match=r"segments of 5 frames \(2 latent frames\), but training takes clips of up "
                                        r"to 9 frames \(3 latent frames\)"):
        build_video_dataset(longer.data, TEXT_SPEC, LATENT_SPEC)
    check_latent_manifest(latent_folder(cache_dir, *RES), LATENT_SPEC, RES, STRIDE, max_frames=1)  # shorter: fine


def test_segments_are_as_long_as_the_longest_training_clip(qs, tmp_path):
    """data.num_frames, or the bucket table's most frames, cut to 1 + 4 k."""
    from vgen.data.cached_video import make_buckets, segment_frames

    assert segment_frames(None, 5, 4) == 5 and segment_frames(None, 8, 4) == 5 and segment_frames(None, 16, 1) == 16
    for entries, expected in (("{1: [1.0, 2], 7: [1.0, 1]}", 5), ("{1: [1.0, 2], 9: [0.5, 1], 4: [1.0, 1]}", 9)):
        table = tmp_path / "buckets.yaml"
        table.write_text(f'"32px": {entries}\n')
        cfg = compose(overrides(qs, tmp_path / "cache", f"data.buckets={table}"))
        assert segment_frames(make_buckets(cfg.data), cfg.data.num_frames, 4) == expected


# ---- training ---------------------------------------------------------------------------------------------

def train(tmp_path, name, overrides_):
    from vgen.train.trainer import Trainer

    run_dir = tmp_path / name
    run_dir.mkdir(parents=True)
    trainer = Trainer(compose(overrides_), run_dir).setup()
    trainer.run()
    return trainer, read_metrics(run_dir)


STEPS = ["schedule.max_steps=2", "schedule.batch_size=2", "schedule.log_every=1", "schedule.warmup_steps=0"]


@pytest.mark.slow
def test_trains_on_the_caches_and_drops_captions_to_empty_npz(qs, vae_cache, tmp_path):
    cache_dir, _ = vae_cache
    tr, metrics = train(tmp_path, "cached", overrides(qs, cache_dir, "data.latents=cache", "data.text=cache",
                                                      "data.text_dropout=0.5", *STEPS))
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) for m in metrics)
    assert tr.data.encoders is None  # nothing online
    with np.load(text_folder(cache_dir) / "empty.npz") as z:
        empty = {"text_emb": z["text_emb"], "text_mask": z["mask"], "text_pooled": z["text_pooled"]}
    dropped = kept = 0
    for step in range(6):
        micro = tr.data.batches.build(step).micro[0]
        batch = micro.batch
        inputs = named_inputs(tr.family, batch)
        for row, drop in enumerate(batch["text_drop"]):
            name = tr.data.dataset.names[tr.data.sampler.dataset_index(step, int(micro.positions[row]))]
            with np.load(text_folder(cache_dir) / (name + ".npz")) as z:
                own = {"text_emb": z["text_emb"], "text_mask": z["mask"], "text_pooled": z["text_pooled"]}
            want = empty if drop else own
            np.testing.assert_array_equal(inputs["text_emb"][row], want["text_emb"])
            np.testing.assert_array_equal(inputs["text_mask"][row], want["text_mask"].astype(np.float32))
            np.testing.assert_array_equal(inputs["text_pooled"][row], want["text_pooled"])
            dropped, kept = dropped + bool(drop), kept + (not drop)
    assert dropped and kept


@pytest.mark.slow
def test_trains_online_with_the_cache_tools_text_encoders(qs, text_cache, tmp_path):
    cache_dir, _ = text_cache
    tr, metrics = train(tmp_path, "online", overrides(qs, tmp_path / "no_cache", "data.text_dropout=0.5", "jit=false",
                                                      *STEPS))
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) for m in metrics)
    assert tr.data.encoders.vae is not None and tr.data.encoders.text_encoders is not None
    # online text equals the cached text, dropped captions equal text/empty.npz
    with np.load(text_folder(cache_dir) / "empty.npz") as z:
        empty = {"text_emb": z["text_emb"], "text_mask": z["mask"], "text_pooled": z["text_pooled"]}
    seen = set()
    for step in range(4):
        batch = tr.data.batches.build(step).micro[0].batch
        captions = list(batch["caption"])
        encoded = tr.data.encoders(batch)
        assert encoded["latent"].shape == (2, 16, 2, 4, 4)
        for row, drop in enumerate(batch["text_drop"]):
            if drop:
                assert captions[row] == "" and not batch["is_image"][row]
                want = empty
            else:
                r = next(r for r in rows(qs) if r["caption"] == captions[row])
                with np.load(text_folder(cache_dir) / (r["stem"] + ".npz")) as z:
                    want = {"text_emb": z["text_emb"], "text_mask": z["mask"], "text_pooled": z["text_pooled"]}
            np.testing.assert_allclose(encoded["text_emb"][row], want["text_emb"], atol=1e-5)
            np.testing.assert_array_equal(encoded["text_mask"][row], want["text_mask"])
            np.testing.assert_allclose(encoded["text_pooled"][row], want["text_pooled"], atol=1e-5)
            seen.add(bool(drop))
    assert seen == {True, False}
