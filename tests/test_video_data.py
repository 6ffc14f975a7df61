"""Video data layer: decoding, records, Open-Sora 1.1 buckets, the bucket sampler, the quickstart tool."""
import csv
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from vgen.data import video
from vgen.data.buckets import (ASPECT_RATIOS, KEPT_OUT, NO_BUCKET, BucketSampler, Buckets, format_histogram,
                               resolution_table)
from vgen.data.errors import DataError
from vgen.data.records import format_problems
from vgen.data.video import frame_indices, read_clip, resize_crop_geometry, video_info
from vgen.data.video_records import fill_metadata, metadata_arrays, read_records

TOOL = REPO / "tools" / "make_quickstart_data.py"
_spec = importlib.util.spec_from_file_location("make_quickstart_data", TOOL)
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

LEVEL = 8  # frame i of an index clip is flat grey-ish with red = LEVEL * i


def index_frames(t, h, w):
    """Flat frames whose colour encodes the frame index (robust to H.264 on flat areas)."""
    f = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        f[i] = (LEVEL * i, 255 - LEVEL * i, 128)
    return f


def decoded_index(clip):
    """Frame indices back from a decoded [T, 3, h, w] clip in [-1, 1]."""
    red = (clip[:, 0].mean(axis=(1, 2)) + 1) * 127.5
    return np.rint(red / LEVEL).astype(int)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    paths = {}
    paths["index"] = str(d / "index.mp4")
    quickstart.write_video(paths["index"], index_frames(30, 48, 64), fps=24)
    paths["narrow"] = str(d / "narrow.mp4")  # 48 px wide: decord 0.6 needs its fallback path here
    quickstart.write_video(paths["narrow"], index_frames(12, 80, 48), fps=24)
    bands = np.zeros((6, 48, 96, 3), np.uint8)  # red | green | blue thirds
    bands[:, :, :32] = (255, 0, 0)
    bands[:, :, 32:64] = (0, 255, 0)
    bands[:, :, 64:] = (0, 0, 255)
    paths["bands"] = str(d / "bands.mp4")
    quickstart.write_video(paths["bands"], bands, fps=24, crf=0)
    image = np.zeros((40, 60, 3), np.uint8)
    image[:] = (200, 30, 90)
    paths["image"] = str(d / "still.png")
    quickstart.write_png(paths["image"], image)
    paths["garbage"] = str(d / "garbage.mp4")
    with open(paths["garbage"], "wb") as f:
        f.write(b"not a video" * 50)
    return paths


# ---- decoding ---------------------------------------------------------------------------------

def test_video_info_and_full_decode(clips):
    assert video_info(clips["index"]) == (30, 48, 64, 24.0)
    clip = read_clip(clips["index"], 30)
    assert clip.shape == (30, 3, 48, 64) and clip.dtype == np.float32
    assert -1.0 <= clip.min() and clip.max() <= 1.0
    assert list(decoded_index(clip)) == list(range(30))


def test_stride_sampling_picks_the_right_frames(clips):
    clip = read_clip(clips["index"], 8, stride=3, start=2)
    assert list(decoded_index(clip)) == [2 + 3 * k for k in range(8)]
    # target fps 8 on a 24 fps video is stride 3
    assert np.array_equal(read_clip(clips["index"], 8, target_fps=8, start=2), clip)
    # a random start: consecutive frames, inside the video, reproducible from the generator's seed
    got = decoded_index(read_clip(clips["index"], 5, stride=4, start=np.random.default_rng(3)))
    assert np.all(np.diff(got) == 4) and 0 <= got[0] <= 30 - 17
    again = decoded_index(read_clip(clips["index"], 5, stride=4, start=np.random.default_rng(3)))
    assert list(got) == list(again)
    with pytest.raises(ValueError, match="either stride or target_fps"):
        read_clip(clips["index"], 4, stride=2, target_fps=12)


def test_frame_indices_cover_every_start():
    starts = {int(frame_indices(10, 3, 2, np.random.default_rng(s))[0]) for s in range(200)}
    assert starts == set(range(10 - 5 + 1))


