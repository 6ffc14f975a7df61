"""Manifests of the cache folders vgen-cache writes, and the checks the training readers make.

Layout under data.cache_dir:
    text/manifest.json              {"kind": "text", "encoder", "weights", "dim", "length", "dtype", "tokenizer",
                                     ["pooled": {"encoder", "weights", "dim", "length", "tokenizer"}], ...}
    text/<video stem>.npz           text_emb [length, dim], mask [length][, text_pooled [pooled dim]]
    text/empty.npz                  the empty prompt's arrays, the same keys (caption dropout)
    latent_<h>x<w>/manifest.json    {"kind": "latent", "vae", "weights", "channels", "compression",
                                     "scale", "shift", "resolution", "frame_stride" | "target_fps",
                                     ["segment_frames"], "dtype", ...}
    latent_<h>x<w>/<video stem>.npz latent_mean, latent_std, fps, ori_size

The text manifest's top-level encoder is model.text_encoder (the states); a model with a pooled
text vector (HunyuanVideo's CLIP, model.text_encoder_2) records that encoder under "pooled".

Latents of a per-frame VAE (temporal compression 1) are [F, C, h/8, w/8]: every frame of the clip
at the stride. A causal VAE (compression t > 1, HunyuanVideo's 4) encodes frames together, so its
files hold [S, n, C, h/8, w/8]: the clip cut into S consecutive segments of `segment_frames` pixel
frames (1 + t k of them; a clip shorter than one segment gives one segment of as many 1 + t k
frames as it has), each segment encoded on its own, n = (segment_frames - 1) / t + 1 latent frames.

A manifest names what made the files of its folder. Training checks it against the model's
specs before reading a sample, so a cache made by another encoder, at another resolution or
frame stride fails at once with the field, both values and the command that rebuilds it.
No MindSpore here: the manifests are plain JSON."""
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .errors import DataError

MANIFEST = "manifest.json"
TEXT_DIR = "text"
EMPTY_TEXT = "empty.npz"
# fields that describe the writing, not the contents: two manifests that differ only there agree
NOT_IDENTITY = ("vgen_version", "created")


def text_folder(cache_dir: str) -> Path:
    return Path(cache_dir) / TEXT_DIR


def latent_folder_name(height: int, width: int) -> str:
    return f"latent_{int(height)}x{int(width)}"


def latent_folder(cache_dir: str, height: int, width: int) -> Path:
    return Path(cache_dir) / latent_folder_name(height, width)


def vgen_version() -> str:
    try:
        from importlib.metadata import version

        return version("vgen")
    except Exception:  # running from a source tree that was never installed
        return "unknown"


