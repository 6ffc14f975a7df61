"""Building the text-embedding and VAE-latent caches that training reads with data.text=cache /
data.latents=cache: the work of `vgen-cache text|vae` (vgen/cli/cache.py is its command line and
process handling), one share of the rows per worker (row i goes to rank i % world).

Layout under data.cache_dir (see manifest.py): text/<video stem>.npz, text/empty.npz,
latent_<h>x<w>/<video stem>.npz, and a manifest.json per folder. Resumable: files that exist are
skipped, each file is written under a temporary name and renamed. Bad rows are reported with
their CSV line; data.skip_bad=true skips and counts them."""
import hashlib
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..config.models import seeded
from ..data.cached_video import (IMAGE_FPS, assignable_resolutions, cache_name, encodable_frames, is_image,
                                    make_buckets, read_video_records, segment_frames, strides_or_problems)
from ..data.errors import DataError
from ..data.manifest import (EMPTY_TEXT, check_existing, encoder_record, ensure_manifest, latent_folder,
                                latent_manifest, text_folder, text_manifest)
from ..data.records import format_problems

log = logging.getLogger("vgen")
OPTIONS = {"dtype": "fp32", "batch_size": 16, "chunk_frames": 64}  # the tool's own options (cache.<key>=)
DTYPES = {"fp32": np.float32, "fp16": np.float16}
ENCODER_SEED = 0  # the tiny encoders' random init; online training builds them with the same seed
FIX_BAD_ROW = "Fix or remove the row, or set data.skip_bad=true to skip (and count) bad rows."


# ---- encoders and their identities ----------------------------------------------------------------

def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def encoder_weights_id(enc_cfg, what: str, key: Optional[str] = None) -> str:
    """The manifest's `weights`: the checkpoint's sha256, or the seeded init of a tiny encoder.
    `key`: the model config key of the encoder (default: `what` with underscores)."""
    from ..models.encoders import weights_id
    from ..models.weights import WeightsError

    key = key or what.replace(" ", "_")
    if not enc_cfg.path:
        if not seeded(enc_cfg.name):
            raise WeightsError(f"{what} {enc_cfg.name} needs its weights: set model.{key}.path "
                               f"to the converted safetensors")
        return weights_id(None, enc_cfg.name, ENCODER_SEED)
    p = Path(enc_cfg.path)
    p = p / "model.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise WeightsError(f"{what} weights not found at {enc_cfg.path} (a .safetensors file, or a directory with "
                           f"model.safetensors)")
    return weights_id(str(p), enc_cfg.name, ENCODER_SEED)