def test_clip_errors_name_the_file_and_problem(clips, tmp_path):
    with pytest.raises(DataError, match=r"index\.mp4: 30 frames, too short for 11 frames at stride 3"):
        read_clip(clips["index"], 11, stride=3)
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(DataError, match=r"nope\.mp4: file not found"):
        read_clip(missing, 4)
    with pytest.raises(DataError, match=r"garbage\.mp4: unreadable video"):
        read_clip(clips["garbage"], 4)
    with pytest.raises(DataError, match=r"garbage\.mp4: unreadable video"):
        video_info(clips["garbage"])


def test_resize_crop_geometry_hand_computed():
    # landscape 48x80 into 64x64: height is the tight side, 80 * 64/48 = 106.67 -> 107, crop (107-64)//2
    assert resize_crop_geometry(48, 80, 64, 64) == (64, 107, 0, 21)
    assert resize_crop_geometry(80, 48, 64, 64) == (107, 64, 21, 0)
    # 720p into 240p's 0.56 bucket (240, 426): 1280/3 = 426.67 -> 427
    assert resize_crop_geometry(720, 1280, 240, 426) == (240, 427, 0, 0)
    assert resize_crop_geometry(100, 100, 50, 50) == (50, 50, 0, 0)


def test_center_crop_keeps_the_middle(clips):
    native = read_clip(clips["bands"], 2)
    # 48x96 into 48x48: no resize, columns 24..72 of the original
    same = read_clip(clips["bands"], 2, size=(48, 48))
    assert np.array_equal(same, native[:, :, :, 24:72])
    # into 32x32: scale 2/3 then crop; output column j is original column 24 + 1.5 j
    small = read_clip(clips["bands"], 2, size=(32, 32))
    assert small.shape == (2, 3, 32, 32)
    rgb = (small.mean(axis=(0, 2)) + 1) * 127.5  # [3, 32] per column
    assert np.all(rgb[0, :4] > 200) and np.all(rgb[1, 8:20] > 200) and np.all(rgb[2, 29:] > 200)
    assert np.all(rgb[0, 8:20] < 40) and np.all(rgb[2, 8:20] < 40)


def test_known_metadata_opens_the_clip_once(clips, monkeypatch):
    """With the record's (height, width, fps) the header is not read: the file is opened once, at
    the size it is decoded to, and the frames are the same."""
    import vgen.data.video as video

    want = read_clip(clips["index"], 5, stride=2, start=3, size=(32, 32))
    monkeypatch.setattr(video, "video_info", lambda path: (_ for _ in ()).throw(AssertionError("probed")))
    got = read_clip(clips["index"], 5, stride=2, start=3, size=(32, 32), known=(48, 64, 24.0))
    np.testing.assert_array_equal(got, want)


def test_narrow_width_fallback_decodes_the_frames(clips):
    clip = read_clip(clips["narrow"], 4, stride=3, start=1)
    assert clip.shape == (4, 3, 80, 48)
    assert list(decoded_index(clip)) == [1, 4, 7, 10]


def test_images_are_one_frame_clips(clips):
    assert video_info(clips["image"]) == (1, 40, 60, video.IMAGE_FPS)
    img = read_clip(clips["image"], 1, size=(32, 32))
    assert img.shape == (1, 3, 32, 32)
    expected = np.array([200, 30, 90]) / 127.5 - 1
    assert np.allclose(img.mean(axis=(0, 2, 3)), expected, atol=2 / 255)
    assert read_clip(clips["image"], 3).shape == (3, 3, 40, 60)  # a still clip when more frames are asked


# ---- records ----------------------------------------------------------------------------------

