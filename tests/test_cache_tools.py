"""vgen-cache (text / vae), the cache manifests and the readers that train from the caches.

A small quickstart set (8 clips, 1 image, and the tool's tokenizer.json) is cached with the tiny
encoders of opensora_stdit2_tiny (seeded weights, no files needed); the cached arrays are compared
with the encoders run directly on the same captions and frames, and the readers with the formulas."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose
from vgen.cli import cache as cache_cli
from vgen.data import cache_build
from vgen.data.buckets import BucketSampler, Buckets
from vgen.data.cached_video import (CachedVideoDataset, VideoDataset, assignable_resolutions, build_video_dataset,
                                    encodable_frames)
from vgen.data.errors import DataError
from vgen.data.manifest import (MANIFEST, check_latent_manifest, check_text_manifest, latent_folder, read_manifest,
                                text_folder)
from vgen.models.family import LatentSpec, TextSpec

_spec = importlib.util.spec_from_file_location("make_quickstart_data", REPO / "tools" / "make_quickstart_data.py")
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

STRIDE = 8  # clips of 24-48 frames give 3-6 cached frames: few VAE calls
RES = (32, 32)
# two small resolutions; 32px keeps videos with probability 0.5 only, so 16px is reachable too
BUCKET_TABLE = '"32px": {1: [1.0, 1], 2: [0.5, 2], 4: [0.5, 1]}\n"16px": {2: [1.0, 2]}\n'
# opensora_stdit2_tiny's specs (test_specs_are_the_tiny_familys checks them against the family)
TEXT_SPEC = TextSpec("t5-tiny", 32, 16, 0.1)
LATENT_SPEC = LatentSpec("sd-vae-tiny", 4, (4, 16, 16), (1, 8, 8), 0.18215, 0.0)


def test_specs_are_the_tiny_familys():
    from vgen.models.opensora.family import specs

    assert specs(compose(["model=opensora_stdit2_tiny"]).model) == (TEXT_SPEC, LATENT_SPEC)


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_tools")
    csv_path = Path(quickstart.build(str(root / "data"), num=8, seed=0, num_images=1))
    tokenizer = csv_path.parent / "tokenizer.json"  # the tool's word-level tokenizer (<pad> 0, </s> 1, <unk> 2)
    assert tokenizer.is_file()
    (root / "buckets.yaml").write_text(BUCKET_TABLE)
    return {"root": root, "csv": csv_path, "tokenizer": tokenizer, "buckets": root / "buckets.yaml"}


def overrides(qs, cache_dir, *more):
    return ["model=opensora_stdit2_tiny", "data=video", f"data.csv_path={qs['csv']}", f"data.cache_dir={cache_dir}",
            f"model.text_encoder.tokenizer={qs['tokenizer']}", f"data.frame_stride={STRIDE}",
            f"data.resolution=[{RES[0]},{RES[1]}]", "progress=false", *more]


def rows(qs):
    import pandas as pd

    df = pd.read_csv(qs["csv"])
    return [dict(r, stem=os.path.splitext(r["video"])[0], line=i + 2) for i, r in enumerate(df.to_dict("records"))]


@pytest.fixture(scope="module")
def text_cache(qs):
    cache_dir = qs["root"] / "cache"
    summary = cache_cli.run("text", overrides(qs, cache_dir))
    return cache_dir, summary


@pytest.fixture(scope="module")
def vae_cache(qs, text_cache):
    cache_dir = qs["root"] / "cache"  # next to the text cache, as training reads them
    summary = cache_cli.run("vae", overrides(qs, cache_dir))
    return cache_dir, summary


@pytest.fixture(scope="module")
def bucket_cache(qs, text_cache):
    cache_dir = qs["root"] / "cache_buckets"
    shutil.copytree(text_folder(text_cache[0]), text_folder(cache_dir))
    summary = cache_cli.run("vae", overrides(qs, cache_dir, f"data.buckets={qs['buckets']}"))
    return cache_dir, summary


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*.npz")}


# ---- text --------------------------------------------------------------------------------------------

def test_text_cache_matches_the_encoder(qs, text_cache):
    from vgen.models.encoders import build_text_encoder
    import mindspore as ms

    cache_dir, summary = text_cache
    assert (summary.rows, summary.encoded, summary.skipped, summary.bad) == (9, 9, 0, [])
    m = read_manifest(text_folder(cache_dir))
    assert {k: m[k] for k in ("kind", "encoder", "weights", "dim", "length", "dtype")} == {
        "kind": "text", "encoder": "t5-tiny", "weights": "random-init:t5-tiny:seed0", "dim": 32, "length": 16,
        "dtype": "fp32"}
    assert m["vgen_version"] and m["created"]
    cfg = compose(overrides(qs, cache_dir))
    net, tokenizer = build_text_encoder(cfg.model.text_encoder)
    samples = rows(qs)
    captions = [r["caption"] for r in samples] + [""]
    tokens = tokenizer(captions)
    direct = net(ms.Tensor(tokens["input_ids"]), ms.Tensor(tokens["attention_mask"])).asnumpy()
    for i, r in enumerate(samples):
        with np.load(text_folder(cache_dir) / (r["stem"] + ".npz"), allow_pickle=False) as z:
            assert z["text_emb"].shape == (16, 32) and z["text_emb"].dtype == np.float32
            np.testing.assert_allclose(z["text_emb"], direct[i], atol=1e-5)
            np.testing.assert_array_equal(z["mask"], tokens["attention_mask"][i])
    with np.load(text_folder(cache_dir) / "empty.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["text_emb"], direct[-1], atol=1e-5)
        assert z["mask"].sum() == 1  # only </s>


def test_second_text_run_skips_everything(qs, text_cache):
    cache_dir, _ = text_cache
    before = mtimes(text_folder(cache_dir))
    summary = cache_cli.run("text", overrides(qs, cache_dir))
    assert (summary.encoded, summary.files, summary.skipped) == (0, 0, 9)
    assert mtimes(text_folder(cache_dir)) == before


# ---- latents -----------------------------------------------------------------------------------------

def direct_latents(cfg, path, size):
    """Every frame at STRIDE, resized and cropped as read_clip does, through the VAE: the reference."""
    import mindspore as ms

    from vgen.data.video import read_clip, video_info
    from vgen.models.encoders import build_vae

    frames = video_info(path)[0]
    clip = read_clip(path, (frames - 1) // STRIDE + 1, stride=STRIDE, size=size)
    vae = build_vae(cfg.model.vae)
    mean, std = vae.encode_video(ms.Tensor(clip.transpose(1, 0, 2, 3)[None].copy()), 8)
    return mean.asnumpy()[0].transpose(1, 0, 2, 3), std.asnumpy()[0].transpose(1, 0, 2, 3)


def test_vae_cache_matches_the_vae(qs, vae_cache):
    cache_dir, summary = vae_cache
    assert (summary.rows, summary.encoded, summary.skipped, summary.bad) == (9, 9, 0, [])
    folder = latent_folder(cache_dir, *RES)
    m = read_manifest(folder)
    assert {k: m[k] for k in ("kind", "vae", "weights", "channels", "compression", "scale", "shift", "resolution",
                              "frame_stride", "dtype")} == {
        "kind": "latent", "vae": "sd-vae-tiny", "weights": "random-init:sd-vae-tiny:seed0", "channels": 4,
        "compression": [1, 8, 8], "scale": 0.18215, "shift": 0.0, "resolution": [32, 32], "frame_stride": STRIDE,
        "dtype": "fp32"}
    samples = rows(qs)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.npz")) == sorted(
        r["stem"] + ".npz" for r in samples)
    cfg = compose(overrides(qs, cache_dir))
    for r in (samples[0], samples[2], samples[-1]):  # an 80x48 and a 48x80 clip, and the image
        mean, std = direct_latents(cfg, str(qs["csv"].parent / r["video"]), RES)
        with np.load(folder / (r["stem"] + ".npz"), allow_pickle=False) as z:
            expected_frames = 1 if r["num_frames"] == 1 else (r["num_frames"] - 1) // STRIDE + 1
            assert z["latent_mean"].shape == (expected_frames, 4, 4, 4)
            np.testing.assert_allclose(z["latent_mean"], mean, atol=1e-5)
            np.testing.assert_allclose(z["latent_std"], std, atol=1e-5)
            assert list(z["ori_size"]) == [r["height"], r["width"]]
            assert float(z["fps"]) == (120.0 if r["num_frames"] == 1 else float(r["fps"]))


def expected_bucket_sizes(table, sample):
    """Each resolution of the table on its own: where Buckets would put the sample (keep draws won)."""
    sizes = set()
    for res, entries in table.items():
        bucket = Buckets({res: entries}, frame_interval=STRIDE).assign(sample["num_frames"], sample["height"],
                                                                        sample["width"])
        if bucket is not None:
            sizes.add(Buckets({res: entries}).shape(bucket)[1:])
    return sizes


def test_vae_cache_with_buckets_covers_every_assignable_resolution(qs, bucket_cache, capsys):
    from vgen.data.bucket_tables import load_bucket_table

    cache_dir, summary = bucket_cache
    assert (summary.rows, summary.encoded, summary.no_bucket, summary.bad) == (9, 9, 0, [])
    table = load_bucket_table(str(qs["buckets"]))
    expected = set()
    for r in rows(qs):
        for h, w in expected_bucket_sizes(table, r):
            expected.add(f"latent_{h}x{w}/{r['stem']}.npz")
    assert len({e.split("/")[0] for e in expected}) >= 3  # several aspect ratios and both resolutions
    assert any(e.startswith(("latent_16x", "latent_32x16")) for e in expected)
    found = {p.relative_to(cache_dir).as_posix() for p in cache_dir.glob("latent_*/**/*.npz")}
    assert found == expected
    assert summary.files == len(expected)
    for folder in cache_dir.glob("latent_*"):
        h, w = (int(v) for v in folder.name[len("latent_"):].split("x"))
        assert read_manifest(folder)["resolution"] == [h, w]
    # a non-square bucket size: the same frames, resized and cropped to it, through the VAE
    r = rows(qs)[2]  # 48x80, aspect 0.6: 32px's 0.62 entry
    assert f"latent_32x48/{r['stem']}.npz" in found
    mean, std = direct_latents(compose(overrides(qs, cache_dir)), str(qs["csv"].parent / r["video"]), (32, 48))
    with np.load(cache_dir / "latent_32x48" / (r["stem"] + ".npz"), allow_pickle=False) as z:
        assert z["latent_mean"].shape == (6, 4, 4, 6)
        np.testing.assert_allclose(z["latent_mean"], mean, atol=1e-5)
        np.testing.assert_allclose(z["latent_std"], std, atol=1e-5)
    hist = cache_build.bucket_histogram(compose(overrides(qs, cache_dir, f"data.buckets={qs['buckets']}")),
                                      summary.meta)
    assert "32px/" in hist and "samples" in hist


def test_assignable_resolutions_stop_after_a_certain_keep():
    # 64x64, 40 frames at stride 8: fits 32px's 4-frame entry; at keep_prob 1 16px is never reached
    sure = Buckets({"32px": {4: [1.0, 1]}, "16px": {2: [1.0, 1]}}, frame_interval=STRIDE)
    maybe = Buckets({"32px": {4: [0.5, 1]}, "16px": {2: [1.0, 1]}}, frame_interval=STRIDE)
    never = Buckets({"32px": {4: [0.0, 1]}, "16px": {2: [1.0, 1]}}, frame_interval=STRIDE)
    assert assignable_resolutions(sure, [40], [64], [64]) == [[(32, 32)]]
    assert assignable_resolutions(maybe, [40], [64], [64]) == [[(32, 32), (16, 16)]]
    assert assignable_resolutions(never, [40], [64], [64]) == [[(16, 16)]]
    assert assignable_resolutions(sure, [20], [64], [64]) == [[(16, 16)]]  # 2 frames fit at stride 8, 4 do not
    assert assignable_resolutions(sure, [10], [64], [64]) == [[]]
    assert encodable_frames(16, 1) == 16 and encodable_frames(20, 4) == 17 and encodable_frames(1, 4) == 1


def test_second_vae_run_skips_everything(qs, bucket_cache):
    cache_dir, first = bucket_cache
    before = mtimes(cache_dir)
    summary = cache_cli.run("vae", overrides(qs, cache_dir, f"data.buckets={qs['buckets']}"))
    assert (summary.encoded, summary.files, summary.skipped) == (0, 0, 9)
    assert summary.folders == first.folders
    assert mtimes(cache_dir) == before


# ---- manifests -----------------------------------------------------------------------------------------

def test_manifest_mismatches_name_the_field(qs, vae_cache):
    cache_dir, _ = vae_cache
    text, latent = text_folder(cache_dir), latent_folder(cache_dir, *RES)
    check_text_manifest(text, TEXT_SPEC)
    check_latent_manifest(latent, LATENT_SPEC, RES, STRIDE)
    cases = [
        (lambda: check_text_manifest(text, TextSpec("t5-v1_1-xxl", 32, 16, 0.1)),
         ["encoder: cached 't5-tiny', expected 't5-v1_1-xxl'", "vgen-cache text"]),
        (lambda: check_text_manifest(text, TEXT_SPEC, weights="sha256:0123"),
         ["weights: cached 'random-init:t5-tiny:seed0', expected 'sha256:0123'"]),
        (lambda: check_text_manifest(text, TextSpec("t5-tiny", 32, 120, 0.1)), ["length: cached 16, expected 120"]),
        (lambda: check_latent_manifest(latent, LatentSpec("sd-vae-ft-ema", 4, (4, 16, 16), (1, 8, 8), 0.18215), RES,
                                       STRIDE, model="opensora_stdit2"),
         ["vae: cached 'sd-vae-tiny', expected 'sd-vae-ft-ema'", "vgen-cache vae model=opensora_stdit2"]),
        (lambda: check_latent_manifest(latent, LATENT_SPEC, RES, STRIDE, weights="sha256:0123"), ["weights: cached"]),
        (lambda: check_latent_manifest(latent, LATENT_SPEC, (48, 48), STRIDE),
         ["resolution: cached [32, 32], expected [48, 48]"]),
        (lambda: check_latent_manifest(latent, LATENT_SPEC, RES, 3), ["frame_stride: cached 8, expected 3"]),
        (lambda: check_latent_manifest(latent, LATENT_SPEC, RES, None, target_fps=8.0),
         ["frame_stride: cached 8, expected None", "target_fps: cached None, expected 8.0"]),
        (lambda: check_latent_manifest(cache_dir / "latent_48x48", LATENT_SPEC, (48, 48), STRIDE),
         ["latent_48x48: the folder does not exist", "vgen-cache vae"]),
    ]
    for call, parts in cases:
        with pytest.raises(DataError) as e:
            call()
        for part in parts:
            assert part in str(e.value), (part, str(e.value))
        assert str(latent.parent) in str(e.value)


def test_missing_manifest_fails(qs, vae_cache, tmp_path):
    cache_dir, _ = vae_cache
    shutil.copytree(text_folder(cache_dir), tmp_path / "text")
    (tmp_path / "text" / MANIFEST).unlink()
    with pytest.raises(DataError, match="has no manifest.json"):
        check_text_manifest(tmp_path / "text", TEXT_SPEC)
    cfg = compose(overrides(qs, tmp_path, "data.text=cache"))  # and the reader checks it at construction
    with pytest.raises(DataError, match="no manifest.json"):
        build_video_dataset(cfg.data, TEXT_SPEC, LATENT_SPEC)
    # the tool refuses to add to (or resume in) a folder of foreign files
    with pytest.raises(DataError, match="holds cache files but no manifest.json"):
        cache_cli.run("text", overrides(qs, tmp_path))


def test_tool_refuses_to_resume_with_other_settings(qs, vae_cache, tmp_path):
    from safetensors.numpy import save_file

    from vgen.models.encoders import text_encoder_spec
    from vgen.models.layers.init import declare_only, materialize
    from vgen.models.weights import net_arrays

    cache_dir, _ = vae_cache
    with pytest.raises(DataError, match=r"frame_stride: cached 8, expected 4.*delete it"):
        cache_cli.run("vae", overrides(qs, cache_dir, "data.frame_stride=4"))
    with pytest.raises(DataError, match="dtype: cached 'fp32', expected 'fp16'"):
        cache_cli.run("text", overrides(qs, cache_dir), {"dtype": "fp16"})
    with declare_only():  # the same tiny T5, as a weights file: another weights identity
        net = text_encoder_spec("t5-tiny").build()
    save_file(net_arrays(materialize(net, 0)), str(tmp_path / "t5_tiny.safetensors"))
    with pytest.raises(DataError, match=r"weights: cached 'random-init:t5-tiny:seed0', expected 'sha256:"):
        cache_cli.run("text", overrides(qs, cache_dir, f"model.text_encoder.path={tmp_path / 't5_tiny.safetensors'}"))


# ---- readers ---------------------------------------------------------------------------------------------

def test_cached_dataset_without_buckets(qs, vae_cache):
    cache_dir, _ = vae_cache
    cfg = compose(overrides(qs, cache_dir, "data.latents=cache", "data.text=cache", "data.num_frames=3"))
    ds = build_video_dataset(cfg.data, TEXT_SPEC, LATENT_SPEC)
    assert isinstance(ds, CachedVideoDataset) and len(ds) == 9
    samples = rows(qs)
    for i in (0, 8):  # a clip and the image (one cached frame stands for a still clip)
        s = ds.get(i, np.random.default_rng(7))
        assert s["latent"].shape == (4, 3, 4, 4) and s["latent"].dtype == np.float32
        assert s["text_emb"].shape == (16, 32) and s["text_mask"].shape == (16,)
        assert (s["height"], s["width"], s["num_frames"]) == (32, 32, 3)
        # the formula, replayed: window start, then noise, from the same generator
        with np.load(latent_folder(cache_dir, *RES) / (samples[i]["stem"] + ".npz")) as z:
            mean, std = z["latent_mean"], z["latent_std"]
        rng = np.random.default_rng(7)
        idx = np.zeros(3, int) if len(mean) == 1 else int(rng.integers(0, len(mean) - 3 + 1)) + np.arange(3)
        noise = rng.standard_normal((3, 4, 4, 4), dtype=np.float32)
        np.testing.assert_allclose(s["latent"], ((mean[idx] + std[idx] * noise) * 0.18215).transpose(1, 0, 2, 3),
                                   rtol=1e-6, atol=1e-7)
        with np.load(text_folder(cache_dir) / (samples[i]["stem"] + ".npz")) as z:
            np.testing.assert_array_equal(s["text_emb"], z["text_emb"])
    a, b = ds.get(3, np.random.default_rng(1)), ds.get(3, np.random.default_rng(1))
    np.testing.assert_array_equal(a["latent"], b["latent"])
    assert not np.allclose(a["latent"], ds.get(3, np.random.default_rng(2))["latent"])
    assert ds.describe(3) == f"{qs['csv']} line 5 (videos/clip_00003)"
    assert ds.empty_text()["text_mask"].sum() == 1


def test_cached_dataset_follows_the_bucket_sampler(qs, bucket_cache):
    cache_dir, _ = bucket_cache
    cfg = compose(overrides(qs, cache_dir, f"data.buckets={qs['buckets']}", "data.latents=cache", "data.text=cache"))
    ds = build_video_dataset(cfg.data, TEXT_SPEC, LATENT_SPEC)
    assert sorted(ds.latent_manifests) == sorted(
        tuple(int(v) for v in f.name[len("latent_"):].split("x")) for f in cache_dir.glob("latent_*"))
    sampler = BucketSampler(ds.buckets, ds.frames, ds.heights, ds.widths, dp=1, seed=3,
                            frame_interval=ds.frame_intervals)
    seen = set()
    for step in range(len(sampler.plan(0))):
        frames, h, w = sampler.shape_of(step)
        for pos, index in enumerate(sampler.indices(step, 0, 0)):
            s = ds.get(index, np.random.default_rng([3, step, pos]), (frames, h, w))
            assert s["latent"].shape == (4, frames, h // 8, w // 8)  # a per-frame VAE: one latent frame each
            assert (s["num_frames"], s["height"], s["width"]) == (frames, h, w)
            again = ds.get(index, np.random.default_rng([3, step, pos]), (frames, h, w))
            np.testing.assert_array_equal(s["latent"], again["latent"])
            seen.add((frames, h, w))
    assert len(seen) >= 2


def test_text_cache_with_online_latents_and_fully_online(qs, text_cache):
    cache_dir, _ = text_cache
    cfg = compose(overrides(qs, cache_dir, "data.text=cache", "data.num_frames=2"))
    ds = build_video_dataset(cfg.data, TEXT_SPEC, LATENT_SPEC)
    s = ds.get(1, np.random.default_rng(0))
    assert s["video"].shape == (3, 2, 32, 32) and "latent" not in s and s["text_emb"].shape == (16, 32)
    online = build_video_dataset(compose(overrides(qs, cache_dir, "data.num_frames=2")).data)
    assert type(online) is VideoDataset
    s = online.get(1, np.random.default_rng(0), (2, 16, 16))
    assert s["video"].shape == (3, 2, 16, 16) and -1.0 <= s["video"].min() and s["video"].max() <= 1.0
    assert s["caption"] == rows(qs)[1]["caption"] and s["fps"] == float(rows(qs)[1]["fps"])


def test_missing_or_damaged_sample_file_names_file_and_line(qs, vae_cache, tmp_path):
    cache_dir, _ = vae_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy, ignore=shutil.ignore_patterns(".jobs"))
    folder = latent_folder(copy, *RES)
    (folder / "videos" / "clip_00004.npz").unlink()
    (folder / "videos" / "clip_00005.npz").write_bytes(b"garbage")
    ds = build_video_dataset(compose(overrides(qs, copy, "data.latents=cache", "data.num_frames=2")).data,
                             TEXT_SPEC, LATENT_SPEC)
    with pytest.raises(DataError, match=r"line 6 \(videos/clip_00004\).*clip_00004.npz: file not found"):
        ds.get(4, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"line 7 .*clip_00005.npz: unreadable cache file"):
        ds.get(5, np.random.default_rng(0))


# ---- bad rows ------------------------------------------------------------------------------------------------

def extra_csv(qs, extra_rows, name) -> Path:
    """The quickstart CSV plus rows, next to it (same root, so the cache names stay the same)."""
    path = qs["csv"].parent / name
    path.write_text(qs["csv"].read_text().rstrip("\n") + "\n" + "\n".join(extra_rows) + "\n")
    return path


@pytest.fixture(scope="module")
def bad_csvs(qs):
    (qs["csv"].parent / "videos" / "garbage.mp4").write_bytes(b"not a video" * 64)
    garbage_row = "videos/garbage.mp4,a broken clip,24,64,64,24"  # metadata given: found bad only when decoded
    return {"garbage": extra_csv(qs, [garbage_row], "garbage.csv"),
            "both": extra_csv(qs, [garbage_row, "videos/missing.mp4,gone,,,,"], "both.csv")}


def test_bad_rows_fail_with_their_line_or_are_skipped(qs, vae_cache, bad_csvs):
    cache_dir, _ = vae_cache
    with pytest.raises(DataError, match=r"garbage.csv line 11: .*garbage.mp4: unreadable video"):
        cache_cli.run("vae", overrides(qs, cache_dir, f"data.csv_path={bad_csvs['garbage']}"))
    with pytest.raises(DataError, match=r"line 12: videos/missing.mp4: file not found"):
        cache_cli.run("vae", overrides(qs, cache_dir, f"data.csv_path={bad_csvs['both']}"))
    summary = cache_cli.run("vae", overrides(qs, cache_dir, f"data.csv_path={bad_csvs['both']}", "data.skip_bad=true"))
    assert (summary.rows, summary.encoded, summary.skipped) == (10, 0, 9)
    assert [line for line, _ in summary.bad] == [11, 12]


def test_cli_exit_code_and_message(qs, vae_cache, bad_csvs):
    cache_dir, _ = vae_cache
    cmd = [sys.executable, "-m", "vgen.cli.cache"]
    r = subprocess.run([*cmd, "vae", *overrides(qs, cache_dir, f"data.csv_path={bad_csvs['garbage']}")],
                       capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert r.returncode == 2, r.stderr[-3000:]
    assert "line 11" in r.stderr and "data.skip_bad=true" in r.stderr
    r = subprocess.run([*cmd, "latents"], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert r.returncode == 2 and "one of ['text', 'vae']" in r.stderr


# ---- workers ---------------------------------------------------------------------------------------------------

def test_rows_are_split_by_rank():
    shares = [list(cache_build.rank_rows(11, r, 3)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(11))
    assert all(i % 3 == r for r, share in enumerate(shares) for i in share)


@pytest.mark.slow
@pytest.mark.dist
def test_two_workers_write_the_same_text_cache(qs, text_cache):
    cache_dir = qs["root"] / "cache_2workers"
    r = subprocess.run([sys.executable, "-m", "vgen.cli.cache", "text",
                        *overrides(qs, cache_dir, "parallel.workers=2")],
                       capture_output=True, text=True, timeout=300, cwd=str(REPO))
    logs = "".join(p.read_text() for p in (cache_dir / ".jobs" / "text" / "logs").glob("worker_*.log"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs[-4000:]
    assert "9 rows: encoded 9 (9 files written)" in r.stdout + r.stderr + logs
    parts = [json.loads((cache_dir / ".jobs" / "text" / f"summary_rank{k}.json").read_text()) for k in (0, 1)]
    assert [p["rows"] for p in parts] == [5, 4]
    ref = text_folder(text_cache[0])
    assert sorted(p.relative_to(ref) for p in ref.rglob("*.npz")) == sorted(
        p.relative_to(text_folder(cache_dir)) for p in text_folder(cache_dir).rglob("*.npz"))
    for p in ref.rglob("*.npz"):
        with np.load(p) as a, np.load(text_folder(cache_dir) / p.relative_to(ref)) as b:
            np.testing.assert_allclose(a["text_emb"], b["text_emb"], atol=1e-6)
    assert read_manifest(text_folder(cache_dir))["weights"] == read_manifest(ref)["weights"]
