"""Precomputed text-encoder and VAE caches, one .npz per sample as mindone's OpenSora tools
write them:
  <text_emb_dir>/<video stem>.npz  text_emb [L, C], mask [L]
  <latent_dir>/<video stem>.npz    latent_mean, latent_std [F, C, h, w], fps, ori_size
A training latent is (mean + std * noise) * scale over `num_frames` frames taken with a stride
from a random start; noise and start are keyed draws. Loading never unpickles."""
import os
from pathlib import Path

import numpy as np

from .errors import DataError
from .records import format_problems, read_csv


def load_npz(path: str, keys) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {missing} (has {z.files}); rebuild this cache file")
            return {k: z[k] for k in keys}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; rebuild the cache or drop the row (data.skip_bad=true skips it)")
    except Exception as e:  # truncated zip, bad header, object arrays (which would need pickle) ...
        raise DataError(f"{path}: unreadable cache file ({type(e).__name__}: {e}); rebuild it") from e


class CachedLatentDataset:
    def __init__(self, csv_path, text_emb_dir, latent_dir, *, text_len, text_dim, latent_shape, scale,
                 frame_stride=1, video_column="video", skip_bad=False):
        self.csv_path = csv_path
        self.text_len, self.text_dim = text_len, text_dim
        self.latent_shape = tuple(latent_shape)  # (C, T, h, w)
        self.scale, self.frame_stride = scale, frame_stride
        df = read_csv(csv_path, [video_column])
        self.items, problems = [], []
        for video, line in zip(df[video_column], df["_line"]):
            stem = str(Path(video).with_suffix(""))
            text_path = os.path.join(text_emb_dir, stem + ".npz")
            latent_path = os.path.join(latent_dir, stem + ".npz")
            absent = [p for p in (text_path, latent_path) if not os.path.isfile(p)]
            if not video:
                problems.append((line, "empty video path"))
            elif absent:
                problems.append((line, f"{video}: cache file(s) not found: {absent}"))
            else:
                self.items.append((line, video, text_path, latent_path))
        self.skipped_rows = len(problems)
        if problems and not skip_bad:
            raise DataError(format_problems(csv_path, problems)
                            + "\nBuild the missing caches, remove the rows, or set data.skip_bad=true to skip them.")
        if not self.items:
            raise DataError(f"{csv_path}: no usable rows (skipped {len(problems)})")

    def __len__(self):
        return len(self.items)

    def describe(self, index: int) -> str:
        line, video, _, _ = self.items[index]
        return f"{self.csv_path} line {line} ({video})"

    def get(self, index: int, rng, shape=None) -> dict:
        line, video, text_path, latent_path = self.items[index]
        t = load_npz(text_path, ("text_emb", "mask"))
        if t["text_emb"].shape != (self.text_len, self.text_dim) or t["mask"].shape != (self.text_len,):
            raise DataError(f"{text_path} (line {line}): text_emb {t['text_emb'].shape} / mask {t['mask'].shape}, "
                            f"the model expects [{self.text_len}, {self.text_dim}] / [{self.text_len}]: "
                            f"the cache was made by another text encoder or length")
        z = load_npz(latent_path, ("latent_mean", "latent_std"))
        mean, std = z["latent_mean"], z["latent_std"]
        c, frames, h, w = self.latent_shape
        if mean.ndim != 4 or mean.shape[1:] != (c, h, w) or std.shape != mean.shape:
            raise DataError(f"{latent_path} (line {line}): latent_mean {mean.shape}, latent_std {std.shape}; "
                            f"the model expects [F, {c}, {h}, {w}]: the cache was made at another resolution or VAE")
        span = (frames - 1) * self.frame_stride + 1
        if mean.shape[0] < span:
            raise DataError(f"{latent_path} (line {line}): {mean.shape[0]} latent frames, fewer than the "
                            f"{span} needed for {frames} frames at stride {self.frame_stride}")
        start = int(rng.integers(0, mean.shape[0] - span + 1))
        idx = np.arange(start, start + span, self.frame_stride)
        m, s = mean[idx].astype(np.float32), std[idx].astype(np.float32)
        latent = (m + s * rng.standard_normal(m.shape, dtype=np.float32)) * self.scale
        return {"latent": latent.transpose(1, 0, 2, 3).copy(), "text_emb": t["text_emb"].astype(np.float32),
                "text_mask": t["mask"].astype(np.uint8)}