def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_bad_rows_are_reported_with_csv_lines(clips, tmp_path):
    os.symlink(clips["index"], tmp_path / "good.mp4")
    os.symlink(clips["garbage"], tmp_path / "broken.mp4")
    csv_path = tmp_path / "list.csv"
    _write_csv(csv_path, ["video", "caption", "num_frames", "height", "width", "fps"], [
        ["good.mp4", "a clip", "", "", "", ""],  # line 2: metadata probed
        ["absent.mp4", "gone", "", "", "", ""],  # line 3: missing file
        ["good.mp4", "  ", "", "", "", ""],  # line 4: empty caption
        ["broken.mp4", "unreadable", "", "", "", ""],  # line 5: found by the probe
        ["good.mp4", "with metadata", "30", "48", "64", "24"],  # line 6
        ["good.mp4", "bad metadata", "thirty", "48", "64", "24"],  # line 7
    ])
    records, problems = read_records(str(csv_path))  # paths relative to the CSV's folder
    assert [r.line for r in records] == [2, 5, 6]
    assert [ln for ln, _ in problems] == [3, 4, 7]
    assert "absent.mp4: file not found" in problems[0][1] and "empty caption" in problems[1][1]
    assert "num_frames='thirty'" in problems[2][1]
    assert records[0].path == str(tmp_path / "good.mp4") and records[0].caption == "a clip"
    assert (records[2].num_frames, records[2].height, records[2].width, records[2].fps) == (30, 48, 64, 24.0)

    cache = tmp_path / "probe.json"
    filled, probe_problems = fill_metadata(records, str(cache))
    assert [r.line for r in filled] == [2, 6] and [ln for ln, _ in probe_problems] == [5]
    assert "broken.mp4: unreadable video" in probe_problems[0][1]
    assert (filled[0].num_frames, filled[0].height, filled[0].width, filled[0].fps) == (30, 48, 64, 24.0)
    report = format_problems(str(csv_path), problems + probe_problems)
    assert "4 bad row(s)" in report and "line 3:" in report and "line 5:" in report
    frames, heights, widths, fps = metadata_arrays(filled)
    assert list(frames) == [30, 30] and list(widths) == [64, 64]


def test_probes_are_cached(clips, tmp_path, monkeypatch):
    os.symlink(clips["index"], tmp_path / "a.mp4")
    _write_csv(tmp_path / "l.csv", ["video", "caption"], [["a.mp4", "x"]])
    records, _ = read_records(str(tmp_path / "l.csv"))
    cache = str(tmp_path / "probe.json")
    first, _ = fill_metadata(records, cache)

    def no_probe(path):
        raise AssertionError("probed again despite the cache")

    monkeypatch.setattr(video, "video_info", no_probe)
    second, problems = fill_metadata(records, cache)
    assert second == first and not problems


def test_webvid_paths_and_captions(clips, tmp_path):
    (tmp_path / "videos" / "001_050").mkdir(parents=True)
    os.symlink(clips["index"], tmp_path / "videos" / "001_050" / "1066674784.mp4")
    csv_path = tmp_path / "webvid.csv"
    _write_csv(csv_path, ["videoid", "name", "page_dir", "duration", "contentUrl"], [
        ["1066674784", "Aerial view of a beach", "001_050", "PT00H00M21S", "https://example.invalid/a.mp4"],
        ["21179416", "Cat on a sofa", "001_050", "PT00H00M09S", "https://example.invalid/b.mp4"],
        ["5", "", "002_100", "PT00H00M05S", "https://example.invalid/c.mp4"],
    ])
    root = str(tmp_path / "videos")
    records, problems = read_records(str(csv_path), root=root, schema="webvid")
    assert [(r.path, r.caption, r.line) for r in records] == [
        (os.path.join(root, "001_050", "1066674784.mp4"), "Aerial view of a beach", 2)]
    assert [ln for ln, _ in problems] == [3, 4]
    assert "001_050/21179416.mp4: file not found" in problems[0][1] and "empty caption" in problems[1][1]
    unchecked, problems = read_records(str(csv_path), root=root, schema="webvid", check_files=False)
    assert unchecked[1].path == os.path.join(root, "001_050", "21179416.mp4") and [ln for ln, _ in problems] == [4]


# ---- buckets ----------------------------------------------------------------------------------

