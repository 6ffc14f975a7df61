"""The data path's speed against what it feeds.

1. Decoding: frames/s of vgen's read_clip (decord, stride sampling, resize + center crop, [-1, 1])
   against decord alone reading the same frames, on the quickstart clips and on larger clips.
2. Cached latents: batches/s of the bucketed cached-latent reader (keyed draws, npz loads, stacking,
   the family's inputs) against the trainer's consumption (steps/s) of the tiny and a mid-size
   STDiT2, and the share of step time the trainer waited for data in a real run.
3. Padding: the share of zero-padded frames/pixels in built batches (buckets group same-shape
   samples: 0 by construction, measured here).

    .venv/bin/python benchmarks/data_loading.py [--clips 32] [--steps 12]
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import mindspore  # noqa: E402,F401  (before decord)


def make_clips(out: Path, num: int):
    subprocess.run([sys.executable, str(REPO / "tools" / "make_quickstart_data.py"), "--out", str(out), "--num",
                    str(num), "--images", "2"], check=True, capture_output=True)


def make_big_clips(out: Path, num: int, size=(480, 640), frames=96):
    """Noisy moving gradients at 480x640 (larger than the quickstart's 64 px)."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tools"))
    from make_quickstart_data import write_video

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(num):
        base = rng.integers(0, 255, 3)
        clip = np.stack([((xx + 4 * t + yy) % 256)[..., None] * 0.5 + base * 0.5 for t in range(frames)])
        clip = (clip + rng.integers(0, 20, clip.shape)).clip(0, 255).astype(np.uint8)
        path = out / f"big_{i}.mp4"
        write_video(str(path), clip, 30)
        paths.append(path)
    return paths


def decode_rates(paths, num_frames, stride, size):
    """(vgen frames/s probing each file, vgen frames/s with the record's metadata known as a data
    set has it, decord frames/s) reading num_frames at `stride` from each clip."""
    import decord
    import numpy as np

    from vgen.data.video import read_clip, video_info

    t0 = time.perf_counter()
    for p in paths:
        read_clip(str(p), num_frames, stride=stride, start=0, size=size)
    probing = len(paths) * num_frames / (time.perf_counter() - t0)
    known = {p: video_info(str(p))[1:] for p in paths}  # what CSV columns or a probe cache give
    t0 = time.perf_counter()
    for p in paths:
        read_clip(str(p), num_frames, stride=stride, start=0, size=size, known=known[p])
    ours = len(paths) * num_frames / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in paths:
        vr = decord.VideoReader(str(p))
        vr.get_batch(list(range(0, num_frames * stride, stride))).asnumpy().astype(np.float32)
    bare = len(paths) * num_frames / (time.perf_counter() - t0)
    return probing, ours, bare


def cached_reader_rate(cache_dir, clips, model, steps):
    """Batches/s the bucketed cache reader builds (one rank), and the trainer's steps/s on them."""
    from _util import compose

    from vgen.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as run:
        cfg = compose([f"model={model}", "data=video", f"data.csv_path={clips / 'train.csv'}", "data.buckets=quickstart",
                       "data.frame_stride=2", f"data.cache_dir={cache_dir}", "data.latents=cache", "data.text=cache",
                       f"schedule.max_steps={steps}", "schedule.log_every=1", "schedule.ckpt_every=100000",
                       "progress=false"])
        trainer = Trainer(cfg, Path(run)).setup()
        t0 = time.perf_counter()
        padded = total = 0
        for step in range(steps):
            sb = trainer.data.batches.build(step)
            for mb in sb.micro:
                latent = mb.batch["latent"]
                total += latent.size
                padded += int((latent.reshape(latent.shape[0], latent.shape[1], latent.shape[2], -1) == 0)
                              .all(axis=(1, 3)).sum()) * latent.shape[1] * latent[0, 0, 0].size
        build_rate = steps / (time.perf_counter() - t0)
        trainer.run()
        import json

        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    seen, steady = set(), []
    for r in rows:  # the first step of each bucket shape compiles: leave those out
        if r.get("bucket") in seen:
            steady.append(r)
        seen.add(r.get("bucket"))
    step_times = [r["step_time_s"] for r in steady]
    waits = [r["data_wait_s"] for r in steady]
    return build_rate, 1 / statistics.median(step_times), sum(waits) / sum(step_times), padded / max(1, total)


def build_cache(clips: Path, cache: Path, model: str):
    for kind in ("text", "vae"):
        subprocess.run([sys.executable, "-m", "vgen.cli.cache", kind, f"model={model}", "data=video",
                        f"data.csv_path={clips / 'train.csv'}", "data.buckets=quickstart", "data.frame_stride=2",
                        f"data.cache_dir={cache}", f"model.text_encoder.tokenizer={clips / 'tokenizer.json'}"],
                       check=True, capture_output=True, cwd=str(REPO))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        make_clips(d / "qs", args.clips)
        # the 64x64 clips: decord 0.6 cannot output some narrow widths (48 px) without vgen's fallback
        import csv

        with open(d / "qs" / "train.csv") as f:
            small = [d / "qs" / r["video"] for r in csv.DictReader(f)
                     if r["video"].endswith(".mp4") and r["width"] == "64" and r["height"] == "64"]
        big = make_big_clips(d / "big", 4)
        rows = [("quickstart 64px, 8 frames @2", *decode_rates(small, 8, 2, (64, 64))),
                ("480x640, 16 frames @3 -> 256x256", *decode_rates(big, 16, 3, (256, 256)))]
        print(f"\n{'decode':36s} {'probing':>8s} {'vgen fps':>10s} {'decord fps':>11s} {'ratio':>7s} "
              f"{'probing ratio':>14s}")
        for name, probing, ours, bare in rows:
            print(f"{name:36s} {probing:8.0f} {ours:10.0f} {bare:11.0f} {ours / bare:7.2f} {probing / bare:14.2f}")
        print(f"\n{'cached latents (bucketed)':28s} {'reader batch/s':>15s} {'trainer step/s':>15s} "
              f"{'headroom':>9s} {'wait share':>11s} {'padding':>8s}")
        for model in ("opensora_stdit2_tiny", "opensora_stdit2_mid"):
            cache = d / f"cache_{model}"
            build_cache(d / "qs", cache, model)
            build, consume, wait, pad = cached_reader_rate(cache, d / "qs", model, args.steps)
            print(f"{model:28s} {build:15.1f} {consume:15.2f} {build / consume:8.1f}x {wait:11.4f} {pad:8.4f}")
    print("wait share: time the trainer waited for data / step time (prefetch thread); padding: share of "
          "zero-padded latent frames in built batches")


if __name__ == "__main__":
    main()
