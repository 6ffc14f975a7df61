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
    folder.mkdir(parents=True, exist_ok=True)
    if frames is None:
        path = folder / f"{name}.npz"
        tmp = folder / f".{name}.tmp.npz"
        np.savez(tmp, latent=latent)
    elif len(frames) == 1:
        path, tmp = folder / f"{name}.png", folder / f".{name}.tmp.png"
        write_png(str(tmp), frames[0])
    else:
        path, tmp = folder / f"{name}.mp4", folder / f".{name}.tmp.mp4"
        write_video(str(tmp), frames, fps=fps)
    os.replace(tmp, path)
    meta = folder / f"{name}.json"
    tmp_meta = folder / f".{name}.tmp.json"
    tmp_meta.write_text(json.dumps({**settings, "file": path.name}, indent=2))
    os.replace(tmp_meta, meta)
    return path