# Open-Sora 1.1 stage-2 and stage-3 bucket configs (configs/opensora-v1-1/train/stage{2,3}.py)
STAGE2 = {
    "144p": {1: (1.0, 48), 16: (1.0, 17), 32: (1.0, 9), 64: (1.0, 4), 128: (1.0, 1)},
    "256": {1: (0.8, 254), 16: (0.5, 17), 32: (0.5, 9), 64: (0.5, 4), 128: (0.5, 1)},
    "240p": {1: (0.1, 20), 16: (0.9, 17), 32: (0.8, 9), 64: (0.8, 4), 128: (0.8, 2)},
    "512": {1: (0.5, 86), 16: (0.2, 4), 32: (0.2, 2), 64: (0.2, 1), 128: (0.0, None)},
    "480p": {1: (0.4, 54), 16: (0.4, 4), 32: (0.0, None)},
    "720p": {1: (0.1, 20), 16: (0.1, 2), 32: (0.0, None)},
    "1024": {1: (0.3, 20)},
    "1080p": {1: (0.4, 8)},
}
STAGE3 = {
    "144p": {1: (1.0, 200), 16: (1.0, 36), 32: (1.0, 18), 64: (1.0, 9), 128: (1.0, 4)},
    "256": {1: (0.8, 200), 16: (0.5, 22), 32: (0.5, 11), 64: (0.5, 6), 128: (0.8, 4)},
    "240p": {1: (0.8, 200), 16: (0.5, 22), 32: (0.5, 10), 64: (0.5, 6), 128: (0.5, 3)},
    "360p": {1: (0.5, 120), 16: (0.5, 9), 32: (0.5, 4), 64: (0.5, 2), 128: (0.5, 1)},
    "512": {1: (0.5, 120), 16: (0.5, 9), 32: (0.5, 4), 64: (0.5, 2), 128: (0.8, 1)},
    "480p": {1: (0.4, 80), 16: (0.6, 6), 32: (0.6, 3), 64: (0.6, 1), 128: (0.0, None)},
    "720p": {1: (0.4, 40), 16: (0.6, 3), 32: (0.6, 1), 96: (0.0, None)},
    "1024": {1: (0.3, 40)},
}


class Draws:
    """A stand-in generator whose uniforms are all `u`."""

    def __init__(self, u):
        self.u = u

    def random(self, shape):
        return np.full(shape, self.u)


def test_official_tables_spot_values():
    assert list(ASPECT_RATIOS) == ["144p", "256", "240p", "360p", "512", "480p", "720p", "1024", "1080p", "4k"]
    assert resolution_table("720p")[1]["0.56"] == (720, 1280) and resolution_table("1080p")[1]["1.78"] == (1920, 1080)
    assert resolution_table("240p")[0] == 102240 and resolution_table("240p")[1]["0.67"] == (262, 393)
    for name, (pixels, table) in ASPECT_RATIOS.items():
        for key, (h, w) in table.items():  # every entry has its key's ratio and about its resolution's pixels
            assert abs(h / w - float(key)) < 0.03, (name, key)
            assert 0.9 < h * w / pixels < 1.1, (name, key)


def test_assignment_hand_computed_from_the_official_tables():
    b2 = Buckets(STAGE2, frame_interval=3)
    # 720p video, 200 frames: 1080p needs 80% of 2.07M px; 1024 has only images; 720p/480p offer 32
    # frames with keep_prob 0; 512 offers 64 (200 > 64*3) at 0.2 -> kept when draws pass; 720/1280 = 0.5625
    # is closest to 512's "0.57" = 384x672
    assert b2.assign(200, 720, 1280, rng=None) == ("512", 64, "0.57")
    assert b2.shape(("512", 64, "0.57")) == (64, 384, 672) and b2.batch_size(("512", 64, "0.57")) == 1
    # every draw failing: only keep_prob 1.0 entries keep it: 144p's 64 frames, "0.56" = 144x256
    assert b2.assign(200, 720, 1280, rng=Draws(0.99)) == ("144p", 64, "0.56")
    # a 1024x1024 image: 1024's 1-frame entry
    assert b2.assign(1, 1024, 1024, rng=None) == ("1024", 1, "1.0")
    assert b2.assign(1, 1024, 1024, rng=Draws(0.99)) == ("144p", 1, "1.00")
    b3 = Buckets(STAGE3, frame_interval=3)
    # 40 frames at stride 3 fit no frame count (40 > 16*3 is false): no bucket
    assert b3.assign(40, 360, 640, rng=None) is None
    assert Buckets(STAGE3, frame_interval=1).assign(40, 360, 640, rng=None) == ("512", 32, "0.57")
    # 80% of 144p's 36864 px is 29491.2: 144x204 is below, 144x205 above
    only144 = Buckets({"144p": {16: (1.0, 1)}})
    assert only144.assign(20, 144, 204) is None
    assert only144.assign(20, 144, 205) == ("144p", 16, "0.67")  # 144/205 = 0.702: 0.67 beats 0.75
    assert only144.assign(16, 144, 256) is None  # needs more than 16 frames
    assert only144.assign(1, 400, 400) is None  # images take only 1-frame entries
    assert Buckets({"144p": {1: (1.0, 1)}}).assign(2, 400, 400) is None  # and videos never do