def tokenizer_id(enc_cfg, key: str = "text_encoder") -> str:
    from ..models.encoders import text_encoder_spec
    from ..models.weights import WeightsError

    files = text_encoder_spec(enc_cfg.name).tokenizer_files
    path = enc_cfg.tokenizer
    if not path:
        raise WeightsError(f"model.{key}.tokenizer: set it to the tokenizer files of {enc_cfg.name} "
                           f"({' or '.join(files)}, or their directory)")
    if os.path.isdir(path):
        found = [os.path.join(path, n) for n in files if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise WeightsError(f"model.{key}.tokenizer={path} holds none of {list(files)}")
        path = found[0]
    if not os.path.isfile(path):
        raise WeightsError(f"model.{key}.tokenizer={path}: no such file")
    return _file_sha256(path)


def text_cache_manifest(model_cfg, dtype: str) -> dict:
    """The text folder's manifest: model.text_encoder's identity, and model.text_encoder_2's under
    "pooled" when the model has a pooled text encoder."""
    from ..models.encoders import text_encoder_configs, text_encoder_spec

    records = [encoder_record(enc.name, encoder_weights_id(enc, "text encoder", key), text_encoder_spec(enc.name).dim,
                              enc.max_length, tokenizer_id(enc, key))
               for key, enc in text_encoder_configs(model_cfg)]
    first = records[0]
    return text_manifest(first["encoder"], first["weights"], first["dim"], first["length"], dtype,
                         first["tokenizer"], pooled=records[1] if len(records) > 1 else None)


# ---- files ------------------------------------------------------------------------------------------

def write_npz(path: Path, **arrays) -> None:
    """Writes under a temporary name, then renames: a killed run never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez(f, **arrays)
    os.replace(tmp, path)


def rank_rows(num_rows: int, rank: int, world: int) -> range:
    """The rows a worker caches: row i goes to rank i % world."""
    return range(rank, num_rows, world)


# ---- the work of one process ------------------------------------------------------------------------

@dataclass
class Summary:
    kind: str
    rows: int = 0  # rows handled (this rank's share of the usable rows)
    encoded: int = 0  # rows that got at least one new file
    files: int = 0  # files written
    skipped: int = 0  # rows whose files all existed
    no_bucket: int = 0  # rows no bucket of the table can take (vae with buckets)
    bad: List[Tuple[int, str]] = field(default_factory=list)  # (CSV line, message)
    folders: Dict[str, int] = field(default_factory=dict)  # folder -> files present for these rows
    meta: List[List[float]] = field(default_factory=list)  # (row index, frames, height, width, stride)

    @staticmethod
    def merge(parts: List["Summary"]) -> "Summary":
        out = Summary(parts[0].kind)
        folders = Counter()
        for s in parts:
            for k in ("rows", "encoded", "files", "skipped", "no_bucket"):
                setattr(out, k, getattr(out, k) + getattr(s, k))
            out.bad += [tuple(b) for b in s.bad]
            folders.update(s.folders)
            out.meta += s.meta
        out.bad.sort()
        out.meta.sort()
        out.folders = dict(sorted(folders.items()))
        return out


def _csv_problems(cfg, problems, summary: Summary, rank: int) -> None:
    """Row problems found while reading the CSV: fail, or count them once (rank 0)."""
    if not problems:
        return
    if not cfg.data.skip_bad:
        raise DataError(format_problems(cfg.data.csv_path, problems)
                        + "\nFix or remove these rows, or set data.skip_bad=true to skip (and count) them.")
    if rank == 0:
        summary.bad += problems


def _progress(cfg, rank: int, total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=not cfg.progress or rank != 0, dynamic_ncols=True, file=sys.stderr)


def clip_records(cfg, check_files: bool):
    """(records, root, problems) of the clips to encode: the CSV's rows, or with dpo.enabled the
    distinct clips of its preference pairs (each once, with its pairs' caption)."""
    if cfg.get("dpo") is not None and cfg.dpo.enabled:
        from ..data.preference import read_pairs

        records, _, root, problems = read_pairs(cfg.data, cfg.dpo.rejected_column, check_files=check_files,
                                                metadata=False)
        return records, root, problems
    return read_video_records(cfg.data, check_files=check_files, metadata=False)


def run_text(cfg, options: dict, rank: int = 0, world: int = 1) -> Summary:
    """Text embeddings of this rank's rows into <cache_dir>/text/ (and text/empty.npz on rank 0)."""
    d = cfg.data
    summary = Summary("text")
    records, root, problems = clip_records(cfg, check_files=False)  # no video needed
    _csv_problems(cfg, problems, summary, rank)
    folder = text_folder(d.cache_dir)
    manifest = text_cache_manifest(cfg.model, options["dtype"])
    check_existing(folder, manifest)  # before any work: never mix two encoders' outputs
    mine = [records[i] for i in rank_rows(len(records), rank, world)]
    todo = [(r, folder / (cache_name(r.path, root) + ".npz")) for r in mine]
    todo = [(r, path) for r, path in todo if not path.is_file()]
    summary.rows, summary.skipped = len(mine), len(mine) - len(todo)
    empty_path = folder / EMPTY_TEXT
    need_empty = rank == 0 and not empty_path.is_file()
    if todo or need_empty:
        ensure_manifest(folder, manifest)
        from ..models.encoders import TextEncoders

        # the online encoders' object and compile setting: both paths give the same arrays
        encode = TextEncoders.from_model_config(cfg.model, seed=ENCODER_SEED, jit=cfg.jit)
        dtype = DTYPES[options["dtype"]]
        with _progress(cfg, rank, len(todo), "caption") as bar:
            for start in range(0, len(todo), int(options["batch_size"])):
                chunk = todo[start:start + int(options["batch_size"])]
                out = encode([r.caption for r, _ in chunk], [is_image(r.path) for r, _ in chunk])
                for i, (_, path) in enumerate(chunk):
                    write_npz(path, **text_arrays(out, i, dtype))
                summary.encoded += len(chunk)
                summary.files += len(chunk)
                bar.update(len(chunk))
        if need_empty:  # caption dropout's empty prompt (the video template)
            write_npz(empty_path, **text_arrays(encode([""], [False]), 0, dtype))
    summary.folders = {folder.name: len(mine)}
    return summary


def text_arrays(out: dict, i: int, dtype) -> dict:
    """One caption's cache file arrays from a TextEncoders output: text_emb, mask[, text_pooled]."""
    arrays = {"text_emb": out["text_emb"][i].astype(dtype), "mask": out["text_mask"][i].astype(np.uint8)}
    if "text_pooled" in out:
        arrays["text_pooled"] = out["text_pooled"][i].astype(dtype)
    return arrays


def _vae_resolutions(cfg, buckets) -> List[Tuple[int, int]]:
    """Every (h, w) this config can cache at: the table's sizes, or data.resolution."""
    if buckets is None:
        return [tuple(int(v) for v in cfg.data.resolution)]
    from ..data.buckets import resolution_table

    sizes = []
    for res in buckets.resolutions:
        for hw in resolution_table(res)[1].values():
            if tuple(hw) not in sizes:
                sizes.append(tuple(hw))
    return sizes


def run_vae(cfg, options: dict, rank: int = 0, world: int = 1) -> Summary:
    """VAE latents of this rank's rows into <cache_dir>/latent_<h>x<w>/."""
    from ..models.encoders import vae_spec

    d, vcfg = cfg.data, cfg.model.vae
    spec = vae_spec(vcfg.name)
    summary = Summary("vae")
    records, root, problems = clip_records(cfg, check_files=True)
    _csv_problems(cfg, problems, summary, rank)
    buckets = make_buckets(d)
    weights = encoder_weights_id(vcfg, "vae")
    t = int(spec.compression[0])
    chunk = latent_chunk_frames(cfg.model)
    segment = segment_frames(buckets, d.num_frames, t, chunk) if t > 1 else None  # a causal / chunked VAE's segments
    manifests = {hw: latent_manifest(vcfg.name, weights, spec.channels, spec.compression, spec.scale, spec.shift,
                                     hw, options["dtype"], None if d.target_fps is not None else d.frame_stride,
                                     d.target_fps, segment_frames=segment)
                 for hw in _vae_resolutions(cfg, buckets)}
    for hw, manifest in manifests.items():  # before any work: never mix two VAEs' or strides' outputs
        check_existing(latent_folder(d.cache_dir, *hw), manifest)
    index = list(rank_rows(len(records), rank, world))
    mine = [records[i] for i in index]
    if buckets is not None:
        from ..data.video_records import fill_metadata

        # several workers would race on one probe cache file: only a single process keeps it
        probed, probe_problems = fill_metadata(mine, d.probe_cache if world == 1 else None)
        mine, strides, no_fps = strides_or_problems(probed, d.frame_stride, d.target_fps)
        mine, index = _keep_rows(index, records, mine, probe_problems + no_fps, cfg, summary)
        frames = [r.num_frames for r in mine]
        heights, widths = [r.height for r in mine], [r.width for r in mine]
        resolutions = assignable_resolutions(buckets, frames, heights, widths, strides)
        summary.meta = [[i, f, h, w, int(s)] for i, f, h, w, s in zip(index, frames, heights, widths, strides)]
    else:
        resolutions = [[tuple(int(v) for v in d.resolution)] for _ in mine]
    summary.rows = len(mine)
    ensured, vae, folders = set(), None, Counter()
    with _progress(cfg, rank, len(mine), "video") as bar:
        for rec, sizes in zip(mine, resolutions):
            bar.update(1)
            if not sizes:
                summary.no_bucket += 1
                continue
            name = cache_name(rec.path, root)
            paths = {hw: latent_folder(d.cache_dir, *hw) / (name + ".npz") for hw in sizes}
            todo = [hw for hw in sizes if not paths[hw].is_file()]
            folders.update(latent_folder(d.cache_dir, *hw).name for hw in sizes if hw not in todo)
            if not todo:
                summary.skipped += 1
                continue
            if vae is None:
                from ..models.encoders import build_vae

                vae = build_vae(vcfg, seed=ENCODER_SEED)
            try:
                for hw in todo:
                    if hw not in ensured:
                        ensure_manifest(latent_folder(d.cache_dir, *hw), manifests[hw])
                        ensured.add(hw)
                    arrays = encode_clip(vae, rec.path, frame_stride=d.frame_stride, target_fps=d.target_fps, size=hw,
                                         frames_per_call=vcfg.frames_per_call, t_compression=t,
                                         chunk_frames=int(options["chunk_frames"]), dtype=DTYPES[options["dtype"]],
                                         segment_frames=segment, vae_chunk=chunk)
                    write_npz(paths[hw], **arrays)
                    summary.files += 1
                    folders[latent_folder(d.cache_dir, *hw).name] += 1
            except DataError as e:
                if not d.skip_bad:
                    raise DataError(f"{d.csv_path} line {rec.line}: {e}\n{FIX_BAD_ROW}") from e
                summary.bad.append((rec.line, str(e)))
                continue
            summary.encoded += 1
    summary.folders = dict(folders)
    return summary


def latent_chunk_frames(model_cfg) -> int:
    """Frames per chunk of a chunked VAE (Step-Video's 17), else 0: read from the family's latent
    spec, the one the training reader checks the cache against (the denoiser is only declared)."""
    from ..models.registry import build_family

    return int(build_family(model_cfg).latent.chunk_frames)


def _keep_rows(index, records, kept, problems, cfg, summary):
    """(kept rows, their row indices); the rows dropped while probing are bad rows of this rank."""
    if problems and not cfg.data.skip_bad:
        raise DataError(format_problems(cfg.data.csv_path, sorted(problems)) + f"\n{FIX_BAD_ROW}")
    summary.bad += problems
    lines = {r.line for r in kept}
    return kept, [i for i in index if records[i].line in lines]


def encode_clip(vae, path: str, *, frame_stride: int, target_fps: Optional[float], size: Tuple[int, int],
                frames_per_call: int, t_compression: int, chunk_frames: int, dtype,
                segment_frames: Optional[int] = None, vae_chunk: int = 0) -> dict:
    """The cache file of one video at one size: latent_mean / latent_std, fps and ori_size (H, W).
    The clip is every frame taken at the stride. A per-frame VAE (t_compression 1) gives [F, C, h, w]
    over all of them, encoded chunk_frames at a time; a causal VAE gives [S, n, C, h, w]: S
    consecutive segments of segment_frames frames (one of the most 1 + t k frames there are when
    the clip is shorter), each encoded as a clip of its own. A chunked VAE (vae_chunk frames per
    chunk, Step-Video's 17) likewise, with segments of whole chunks (one frame when the clip has
    no whole chunk)."""
    from ..data.video import _open_video, resolve_stride, video_info

    _, height, width, fps = video_info(path)
    if is_image(path):
        step, count, fps = 1, 1, IMAGE_FPS
    else:
        step = resolve_stride(fps, None if target_fps is not None else frame_stride, target_fps, path)
        total = len(_open_video(path))  # decord's count: the frames read_clip can seek to
        if total < 1:
            raise DataError(f"{path}: the video has no frames")
        count = (total - 1) // step + 1  # frames at the stride
    if t_compression == 1:
        mean, std = _encode_frames(vae, path, step, 0, count, size, frames_per_call, chunk_frames)
    else:
        if vae_chunk and (not segment_frames or (segment_frames % vae_chunk and segment_frames != 1)):
            raise ValueError(f"segment_frames={segment_frames}: a chunked VAE's segments are whole chunks of "
                             f"{vae_chunk} frames")
        if not vae_chunk and (not segment_frames or (segment_frames - 1) % t_compression):
            raise ValueError(f"segment_frames={segment_frames}: a causal VAE's segments have 1 + {t_compression} k "
                             f"frames")
        length = segment_frames if count >= segment_frames else encodable_frames(count, t_compression, vae_chunk)
        segments = [_encode_frames(vae, path, step, first, length, size, frames_per_call, length)
                    for first in range(0, count - length + 1, length)]
        mean, std = (np.stack([seg[k] for seg in segments]) for k in (0, 1))
    return {"latent_mean": mean.astype(dtype), "latent_std": std.astype(dtype), "fps": np.float32(fps),
            "ori_size": np.array([height, width], np.int32)}


def _encode_frames(vae, path: str, step: int, first: int, count: int, size, frames_per_call: int, chunk: int):
    """(mean, std) [count, C, h, w] of `count` frames from frame `first` at `step`, encoded `chunk`
    frames per call (a causal VAE: the whole count in one call)."""
    import mindspore as ms

    from ..data.video import read_clip

    means, stds = [], []
    for start in range(first, first + count, chunk):
        n = min(chunk, first + count - start)
        clip = read_clip(path, n, stride=step, start=start * step, size=tuple(size))  # [n, 3, h, w]
        mean, std = vae.encode_video(ms.Tensor(np.ascontiguousarray(clip.transpose(1, 0, 2, 3))[None]),
                                     frames_per_call)
        means.append(mean.asnumpy()[0].transpose(1, 0, 2, 3))
        stds.append(std.asnumpy()[0].transpose(1, 0, 2, 3))
    return np.concatenate(means), np.concatenate(stds)


RUNNERS = {"text": run_text, "vae": run_vae}


# ---- report -----------------------------------------------------------------------------------------

def report(kind: str, cfg, summary: Summary) -> None:
    d = cfg.data
    line = (f"vgen-cache {kind}: {summary.rows} rows: encoded {summary.encoded} ({summary.files} files written), "
            f"skipped {summary.skipped} already cached, bad {len(summary.bad)}")
    if kind == "vae" and d.buckets:
        line += f", fitting no bucket {summary.no_bucket}"
    log.info("%s -> %s", line, d.cache_dir)
    if summary.bad:
        log.warning("bad rows skipped (data.skip_bad=true):\n%s", format_problems(d.csv_path, summary.bad))
    if kind == "vae":
        for folder, count in summary.folders.items():
            log.info("  %-20s %d cached videos of these rows", folder, count)
        if d.buckets and summary.meta:
            log.info("%s", bucket_histogram(cfg, summary.meta))


def bucket_histogram(cfg, meta) -> str:
    """How training (dp=1, no accumulation, this seed) would bucket the cached rows in epoch 0."""
    from ..data.buckets import BucketSampler, format_histogram

    buckets = make_buckets(cfg.data)
    _, frames, heights, widths, strides = (np.array(col) for col in zip(*meta))
    sampler = BucketSampler(buckets, frames, heights, widths, dp=1, accum=1, seed=cfg.seed, frame_interval=strides,
                            shuffle=True)
    try:
        text = format_histogram(sampler.histogram(0))
    except DataError as e:
        text = str(e)
    return f"bucket histogram ({cfg.data.buckets}, as one training worker sees it):\n{text}"


