"""One file per video (mp4; png for a 1-frame sample; npz of the latent when not decoded) and a
json of everything that decided it, under a name no other prompt or seed of the call shares:
<index>-<prompt words>-seed<seed>. Files are written beside their final name and renamed into
place, so an interrupted call leaves no half-written video."""
import json
import os
import re
from pathlib import Path

import numpy as np

from ..data.video_writer import write_png, write_video


def video_name(index: int, prompt: str, seed: int) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:48].rstrip("_") or "empty"
    return f"{index:04d}-{words}-seed{seed}"


def write_sample(folder: Path, name: str, settings: dict, frames: np.ndarray = None, fps: float = 24.0,
                 latent: np.ndarray = None) -> Path:
    """frames uint8 [T, H, W, 3] (or the latent when not decoded) -> the file's path."""
    from ..train.checkpoint import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    if frames is None:
        suffix, write = ".npz", lambda tmp: np.savez(tmp, latent=latent)
    elif len(frames) == 1:
        suffix, write = ".png", lambda tmp: write_png(tmp, frames[0])
    else:
        suffix, write = ".mp4", lambda tmp: write_video(tmp, frames, fps=fps)
    path, tmp = folder / f"{name}{suffix}", folder / f".{name}.tmp{suffix}"  # the writers go by the suffix
    write(str(tmp))
    os.replace(tmp, path)
    write_text_atomic(folder / f"{name}.json", json.dumps({**settings, "file": path.name}, indent=2))
    return path