def _stamp() -> dict:
    return {"vgen_version": vgen_version(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def encoder_record(encoder: str, weights: str, dim: int, length: int, tokenizer: Optional[str] = None) -> dict:
    """What identifies one text encoder's outputs."""
    m = {"encoder": encoder, "weights": weights, "dim": int(dim), "length": int(length)}
    if tokenizer is not None:
        m["tokenizer"] = tokenizer  # the tokenizer changes the embeddings too
    return m


def text_manifest(encoder: str, weights: str, dim: int, length: int, dtype: str, tokenizer: Optional[str] = None,
                  pooled: Optional[dict] = None) -> dict:
    """`pooled`: the encoder_record of the pooled-vector encoder, when the model has one."""
    m = {"kind": "text", **encoder_record(encoder, weights, dim, length, tokenizer), "dtype": dtype}
    if pooled is not None:
        m["pooled"] = dict(pooled)
    return {**m, **_stamp()}


def sampling_fields(frame_stride: Optional[int], target_fps: Optional[float]) -> dict:
    """How frames were taken from a video: at a fixed stride, or at the stride nearest a target fps."""
    if target_fps is not None:
        return {"target_fps": float(target_fps)}
    return {"frame_stride": int(frame_stride if frame_stride is not None else 1)}


def latent_manifest(vae: str, weights: str, channels: int, compression: Sequence[int], scale: float, shift: float,
                    resolution: Sequence[int], dtype: str, frame_stride: Optional[int] = None,
                    target_fps: Optional[float] = None, segment_frames: Optional[int] = None) -> dict:
    """`segment_frames`: a causal VAE's segment length in pixel frames (see the module doc)."""
    segments = {} if segment_frames is None else {"segment_frames": int(segment_frames)}
    return {"kind": "latent", "vae": vae, "weights": weights, "channels": int(channels),
            "compression": [int(c) for c in compression], "scale": float(scale), "shift": float(shift),
            "resolution": [int(r) for r in resolution], **sampling_fields(frame_stride, target_fps), **segments,
            "dtype": dtype, **_stamp()}


# ---- reading and writing ----------------------------------------------------------------------

def read_manifest(folder, rebuild_hint: str = "") -> dict:
    """The manifest of a cache folder; DataError when it is missing or not a manifest."""
    path = Path(folder) / MANIFEST
    hint = f" {rebuild_hint}" if rebuild_hint else ""
    if not path.is_file():
        what = "the folder does not exist" if not Path(folder).is_dir() else "the folder has no manifest.json"
        raise DataError(f"{folder}: {what}, so it is not a cache written by vgen-cache (or its writing never "
                        f"started).{hint}")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({type(e).__name__}: {e}).{hint}") from e
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise DataError(f"{path}: not a vgen-cache manifest (no 'kind' field).{hint}")
    return manifest


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def differences(cached: dict, expected: dict, fields: Optional[Sequence[str]] = None
                ) -> List[Tuple[str, object, object]]:
    """(field, cached value, expected value) for every field that differs; fields: those of `expected`
    that identify the contents (all but the writing stamp) unless given."""
    if fields is None:
        fields = [k for k in expected if k not in NOT_IDENTITY]
    return [(k, cached.get(k), expected.get(k)) for k in fields if not _same(cached.get(k), expected.get(k))]


def format_differences(folder, diffs, fix: str, what: Optional[str] = None) -> str:
    """`what`: the part of the cache that differs (e.g. which of two encoders)."""
    listed = "; ".join(f"{k}: cached {c!r}, expected {e!r}" for k, c, e in diffs)
    where = f" in {what}" if what else ""
    return f"{Path(folder) / MANIFEST} does not match{where} ({listed}). {fix}"


def ensure_manifest(folder, manifest: dict) -> None:
    """Before writing cache files into `folder`: create its manifest, or check that the one there
    describes the same contents (so a resumed or parallel run never mixes caches). Safe when several
    workers race: the first complete manifest wins, the others compare against it."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        # a worker writes the manifest before its first file: files with no manifest after them are foreign
        if any(folder.rglob("*.npz")) and not path.is_file():
            raise _foreign(folder)
        _create_exclusive(path, manifest)
    check_same_contents(folder, manifest)


def _create_exclusive(path: Path, manifest: dict) -> None:
    """Writes a complete manifest at `path` unless one is there (hard link: atomic and exclusive)."""
    tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    try:
        os.link(tmp, path)  # fails if another worker got there first: then compare with its manifest
    except FileExistsError:
        pass
    except OSError:  # file systems without hard links
        if not path.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_existing(folder, manifest: dict) -> None:
    """Before a run starts: a folder that is there must hold a cache of the same contents (checked by
    its manifest), or nothing at all."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        check_same_contents(folder, manifest)
    elif folder.is_dir() and any(folder.rglob("*.npz")):
        raise _foreign(folder)


def _foreign(folder) -> DataError:
    return DataError(f"{folder} holds cache files but no manifest.json: it was not written by vgen-cache (or by an "
                     f"older version). Move it away or choose another data.cache_dir.")


def check_same_contents(folder, manifest: dict) -> None:
    """Fails when an existing manifest describes other contents than `manifest` (the tool's resume
    check: every identity field, weights and dtype included)."""
    cached = read_manifest(folder)
    diffs = differences(cached, manifest)
    if diffs:
        raise DataError(format_differences(
            folder, diffs, "This folder holds a cache made with other settings: delete it to rebuild it with the "
                           "current ones, or set data.cache_dir to another folder."))


# ---- checks of the training readers -----------------------------------------------------------

def _rebuild_hint(kind: str, folder, model: Optional[str]) -> str:
    cache_dir = Path(folder).parent
    model_arg = f"model={model}" if model else "model=<the training model>"
    extra = " with the training run's data.buckets / data.resolution and data.frame_stride" if kind == "vae" else ""
    return (f"Rebuild it with `vgen-cache {kind} {model_arg} data.cache_dir={cache_dir}`{extra}, or point "
            f"data.cache_dir at a cache made for this model.")


def check_text_manifest(folder, text_spec, weights: Optional[str] = None, model: Optional[str] = None,
                        pooled_weights: Optional[str] = None) -> dict:
    """The text cache in `folder` must come from the family's text encoder, at its dim and length
    (and from the given weights when `weights` is given), and, for a family with a pooled text
    vector, from its pooled encoder at its dim. A mismatch names the encoder. Returns the manifest."""
    fix = _rebuild_hint("text", folder, model)
    cached = read_manifest(folder, fix)
    expected = {"kind": "text", "encoder": text_spec.encoder, "dim": int(text_spec.dim),
                "length": int(text_spec.length)}
    if weights is not None:
        expected["weights"] = weights
    diffs = differences(cached, expected)
    if diffs:
        raise DataError(format_differences(folder, diffs, fix, f"the text encoder (model.text_encoder, cached "
                                                                f"{cached.get('encoder')!r})"))
    if getattr(text_spec, "pooled_dim", 0):
        pooled = cached.get("pooled") if isinstance(cached.get("pooled"), dict) else {}
        expected = {"encoder": getattr(text_spec, "pooled_encoder", "") or pooled.get("encoder"),
                    "dim": int(text_spec.pooled_dim)}
        if pooled_weights is not None:
            expected["weights"] = pooled_weights
        diffs = [(f"pooled {k}", c, e) for k, c, e in differences(pooled, expected)]
        if diffs:
            what = "the pooled text encoder (model.text_encoder_2, " + (
                f"cached {pooled['encoder']!r})" if pooled else "of which the cache has none)")
            raise DataError(format_differences(folder, diffs, fix, what))
    return cached


def segment_latents(segment_frames: int, t_compression: int) -> int:
    """Latent frames of a causal VAE's segment of `segment_frames` pixel frames."""
    return (int(segment_frames) - 1) // int(t_compression) + 1


def check_latent_manifest(folder, latent_spec, resolution: Sequence[int], frame_stride: Optional[int] = None,
                          target_fps: Optional[float] = None, weights: Optional[str] = None,
                          model: Optional[str] = None, max_frames: Optional[int] = None) -> dict:
    """The latent cache in `folder` must come from the family's VAE (channels, compression, scale,
    shift), at `resolution` (h, w) and with the same frame sampling; for a causal VAE its segments
    must hold the latents of the longest clip training takes (`max_frames` pixel frames, when
    given). Returns the manifest."""
    fix = _rebuild_hint("vae", folder, model)
    cached = read_manifest(folder, fix)
    expected = {"kind": "latent", "vae": latent_spec.vae, "channels": int(latent_spec.channels),
                "compression": [int(c) for c in latent_spec.compression], "scale": float(latent_spec.scale),
                "shift": float(latent_spec.shift), "resolution": [int(r) for r in resolution],
                **sampling_fields(frame_stride, target_fps)}
    expected.setdefault("frame_stride", None)  # a cache taken at a stride must not pass for one at a target fps
    expected.setdefault("target_fps", None)
    if weights is not None:
        expected["weights"] = weights
    diffs = differences(cached, expected)
    if diffs:
        raise DataError(format_differences(folder, diffs, fix))
    t = int(latent_spec.compression[0])
    if t > 1 and max_frames is not None:
        segment = cached.get("segment_frames")
        if not isinstance(segment, int) or segment < 1:
            raise DataError(f"{Path(folder) / MANIFEST}: no segment_frames, which a cache of the causal VAE "
                            f"{latent_spec.vae} records. {fix}")
        need, have = segment_latents(max_frames, t), segment_latents(segment, t)
        if need > have:
            raise DataError(f"{Path(folder) / MANIFEST}: segments of {segment} frames ({have} latent frames), but "
                            f"training takes clips of up to {max_frames} frames ({need} latent frames). Rebuild it "
                            f"with the training run's data.num_frames / data.buckets, or train on shorter clips. {fix}")
    return cached