def reference_bucket(spec, frames, height, width, interval, draws):
    """The assignment rule written plainly, one sample at a time."""
    order = sorted(spec, key=lambda r: resolution_table(r)[0], reverse=True)
    for r, res in enumerate(order):
        pixels, table = resolution_table(res)
        if height * width < pixels * 0.8:
            continue
        if frames == 1:
            if 1 not in spec[res]:
                continue
            t = 1
        else:
            fitting = [t for t in sorted(spec[res], reverse=True) if t != 1 and frames > t * interval]
            if not fitting:
                continue
            t = fitting[0]
        if draws[r] < spec[res][t][0]:
            return res, t, min(table, key=lambda k: abs(float(k) - height / width))
    return None


def test_vectorised_assignment_matches_the_plain_rule():
    rng = np.random.default_rng(0)
    n = 3000
    frames = np.where(rng.random(n) < 0.3, 1, rng.integers(2, 450, n))
    heights, widths = rng.integers(60, 2200, n), rng.integers(60, 2200, n)
    for spec in (STAGE2, STAGE3):
        b = Buckets(spec, frame_interval=3)
        draws = rng.random((n, len(b.resolutions)))
        codes = b.assign_codes(frames, heights, widths, draws)
        got = [b.ids[c] if c >= 0 else None for c in codes]
        want = [reference_bucket(spec, int(frames[i]), int(heights[i]), int(widths[i]), 3, draws[i]) for i in range(n)]
        assert got == want
        assert set(codes[codes < 0]) <= {NO_BUCKET, KEPT_OUT}


def test_keep_prob_rate():
    b = Buckets({"144p": {16: (0.3, 1)}})
    codes = b.assign_codes(np.full(20000, 20), np.full(20000, 144), np.full(20000, 256),
                           np.random.default_rng(1).random((20000, 1)))
    assert abs((codes >= 0).mean() - 0.3) < 0.015 and set(codes[codes < 0]) == {KEPT_OUT}


def test_bad_specs_fail_clearly():
    with pytest.raises(ValueError, match="unknown resolution '999p'"):
        Buckets({"999p": {16: (1.0, 1)}})
    with pytest.raises(ValueError, match=r"data.buckets.144p.16: keep_prob 0.5 > 0 needs a batch size"):
        Buckets({"144p": {16: (0.5, None)}})


# ---- sampler ----------------------------------------------------------------------------------

def _toy_sampler(dp=2, accum=1, seed=0, n=400):
    """Small videos and images in the "64px" table (ours, for tiny models); 10-frame clips fit no entry."""
    rng = np.random.default_rng(42)
    sizes = np.array([(64, 64), (48, 80), (80, 48)])[rng.integers(0, 3, n)]
    frames = np.array([1, 10, 24, 40])[rng.integers(0, 4, n)]
    spec = {"64px": {1: (1.0, 4), 16: (1.0, 3), 32: (0.7, 2)}}
    return BucketSampler(Buckets(spec), frames, sizes[:, 0], sizes[:, 1], dp=dp, accum=accum, seed=seed)


