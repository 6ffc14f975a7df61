#!/usr/bin/env python
"""Reconstruction quality of a VAE on video clips: per-clip and mean PSNR and SSIM.

    python tools/eval_vae.py --model hunyuan_vae --weights hunyuan_vae.safetensors \\
        --videos clips/ --frames 17 --size 256 [--tile] [--out summary.json]
    python tools/eval_vae.py --model hunyuan_vae_tiny --weights none --videos data/quickstart/train.csv \\
        --frames 5 --size 32

Models: hunyuan_vae (884-16c), hunyuan_vae_tiny (seeded random weights with --weights none),
sd-vae-ft-ema / sd-vae-tiny (2D, frame by frame). --weights takes the converted official file or a
vgen checkpoint's model.safetensors (a trained VAE; its discriminator keys are dropped).
--videos: a folder (its video files, sorted) or a CSV (`video` or `path` column, relative to the CSV).

Each clip: `--frames` frames every `--stride` from the first, resized and center-cropped to --size
(vgen.data.video.read_clip, decord), encoded to the posterior mean, decoded (tiled with --tile,
hunyuan only), clipped to [-1, 1]. Both videos are compared on [0, 255] as floats (the decoded
video is not rounded to integers):
  PSNR  per frame 10 log10(255^2 / MSE) over its RGB values (inf for identical frames), averaged
        over the frames of the clip;
  SSIM  Wang et al. 2004 per frame and RGB channel: 11x11 Gaussian window (sigma 1.5) applied as a
        'valid' filter (no padding), K1 0.01, K2 0.03, L 255, population statistics; the mean SSIM
        map, averaged over channels and frames. This equals skimage's structural_similarity with
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255 (which
        filters with padding, then crops the 5-pixel border it affects).
The mean row averages the clips. --out writes a JSON summary (an infinite PSNR is written as null).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
MODELS = ("hunyuan_vae", "hunyuan_vae_tiny", "sd-vae-ft-ema", "sd-vae-tiny")
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
DATA_RANGE = 255.0


# ---- metrics (numpy) ---------------------------------------------------------------------------

def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Mean over frames of the per-frame PSNR; clips [T, C, H, W] on [0, data_range]."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    mse = (diff * diff).reshape(diff.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        per_frame = 10.0 * np.log10(data_range ** 2 / mse)
    return float(per_frame.mean())


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian; the 2-D window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of the last two axes with the window g x g."""
    from numpy.lib.stride_tricks import sliding_window_view

    rows = sliding_window_view(img, g.size, axis=-1) @ g  # [..., H, W - k + 1]
    return sliding_window_view(rows, g.size, axis=-2) @ g  # the window axis comes last


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """SSIM map of images [..., H, W] (each of the leading axes on its own)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {x.shape[-2:]}")
    g = gaussian_window()
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Mean SSIM of clips [T, C, H, W]: per frame and channel, averaged."""
    return float(ssim_map(reference, test, data_range).mean(axis=(-2, -1)).mean())


