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


def open_adapters(path: str, shapes: Dict[str, tuple]):
    """model.lora.pretrained: a file of exactly the net's adapters (models.weights.open_adapters), or
    a LoRA run (its newest checkpoint) or checkpoint directory, whose adapters start the next stage."""
    from ..models.weights import WeightsError, check_layout, layout_problems
    from ..models.weights import open_adapters as open_file

    if not Path(path).is_dir():
        return open_file(path, shapes)
    ckpt = checkpoint_of(path)
    if ckpt is None:
        raise WeightsError(f"model.lora.pretrained={path}: neither an adapters file nor a run or checkpoint "
                           "directory with a complete checkpoint")
    weights = CheckpointReader(ckpt).weights("model")
    found = {n: s for n, s in weights.shapes.items() if n in shapes}  # it also holds the fixed buffers
    check_layout(str(ckpt), *layout_problems(shapes, found), strict=True)
    return weights


def checkpoint_of(path) -> Optional[Path]:
    """The checkpoint `path` names: a checkpoint directory itself, else the newest complete one of a
    run directory (None if neither)."""
    p = Path(path)
    return p if (p / STATE_FILE).is_file() else find_latest(p / "checkpoints")


class CheckpointWriter:
    """Writes step_<n>/ atomically, by one rank or by every rank (sharded states).

    begin(): rank 0 prepares the temporary directory; write(): any rank adds its files;
    commit(): once every rank has written, rank 0 adds trainer_state.json, renames the directory
    into place, replaces `latest` and prunes old checkpoints. `barrier` synchronises the ranks."""

    def __init__(self, root: Path, step: int, is_main: bool = True, barrier=lambda: None):
        self.root, self.step, self.is_main, self.barrier = root, step, is_main, barrier
        self.final = root / f"step_{step}"
        self.tmp = root / f".tmp-step_{step}"
        self.kill_at = os.environ.get(FAULT_ENV)

    def begin(self):
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir()
        self.barrier()
        return self

    def write(self, name: str, tensors: Dict[str, np.ndarray]):
        path = self.tmp / name
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
        _fsync_file(path)
        if self.kill_at is not None and int(self.kill_at) == self.step and self.is_main:
            os.kill(os.getpid(), signal.SIGKILL)

    def write_json(self, name: str, obj):
        (self.tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True))
        _fsync_file(self.tmp / name)

    def commit(self, state: dict, keep_last: int) -> Path:
        self.barrier()
        if self.is_main:
            self.write_json(STATE_FILE, state)
            _fsync_dir(self.tmp)
            if self.final.exists():  # re-written after a resume from an earlier step
                shutil.rmtree(self.final)
            os.replace(self.tmp, self.final)
            _fsync_dir(self.root)
            write_text_atomic(self.root / "latest", self.final.name + "\n")
            for old in step_dirs(self.root)[keep_last:]:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return self.final


# ---- formats ---------------------------------------------------------------------------------
# whole:   model.safetensors (official names, buffers included), ema.safetensors,
#          optimizer.safetensors (adam_m.<name>, adam_v.<name>)
# sharded: index.json, buffers.safetensors, shard-<r>-of-<W>.safetensors ("<kind>/<name>": this
#          rank's flat segment of each parameter; kinds model, ema, adam_m, adam_v)

INDEX_FILE = "index.json"
KINDS = ("model", "ema", "adam_m", "adam_v")


def shard_file(rank: int, shards: int) -> str:
    return f"shard-{rank:05d}-of-{shards:05d}.safetensors"