def _step_indices(s, step):
    """{(rank, micro): data-set indices} of a step."""
    return {(r, m): s.indices(step, r, m) for r in range(s.dp) for m in range(s.accum)}


def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = _toy_sampler(), _toy_sampler()
    steps = range(0, 3 * len(a.plan(0)))
    assert [_step_indices(a, k) for k in steps] == [_step_indices(b, k) for k in steps]
    other = _toy_sampler(seed=1)
    assert [_step_indices(a, k) for k in range(5)] != [_step_indices(other, k) for k in range(5)]
    n0 = len(a.plan(0))
    assert [_step_indices(a, k) for k in range(3)] != [_step_indices(a, n0 + k) for k in range(3)]  # epoch 1
    assert a.epoch_of(n0 - 1) == 0 and a.epoch_of(n0) == 1


def test_epochs_start_where_the_previous_plans_end():
    """schedule.epochs: the step count is the sum of the epochs' plan lengths (they differ: the
    keep-probability draws and the remainders change per epoch)."""
    s = _toy_sampler()
    lengths = [len(s.plan(e)) for e in range(3)]
    assert s.first_step_of(0) == 0 and s.first_step_of(3) == sum(lengths)
    assert s.epoch_of(s.first_step_of(2)) == 2 and s.epoch_of(s.first_step_of(2) - 1) == 1


def test_ranks_share_the_bucket_and_never_a_sample():
    s = _toy_sampler(dp=2, accum=2)
    plan = s.plan(0)
    seen = []
    for step in range(len(plan)):
        groups = _step_indices(s, step)
        code = s.buckets.code_of[s.bucket_of(step)]
        every = [i for idx in groups.values() for i in idx]
        assert all(plan.codes[i] == code for i in every)  # one bucket for all ranks and micro-steps
        assert len(every) == len(set(every)) == s.global_batch_of(step)
        assert all(len(idx) == s.batch_size_of(step) for idx in groups.values())
        assert s.shape_of(step) == s.buckets.shape(s.bucket_of(step))
        seen += every
    assert len(seen) == len(set(seen))  # no sample twice in an epoch
    assert len({s.bucket_of(k) for k in range(len(plan))}) > 1  # the buckets matter here


def test_remainder_dropped_and_counted():
    # 20 identical samples in one bucket, batch 3 x dp 2 = 6: 3 batches, 2 dropped
    s = BucketSampler(Buckets({"144p": {16: (1.0, 3)}}), np.full(20, 30), np.full(20, 144), np.full(20, 256),
                      dp=2, seed=0)
    h = s.histogram(0)
    assert h["batches"] == 3 and h["used"] == 18
    assert h["dropped"] == {"no_bucket": 0, "keep_prob": 0, "remainder": 2}
    assert h["buckets"]["144p/16f/0.56"]["dropped_remainder"] == 2
    dropped = set(range(20)) - {s.dataset_index(k, j) for k in range(3) for j in range(6)}
    assert len(dropped) == 2
    dropped_next = set(range(20)) - {s.dataset_index(k, j) for k in range(3, 6) for j in range(6)}
    assert len(dropped_next) == 2  # (which ones changes with the epoch's shuffle)


def test_histogram_accounts_for_every_sample():
    s = _toy_sampler(dp=2, accum=1)
    h = s.histogram(0)
    d = h["dropped"]
    assert h["used"] + d["no_bucket"] + d["keep_prob"] + d["remainder"] == h["samples"] == 400
    assert d["keep_prob"] > 0 and d["no_bucket"] > 0  # 40-frame clips lose 30% of the draws; 10-frame ones fit nothing
    assert sum(b["batches"] for b in h["buckets"].values()) == h["batches"] == len(s.plan(0))
    text = format_histogram(h)
    assert "by keep_prob draws" in text and "no eligible bucket" in text and "remainder" in text