def to_255(clip: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [0, 255] as float64, values outside clipped."""
    return (np.clip(clip.astype(np.float64), -1.0, 1.0) + 1.0) * 127.5


# ---- clips -------------------------------------------------------------------------------------

def list_videos(source: str):
    p = Path(source)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise SystemExit(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in {source}")
        return files
    if p.suffix.lower() == ".csv":
        from vgen.data.records import read_csv

        import pandas as pd

        columns = pd.read_csv(p, nrows=0).columns
        column = "video" if "video" in columns else "path"
        df = read_csv(str(p), [column])
        return [str(p.parent / v) if not os.path.isabs(v) else v for v in df[column]
                if Path(v).suffix.lower() in VIDEO_EXTENSIONS]
    raise SystemExit(f"--videos {source}: expected a folder or a .csv file")


# ---- models ------------------------------------------------------------------------------------

def build_reconstructor(model: str, weights, tile: bool = False, seed: int = 0):
    """clip [T, 3, H, W] in [-1, 1] -> reconstruction (numpy, same shape), and the model's frame rule."""
    import mindspore as ms
    from mindspore import Tensor
    from safetensors.numpy import load_file

    from vgen.models.layers.init import materialize
    from vgen.models.weights import load_arrays

    if model not in MODELS:
        raise SystemExit(f"--model {model}: expected one of {', '.join(MODELS)}")
    if weights is None and not model.endswith("tiny"):
        raise SystemExit(f"--model {model} needs --weights (the converted safetensors)")
    if model.startswith("hunyuan_vae"):
        from vgen.models.hunyuan.vae import build_hunyuan_vae
        from vgen.models.hunyuan.vae_family import vae_arrays

        vae = materialize(build_hunyuan_vae("tiny" if model.endswith("tiny") else "884-16c"), seed)
        if weights is not None:
            load_arrays(vae, vae_arrays(load_file(weights)), weights, strict=True)

        def run(x):
            if tile:
                mean, _ = vae.encode_tiled(x)
                return vae.decode_tiled(mean)
            mean, _ = vae.encode(x)
            return vae.decode(mean)

        frames_ok = lambda t: (t - 1) % 4 == 0
    else:
        from vgen.models.encoders import build_frozen, vae_spec

        if tile:
            raise SystemExit("--tile: only the hunyuan VAEs tile")
        vae = build_frozen(vae_spec(model).build, model, weights, seed, "VAE")

        def run(x):
            mean, _ = vae.encode_video(x, 1)
            return vae.decode_video(mean, 1)

        frames_ok = lambda t: t >= 1
    vae.set_train(False)
    step = ms.jit(run)

    def reconstruct(clip: np.ndarray) -> np.ndarray:
        x = Tensor(np.ascontiguousarray(clip.transpose(1, 0, 2, 3)[None], np.float32))
        return step(x).asnumpy()[0].transpose(1, 0, 2, 3)

    return reconstruct, frames_ok


# ---- evaluation --------------------------------------------------------------------------------

def _finite(v: float):
    return v if math.isfinite(v) else None


def evaluate(model: str, weights, videos, frames: int, size, stride: int = 1, tile: bool = False, limit: int = 0,
             log=print) -> dict:
    from vgen.data.video import read_clip

    reconstruct, frames_ok = build_reconstructor(model, weights, tile)
    if not frames_ok(frames):
        raise SystemExit(f"--frames {frames}: the causal VAE takes 4k+1 frames (1, 5, 9, 13, 17, ...)")
    paths = list_videos(videos) if isinstance(videos, str) else list(videos)
    if limit:
        paths = paths[:limit]
    clips = []
    for path in paths:
        t0 = time.perf_counter()
        clip = read_clip(path, frames, stride=stride, size=tuple(size))
        rec = reconstruct(clip)
        ref, out = np.rint(to_255(clip)), to_255(rec)
        row = {"video": path, "psnr": psnr(ref, out), "ssim": ssim(ref, out)}
        clips.append(row)
        log(f"{Path(path).name:40s} PSNR {row['psnr']:7.3f} dB  SSIM {row['ssim']:.4f}  "
            f"({time.perf_counter() - t0:.1f}s)")
    mean = {"psnr": float(np.mean([c["psnr"] for c in clips])), "ssim": float(np.mean([c["ssim"] for c in clips]))}
    log(f"{'mean over %d clips' % len(clips):40s} PSNR {mean['psnr']:7.3f} dB  SSIM {mean['ssim']:.4f}")
    return {"model": model, "weights": weights, "frames": frames, "size": list(size), "stride": stride, "tile": tile,
            "psnr": "per-frame on [0, 255], mean over frames",
            "ssim": "11x11 gaussian (1.5), per frame and RGB channel",
            "clips": [{**c, "psnr": _finite(c["psnr"])} for c in clips],
            "mean": {"psnr": _finite(mean["psnr"]), "ssim": mean["ssim"]}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--weights", required=True, help="safetensors file, or 'none' (tiny models: seeded weights)")
    ap.add_argument("--videos", required=True, help="a folder of videos or a CSV listing them")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, nargs="+", default=[256], help="H [W] (one value: square)")
    ap.add_argument("--stride", type=int, default=1, help="frame stride")
    ap.add_argument("--tile", action="store_true", help="tiled encode/decode (hunyuan VAEs)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate the first N clips only")
    ap.add_argument("--out", type=Path, help="write a JSON summary here")
    ap.add_argument("--device", default="auto", choices=("auto", "CPU", "Ascend", "GPU"))
    args = ap.parse_args(argv)
    if len(args.size) > 2:
        ap.error("--size takes H or H W")
    size = (args.size[0], args.size[-1])
    weights = None if args.weights.lower() == "none" else args.weights
    if weights is not None and not Path(weights).is_file():
        ap.error(f"--weights {weights}: file not found")
    from vgen.runtime import setup_device  # first: it quiets MindSpore's C++ logs before MindSpore loads

    setup_device(args.device)
    summary = evaluate(args.model, weights, args.videos, args.frames, size, args.stride, args.tile, args.limit)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
