"""Checkpoints: safetensors tensors + trainer_state.json under checkpoints/step_<n>/.

A checkpoint is written into a temporary directory and renamed into place; `checkpoints/latest`
is replaced atomically last. A run killed at any moment leaves either a complete step_<n> or a
temporary directory that the next run deletes; resume picks the newest complete checkpoint."""
import json
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from safetensors.numpy import load_file, save_file

log = logging.getLogger("vgen")
STEP_RE = re.compile(r"^step_(\d+)$")
STATE_FILE = "trainer_state.json"
# Test hook: SIGKILL this process in the middle of writing the checkpoint of this step.
FAULT_ENV = "VGEN_FAULT_KILL_IN_CHECKPOINT"


def _fsync_file(path: Path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def step_dirs(root: Path):
    """Complete checkpoints, newest first."""
    found = []
    if root.is_dir():
        for d in root.iterdir():
            m = STEP_RE.match(d.name)
            if m and (d / STATE_FILE).is_file():
                found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found, reverse=True)]


def clean_partial(root: Path) -> None:
    """Delete temporary directories left by a run killed while writing a checkpoint."""
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(".tmp-"):
                shutil.rmtree(d, ignore_errors=True)


def find_latest(root: Path) -> Optional[Path]:
    latest = root / "latest"
    if latest.is_file():
        d = root / latest.read_text().strip()
        if (d / STATE_FILE).is_file():
            return d
        log.warning("checkpoints/latest names %s, which is incomplete; falling back to the newest complete one", d)
    dirs = step_dirs(root)
    return dirs[0] if dirs else None


def save_checkpoint(root: Path, step: int, files: Dict[str, Dict[str, np.ndarray]], state: dict, keep_last: int):
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp-step_{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    kill_at = os.environ.get(FAULT_ENV)
    for i, (name, tensors) in enumerate(files.items()):
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / name))
        _fsync_file(tmp / name)
        if kill_at is not None and int(kill_at) == step and i == 0:
            os.kill(os.getpid(), signal.SIGKILL)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    _fsync_file(tmp / STATE_FILE)
    _fsync_dir(tmp)
    if final.exists():  # re-written after a resume from an earlier step
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    write_text_atomic(root / "latest", final.name + "\n")
    for old in step_dirs(root)[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_FILE).read_text())


def load_tensors(path: Path) -> Dict[str, np.ndarray]:
    return load_file(str(path))