def test_state_round_trip_resumes_exactly():
    full = _toy_sampler(dp=2, accum=2)
    n0 = len(full.plan(0))
    stop = n0 - 2  # resume just before an epoch boundary
    later = range(stop, stop + n0 + 3)
    want = [_step_indices(full, k) for k in later]
    state = json.loads(json.dumps(full.state_dict(stop)))  # as trainer_state.json keeps it
    assert (state["epoch"], state["batch"]) == (0, n0 - 2)
    resumed = _toy_sampler(dp=2, accum=2)
    resumed.load_state_dict(state)
    assert [_step_indices(resumed, k) for k in later] == want
    with pytest.raises(ValueError, match="precedes the resumed position"):
        resumed.locate(stop - 1)


def test_changed_dp_resumes_at_the_saved_epoch_and_batch(caplog):
    state = _toy_sampler(dp=2).state_dict(3)
    other = _toy_sampler(dp=1)
    with caplog.at_level(logging.WARNING, logger="vgen"):
        other.load_state_dict(state)
    assert "dp changed" in caplog.text
    assert other.locate(3) == (0, 3) and other.locate(4) == (0, 4)


def test_replacements_stay_in_the_bucket():
    s = _toy_sampler()
    plan = s.plan(0)
    for step in range(4):
        code = s.buckets.code_of[s.bucket_of(step)]
        assert all(plan.codes[s.dataset_index(step, 0, shift)] == code for shift in range(1, 6))


def test_no_full_batch_is_a_clear_error():
    s = BucketSampler(Buckets({"144p": {16: (1.0, 8)}}), np.full(5, 30), np.full(5, 144), np.full(5, 256),
                      dp=1, seed=0)
    with pytest.raises(DataError, match="no bucket fills one global batch"):
        s.locate(0)


# ---- quickstart tool --------------------------------------------------------------------------

def _md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_quickstart_tool_writes_a_decodable_set(tmp_path):
    out = tmp_path / "qs"
    r = subprocess.run([sys.executable, str(TOOL), "--out", str(out), "--num", "8", "--seed", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    csv_path = out / quickstart.CSV_NAME
    header = open(csv_path).readline().strip()
    assert header == "video,caption,num_frames,height,width,fps"
    records, problems = read_records(str(csv_path))
    assert not problems and len(records) == 9  # 8 clips + max(1, 8 // 16) image
    videos = [r for r in records if r.path.endswith(".mp4")]
    assert len(videos) == 8 and records[-1].path.endswith(".png")
    for rec in records:
        assert re.fullmatch(r"a \w+ (circle|square|diamond) (moving (left|right|up|down) )?on a \w+ background",
                            rec.caption), rec.caption
        frames, h, w, fps = video_info(rec.path)
        assert (frames, h, w) == (rec.num_frames, rec.height, rec.width)
        if rec.fps is not None:
            assert fps == rec.fps
    assert len({(r.height, r.width) for r in videos}) > 1 and all(24 <= r.num_frames <= 48 for r in videos)
    clip = read_clip(videos[0].path, 8, stride=2, size=(64, 64))
    assert clip.shape == (8, 3, 64, 64) and clip.std() > 0.05  # a shape on a background, not a blank
    # the same seed gives the same files
    again = tmp_path / "again"
    quickstart.build(str(again), 2, 0, 0)
    assert _md5(again / "videos" / "clip_00001.mp4") == _md5(out / "videos" / "clip_00001.mp4")


def test_quickstart_set_through_buckets_to_clips(tmp_path):
    out = tmp_path / "qs"
    csv_path = quickstart.build(str(out), 12, 3, 2)
    records, problems = read_records(csv_path)
    records, probe_problems = fill_metadata(records)
    assert not problems and not probe_problems
    frames, heights, widths, _ = metadata_arrays(records)
    spec = {"64px": {1: (1.0, 1), 16: (1.0, 2)}}
    s = BucketSampler(Buckets(spec, frame_interval=1), frames, heights, widths, dp=2, seed=0)
    for step in range(len(s.plan(0))):
        t, h, w = s.shape_of(step)
        for rank in range(2):
            for i in s.indices(step, rank, 0):
                clip = read_clip(records[i].path, t, stride=1, size=(h, w),
                                 start=np.random.default_rng([step, i]))
                assert clip.shape == (t, 3, h, w)