class CheckpointReader:
    """Whole arrays by parameter name, whatever the format and worker count that wrote them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sharded = (self.path / INDEX_FILE).is_file()
        self.index = json.loads((self.path / INDEX_FILE).read_text()) if self.sharded else None
        self._cache = {}

    def state(self) -> dict:
        return json.loads((self.path / STATE_FILE).read_text())

    def has(self, kind: str) -> bool:
        if self.sharded:
            return kind in self.index["kinds"]
        return (self.path / {"model": "model.safetensors", "ema": "ema.safetensors"}.get(
            kind, "optimizer.safetensors")).is_file()

    def _file(self, name: str) -> Dict[str, np.ndarray]:
        if name not in self._cache:
            self._cache[name] = load_file(str(self.path / name))
        return self._cache[name]

    def weights(self, kind: str):
        """One kind (model, ema, adam_m, adam_v) as a source read by name or by flat segment
        (has / whole / segment), without loading the files whole."""
        if self.sharded:
            return ShardedWeights(self, kind)
        from ..models.weights import SafetensorsWeights

        if kind in ("adam_m", "adam_v"):
            return SafetensorsWeights(self.path / "optimizer.safetensors", prefix=kind + ".")
        return SafetensorsWeights(self.path / f"{kind}.safetensors")

    def arrays(self, kind: str) -> Dict[str, np.ndarray]:
        """{name: array}; for `model` and `ema` the buffers are included."""
        if not self.sharded:
            if kind in ("adam_m", "adam_v"):
                prefix = kind + "."
                return {k[len(prefix):]: v for k, v in self._file("optimizer.safetensors").items()
                        if k.startswith(prefix)}
            return dict(self._file(f"{kind}.safetensors"))
        shards = self.index["shards"]
        files = [self._file(shard_file(r, shards)) for r in range(shards)]
        out = {}
        for name, meta in self.index["params"].items():
            flat = np.concatenate([f[f"{kind}/{name}"] for f in files])
            out[name] = flat[:meta["numel"]].reshape(meta["shape"])
        if kind in ("model", "ema"):
            out.update(self._file("buffers.safetensors"))
        return out


class ShardedWeights:
    """One kind of a sharded checkpoint: every rank's flat segments of each parameter, read by
    slices for any other shard count (the buffers, for model and ema, from buffers.safetensors)."""

    def __init__(self, reader: CheckpointReader, kind: str):
        from safetensors import safe_open

        self.kind, self.params = kind, reader.index["params"]
        shards = reader.index["shards"]
        self._files = [safe_open(str(reader.path / shard_file(r, shards)), framework="numpy").__enter__()
                       for r in range(shards)]
        self.buffers = None
        if kind in ("model", "ema"):
            from ..models.weights import SafetensorsWeights

            self.buffers = SafetensorsWeights(reader.path / "buffers.safetensors")

    @property
    def shapes(self) -> Dict[str, tuple]:
        """{name: full shape} of every entry."""
        out = {n: tuple(m["shape"]) for n, m in self.params.items()}
        if self.buffers is not None:
            out.update(self.buffers.shapes)
        return out

    def has(self, name: str) -> bool:
        return name in self.params or (self.buffers is not None and self.buffers.has(name))

    def segment(self, name: str, shards: int, rank: int) -> np.ndarray:
        if name not in self.params:
            from ..models.weights import flat_segment

            return flat_segment(lambda a, b: self.buffers.whole(name)[a:b], self.buffers.shapes[name], shards, rank)
        meta = self.params[name]
        numel, stored = int(meta["numel"]), int(meta["shard"])
        size = -(-numel // shards)
        lo, hi = min(rank * size, numel), min((rank + 1) * size, numel)
        out = np.zeros(size, np.float32)
        i = lo
        while i < hi:  # the stored segments overlapping [lo, hi)
            f, off = divmod(i, stored)
            n = min(stored - off, hi - i)
            out[i - lo:i - lo + n] = self._files[f].get_slice(f"{self.kind}/{name}")[off:off + n]
            i += n
        return out

    def whole(self, name: str) -> np.ndarray:
        if name not in self.params:
            return self.buffers.whole(name)
        meta = self.params[name]
        return self.segment(name, 1, 0)[:int(meta["numel"])].reshape(meta["shape"])


# ---- writing and reading the training state ----------------------------------------------------

def write_state(writer: CheckpointWriter, buckets, fixed: Dict[str, np.ndarray], shards: int, shard_rank: int,
                is_main: bool) -> None:
    """The flat buckets' state (Bucket.state_dict) in one of the two formats above; `fixed` is
    the model's untrained state (buffers, fixed tables), saved beside the weights."""
    states = [b.state_dict() for b in buckets]
    kinds = sorted({k for st in states for k in st})
    merged = {k: {n: a for st in states for n, a in st.get(k, {}).items()} for k in kinds}
    if shards == 1:
        if is_main:
            writer.write("model.safetensors", {**fixed, **merged["model"]})
            if "ema" in merged:
                writer.write("ema.safetensors", {**fixed, **merged["ema"]})
            writer.write("optimizer.safetensors", {f"{kind}.{n}": a for kind in ("adam_m", "adam_v")
                                                   for n, a in merged[kind].items()})
        return
    if is_main:
        writer.write("buffers.safetensors", fixed)
        params = {sl.name: {"shape": list(sl.shape), "numel": sl.numel, "shard": sl.shard}
                  for b in buckets for sl in b.slots}
        writer.write_json(INDEX_FILE, {"format": "vgen-sharded-1", "shards": shards, "kinds": kinds,
                                       "params": params})
    writer.write(shard_file(shard_rank, shards), {f"{kind}/{n}": a for kind in kinds for n, a in merged[kind].items()})


def read_state(reader: "CheckpointReader") -> dict:
    """{kind: source} for Bucket.load_state_dict, each read by segments; a checkpoint without EMA
    gives the model weights as the EMA's start."""
    return {"adam_m": reader.weights("adam_m"), "adam_v": reader.weights("adam_v"),
            "ema": reader.weights("ema" if reader.has("ema") else "model")}
