"""Training samples from a CSV of videos (data=video / data=webvid): decoded here for online
encoding (VideoDataset), or read from the caches vgen-cache writes (CachedVideoDataset: latents,
text embeddings, or both; the part not cached stays online).

`get(index, rng, shape)` takes the step's bucket shape (pixel frames, height, width) from
BucketSampler.shape_of(step), or None for the fixed data.num_frames x data.resolution. Every
random choice (the clip's start, the latent window, the latent noise) comes from `rng`, the
sample's keyed generator, so a sample is a pure function of (index, rng state, shape).

Cached latents: <cache_dir>/latent_<h>x<w>/<stem>.npz holds the VAE's mean and std of the clip
taken at data.frame_stride (or data.target_fps), and a sample draws latent = (mean + std * noise -
shift) * scale over as many latent frames as the bucket's pixel frames T give through the VAE's
temporal compression t (LatentSpec.latent_shape: T, or (T - 1) // t + 1 for a causal VAE):
  - a per-frame VAE (t = 1): [F, C, h, w], every frame; a random window of T latent frames;
  - a causal VAE (t = 4, HunyuanVideo): [S, n, C, h, w], S segments of the clip, each of
    segment_frames = 1 + t (n - 1) pixel frames encoded on its own (manifest.py). A sample takes a
    random segment and its first (T - 1) // t + 1 latents: latent 0 of a causal encoding is the
    first frame alone, so a window must start at a segment's start. When T equals segment_frames
    these are exactly the latents of the segment's T frames encoded as one clip; for a shorter T
    they are those of its first T frames with the VAE's GroupNorm statistics taken over the whole
    segment (close, not identical: hunyuan/vae.py). vgen-cache sets segment_frames to the longest
    clip the config trains on (data.num_frames, or the bucket table's most frames).
  - a chunked VAE (Step-Video's: LatentSpec.chunk_frames 17 -> 3 latents) is stored and read as a
    causal one, with segments of whole chunks (17 k frames -> 3 k latents). Chunks are encoded on
    their own, so the first 3 j latents of a segment are exactly those of its first 17 j frames.
A clip with a single cached latent frame (an image) stands for a still clip of any length."""
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .buckets import Buckets
from .cache import load_npz
from .errors import DataError
from .manifest import EMPTY_TEXT, check_latent_manifest, check_text_manifest, latent_folder, text_folder
from .records import format_problems
from .video_records import VideoRecord, fill_metadata, metadata_arrays, read_records

log = logging.getLogger("vgen")
Problem = Tuple[int, str]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # as data/video.py (not imported here: it loads decord)
IMAGE_FPS = 120.0
ONLINE_EMPTY_TEXT = {"caption": "", "is_image": False}  # the empty prompt, before encoding


def is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


# ---- geometry shared by the cache tool and the readers -------------------------------------------

def encodable_frames(pixel_frames: int, t_compression: int, chunk_frames: int = 0) -> int:
    """The most frames of a clip the VAE encodes whole: all of them, 1 + k t for a causal VAE
    (whose latent has (n - 1) / t + 1 frames, LatentSpec.latent_shape), or whole chunks for a
    chunked VAE (Step-Video's 17 frames; a single frame when there is no whole chunk, as the
    official pipeline's max(frames // 17 * 17, 1))."""
    n = int(pixel_frames)
    if chunk_frames:
        return max(n // int(chunk_frames) * int(chunk_frames), 1)
    return n if t_compression == 1 else 1 + int(t_compression) * ((n - 1) // int(t_compression))


def max_clip_frames(buckets: Optional[Buckets], num_frames: int) -> int:
    """The most pixel frames a training sample can take: the bucket table's largest frame count,
    or data.num_frames without buckets."""
    if buckets is None:
        return int(num_frames)
    return max(int(frames) for _, frames, _ in buckets.ids)


def segment_frames(buckets: Optional[Buckets], num_frames: int, t_compression: int, chunk_frames: int = 0) -> int:
    """Pixel frames per cached segment of a causal or chunked VAE: the longest training clip, cut to
    1 + t k frames (causal) or to whole chunks (chunked)."""
    return encodable_frames(max_clip_frames(buckets, num_frames), t_compression, chunk_frames)


def cache_name(path: str, root: str) -> str:
    """A sample's file name inside a cache folder: its path relative to the data root, without the
    extension (`videos/clip_00001`, WebVid's `<page_dir>/<videoid>`), as mindone's tools name them."""
    rel = os.path.relpath(path, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):  # an absolute path outside the root
        rel = os.path.abspath(path).lstrip(os.sep)
    return os.path.splitext(rel)[0]


def make_buckets(data) -> Optional[Buckets]:
    """The Buckets of data.buckets (frame interval data.frame_stride), or None without buckets."""
    if not data.get("buckets"):
        return None
    from .bucket_tables import load_bucket_table

    try:
        return Buckets(load_bucket_table(data.buckets), frame_interval=data.frame_stride)
    except ValueError as e:
        raise DataError(str(e)) from e


def sample_strides(records: Sequence[VideoRecord], frame_stride: int, target_fps: Optional[float]) -> np.ndarray:
    """Per sample, the stride between its sampled frames (the bucket assignment's frame interval)."""
    if target_fps is None:
        return np.full(len(records), int(frame_stride), np.int64)
    out = np.ones(len(records), np.int64)
    for i, r in enumerate(records):
        if r.num_frames == 1 or is_image(r.path):
            continue
        if not r.fps:
            raise DataError(f"line {r.line} ({r.path}): no fps, needed by data.target_fps; add an fps column or "
                            f"probe the videos (drop the CSV's metadata columns)")
        out[i] = max(1, int(round(r.fps / float(target_fps))))  # as data/video.py's resolve_stride
    return out


def assignable_resolutions(buckets: Buckets, frames, heights, widths, intervals=None) -> List[List[Tuple[int, int]]]:
    """Per sample, the (h, w) of every bucket resolution the sampler can assign it to: in each
    resolution whose pixel and frame conditions it meets with keep_prob > 0, its closest aspect
    ratio; resolutions after one that keeps it for sure (keep_prob 1) are never reached."""
    frames = np.asarray(frames, np.int64)
    n, nres = len(frames), len(buckets.resolutions)
    out: List[List[Tuple[int, int]]] = [[] for _ in range(n)]
    reachable = np.ones(n, bool)
    for r in range(nres):
        draws = np.ones((n, nres))  # 1.0 loses every keep draw (keep_prob <= 1) ...
        draws[:, r] = 0.0  # ... but this resolution's, which wins whenever keep_prob > 0
        codes = buckets.assign_codes(frames, heights, widths, draws, intervals)
        for i in np.nonzero((codes >= 0) & reachable)[0]:
            bucket = buckets.ids[int(codes[i])]
            _, h, w = buckets.shape(bucket)
            if (h, w) not in out[i]:
                out[i].append((h, w))
            if buckets.keep_prob(bucket) >= 1.0:
                reachable[i] = False
    return out


# ---- records --------------------------------------------------------------------------------------

def duplicate_names(records: Sequence[VideoRecord], root: str) -> Tuple[List[VideoRecord], List[Problem]]:
    """Records whose cache name is taken by an earlier row are problems (one file per name)."""
    seen, kept, problems = {}, [], []
    for r in records:
        name = cache_name(r.path, root)
        if name in seen:
            problems.append((r.line, f"{name}: same cache file name as line {seen[name]} (one cache file per "
                                     f"video; merge or drop the duplicate row)"))
            continue
        seen[name] = r.line
        kept.append(r)
    return kept, problems


def read_video_records(data, *, check_files: bool, metadata: bool
                       ) -> Tuple[List[VideoRecord], str, List[Problem]]:
    """(records, root, problems) of data.csv_path: rows that cannot be used come back as (CSV line,
    message). metadata=True fills (frames, height, width, fps) from the CSV or by probing the files
    (remembered in data.probe_cache)."""
    root = data.get("root") or str(Path(data.csv_path).resolve().parent)
    records, problems = read_records(data.csv_path, root, data.get("schema", "generic"),
                                     video_column=data.get("video_column"), caption_column=data.get("caption_column"),
                                     check_files=check_files)
    records, dups = duplicate_names(records, root)
    problems += dups
    if metadata and records:
        records, probed = fill_metadata(records, data.get("probe_cache"))
        problems += probed
        records, _, no_fps = strides_or_problems(records, data.frame_stride, data.get("target_fps"))
        problems += no_fps
    return records, root, sorted(problems)


def strides_or_problems(records: Sequence[VideoRecord], frame_stride: int, target_fps: Optional[float]
                        ) -> Tuple[List[VideoRecord], np.ndarray, List[Problem]]:
    """(records whose stride is known, their strides, (line, message) for the others)."""
    kept, strides, problems = [], [], []
    for r in records:
        try:
            strides.append(int(sample_strides([r], frame_stride, target_fps)[0]))
        except DataError as e:
            problems.append((r.line, str(e)))
            continue
        kept.append(r)
    return kept, np.array(strides, np.int64), problems


def settle_problems(csv_path: str, problems: List[Problem], skip_bad: bool) -> None:
    """Fails listing the bad rows, or (data.skip_bad) logs how many are skipped."""
    if not problems:
        return
    if not skip_bad:
        raise DataError(format_problems(csv_path, problems)
                        + "\nFix or remove these rows, or set data.skip_bad=true to skip them.")
    log.warning("skipping %d bad row(s) (data.skip_bad=true)\n%s", len(problems), format_problems(csv_path, problems))


# ---- data sets ------------------------------------------------------------------------------------

class VideoDataset:
    """Clips decoded from the videos: {"video" [3, T, H, W] float32 in [-1, 1], "caption", "fps",
    "height", "width", "num_frames"}; the trainer encodes video and caption with the frozen encoders."""

    def __init__(self, records: Sequence[VideoRecord], *, csv_path: str, root: str, num_frames: int = 16,
                 resolution=(256, 256), frame_stride: int = 1, target_fps: Optional[float] = None,
                 buckets: Optional[Buckets] = None, skipped_rows: int = 0):
        self.records = list(records)
        self.csv_path, self.root = csv_path, root
        self.num_frames, self.resolution = int(num_frames), (int(resolution[0]), int(resolution[1]))
        self.frame_stride, self.target_fps = int(frame_stride), target_fps
        self.buckets = buckets
        self.skipped_rows = skipped_rows
        if not self.records:
            raise DataError(f"{csv_path}: no usable rows (skipped {skipped_rows})")
        self.names = [cache_name(r.path, root) for r in self.records]
        # metadata for the BucketSampler (None when the records carry none: fixed-size training)
        self.frames = self.heights = self.widths = self.fps = self.frame_intervals = None
        if all(r.has_metadata for r in self.records):
            self.frames, self.heights, self.widths, self.fps = metadata_arrays(self.records)
            if buckets is not None:  # the assignment's frame interval per sample (needs fps with target_fps)
                self.frame_intervals = sample_strides(self.records, self.frame_stride, self.target_fps)

    def __len__(self):
        return len(self.records)

    def describe(self, index: int) -> str:
        r = self.records[index]
        return f"{self.csv_path} line {r.line} ({self.names[index]})"

    @property
    def default_shape(self) -> Tuple[int, int, int]:
        return (self.num_frames, *self.resolution)

    def _shape(self, shape) -> Tuple[int, int, int]:
        t, h, w = self.default_shape if shape is None else shape
        return int(t), int(h), int(w)

    def _fps(self, rec: VideoRecord) -> float:
        if rec.fps:
            return float(rec.fps)
        if is_image(rec.path):
            return IMAGE_FPS
        from .video import video_info

        return float(video_info(rec.path)[3])

    def _video(self, index: int, frames: int, h: int, w: int, rng) -> np.ndarray:
        from .video import read_clip

        rec = self.records[index]
        stride = None if self.target_fps is not None else self.frame_stride
        # what the record knows spares reading the file's header (decord decodes a frame for it)
        known = (rec.height, rec.width, rec.fps) if rec.height and rec.width and (rec.fps or stride) else None
        try:
            clip = read_clip(rec.path, frames, stride=stride, target_fps=self.target_fps, start=rng, size=(h, w),
                             known=known)
        except DataError as e:
            raise DataError(f"{self.describe(index)}: {e}") from e
        return np.ascontiguousarray(clip.transpose(1, 0, 2, 3))

    def _caption(self, rec: VideoRecord) -> dict:
        """The caption for online text encoding, as a numpy string so that a batch stacks the captions
        into an array (caption dropout sets entries of it), and whether the sample is an image file
        (HunyuanVideo's LLM encodes images with another prompt template)."""
        return {"caption": np.asarray(rec.caption), "is_image": is_image(rec.path)}

    def empty_text(self) -> dict:
        """Caption dropout to the empty prompt with online text encoding: the empty caption, encoded
        as text/empty.npz is (vgen-cache text: the video template)."""
        return dict(ONLINE_EMPTY_TEXT)

    def get(self, index: int, rng, shape=None) -> dict:
        frames, h, w = self._shape(shape)
        rec = self.records[index]
        video = self._video(index, frames, h, w, rng)
        return {"video": video, **self._caption(rec), "fps": self._fps(rec), "height": h, "width": w,
                "num_frames": frames}


class CachedVideoDataset(VideoDataset):
    """Samples from vgen-cache caches: {"latent" [C, T, h, w], "text_emb" [L, D], "text_mask" [L],
    ["text_pooled" [P] for a family with a pooled text vector,] "fps", "height", "width",
    "num_frames"}. With latents=False the sample has "video" instead of "latent" (decoded here,
    encoded online); with text=False "caption" instead of the embeddings.

    The manifests are checked once here, against the family's specs and, for latents, every
    resolution the bucket table can assign a sample to (or data.resolution without buckets)."""

    def __init__(self, records: Sequence[VideoRecord], *, cache_dir: str, text_spec=None, latent_spec=None,
                 latents: bool = True, text: bool = True, model: Optional[str] = None,
                 text_weights: Optional[str] = None, vae_weights: Optional[str] = None, **kw):
        super().__init__(records, **kw)
        if not (latents or text):
            raise ValueError("CachedVideoDataset reads latents, text, or both from the cache; use VideoDataset")
        if not cache_dir:
            raise DataError("data.cache_dir is not set: data.latents=cache / data.text=cache read the caches "
                            "vgen-cache writes there")
        self.cache_dir = str(cache_dir)
        self.latents_cached, self.text_cached = bool(latents), bool(text)
        self.text_spec, self.latent_spec = text_spec, latent_spec
        if self.text_cached:
            self.text_manifest = check_text_manifest(text_folder(cache_dir), text_spec, text_weights, model)
        if self.latents_cached:
            self.latent_manifests = {}
            for (h, w), count in self._needed_resolutions().items():
                folder = latent_folder(cache_dir, h, w)
                try:
                    self.latent_manifests[h, w] = check_latent_manifest(
                        folder, latent_spec, (h, w), self.frame_stride, self.target_fps, vae_weights, model,
                        max_frames=self._max_encoded_frames())
                except DataError as e:
                    raise DataError(f"{count} sample(s) train at {h}x{w}: {e}") from e
        self._empty_text = None

    def _max_encoded_frames(self) -> int:
        """The longest training clip; for a chunked VAE cut to whole chunks, the frames its latents
        cover (the manifest check counts segments in frames)."""
        frames = max_clip_frames(self.buckets, self.num_frames)
        chunk = int(getattr(self.latent_spec, "chunk_frames", 0) or 0)
        return encodable_frames(frames, self.latent_spec.compression[0], chunk) if chunk else frames

    def _needed_resolutions(self) -> dict:
        """{(h, w): number of samples that may train at it}."""
        if self.buckets is None:
            return {self.resolution: len(self)}
        if self.frames is None:
            raise DataError(f"{self.csv_path}: bucketed training needs num_frames/height/width per sample "
                            f"(CSV columns or probed files)")
        needed = {}
        for res in assignable_resolutions(self.buckets, self.frames, self.heights, self.widths, self.frame_intervals):
            for hw in res:
                needed[hw] = needed.get(hw, 0) + 1
        if not needed:
            raise DataError(f"{self.csv_path}: no sample fits any bucket of the table (check data.buckets against "
                            f"the videos' sizes and lengths)")
        return dict(sorted(needed.items()))

    def _file(self, folder: Path, index: int) -> str:
        return str(folder / (self.names[index] + ".npz"))

    def _load(self, path: str, keys, index: int) -> dict:
        try:
            return load_npz(path, keys)
        except DataError as e:
            raise DataError(f"{self.describe(index)}: {e}") from e

    def _latent(self, index: int, frames: int, h: int, w: int, rng):
        spec = self.latent_spec
        path = self._file(latent_folder(self.cache_dir, h, w), index)
        z = self._load(path, ("latent_mean", "latent_std", "fps"), index)
        mean, std = z["latent_mean"], z["latent_std"]
        c, n, lh, lw = spec.latent_shape(frames, h, w)  # n: the bucket's frames through the temporal compression
        causal = spec.compression[0] > 1
        layout = f"[S, n, {c}, {lh}, {lw}]" if causal else f"[F, {c}, {lh}, {lw}]"
        if mean.ndim != (5 if causal else 4) or tuple(mean.shape[-3:]) != (c, lh, lw) or std.shape != mean.shape \
                or 0 in mean.shape:
            raise DataError(f"{path} ({self.describe(index)}): latent_mean {list(mean.shape)}, latent_std "
                            f"{list(std.shape)}; expected {layout}: a damaged or foreign file, delete it and run "
                            f"vgen-cache vae again")
        if causal:  # a random segment, from its start (see the module doc)
            segment = int(rng.integers(0, mean.shape[0]))
            mean, std = mean[segment], std[segment]
        available = mean.shape[0]
        if available == 1:  # a still image stands for a still clip of any length
            idx = np.zeros(n, np.int64)
        elif available < n:
            raise DataError(f"{path} ({self.describe(index)}): {available} latent frames, the {frames}-frame bucket "
                            f"needs {n}: the clip is too short at this frame stride")
        elif causal:
            idx = np.arange(n)
        else:
            idx = int(rng.integers(0, available - n + 1)) + np.arange(n)
        m, s = mean[idx].astype(np.float32), std[idx].astype(np.float32)
        noise = rng.standard_normal(m.shape, dtype=np.float32)
        latent = (m + s * noise - np.float32(spec.shift)) * np.float32(spec.scale)
        return np.ascontiguousarray(latent.transpose(1, 0, 2, 3)), float(z["fps"])

    def _text(self, index: int) -> dict:
        return self._read_text(self._file(text_folder(self.cache_dir), index), index)

    def _read_text(self, path: str, index: Optional[int]) -> dict:
        where = f" ({self.describe(index)})" if index is not None else ""
        pooled_dim = int(getattr(self.text_spec, "pooled_dim", 0) or 0)
        try:
            t = load_npz(path, ("text_emb", "mask") + (("text_pooled",) if pooled_dim else ()))
        except DataError as e:
            raise DataError(f"{e}{where}") from e
        length, dim = int(self.text_spec.length), int(self.text_spec.dim)
        if t["text_emb"].shape != (length, dim) or t["mask"].shape != (length,):
            raise DataError(f"{path}{where}: text_emb {list(t['text_emb'].shape)}, mask {list(t['mask'].shape)}; "
                            f"expected [{length}, {dim}] / [{length}]: a damaged or foreign file, delete it and run "
                            f"vgen-cache text again")
        out = {"text_emb": t["text_emb"].astype(np.float32), "text_mask": t["mask"].astype(np.uint8)}
        if pooled_dim:
            pooled_length = int(getattr(self.text_spec, "pooled_length", 0) or 0)
            want = (pooled_length, pooled_dim) if pooled_length else (pooled_dim,)
            if t["text_pooled"].shape != want:
                raise DataError(f"{path}{where}: text_pooled {list(t['text_pooled'].shape)}; expected {list(want)} "
                                f"(the family's second text input): a damaged or foreign file, delete it and run "
                                f"vgen-cache text again")
            out["text_pooled"] = t["text_pooled"].astype(np.float32)
        return out

    def empty_text(self) -> dict:
        """The empty prompt's {"text_emb", "text_mask"[, "text_pooled"]} (text/empty.npz), for families
        whose caption dropout feeds the encoded empty string; the empty caption with online text."""
        if not self.text_cached:
            return super().empty_text()
        if self._empty_text is None:
            self._empty_text = self._read_text(str(text_folder(self.cache_dir) / EMPTY_TEXT), None)
        return self._empty_text

    def get(self, index: int, rng, shape=None) -> dict:
        frames, h, w = self._shape(shape)
        rec = self.records[index]
        out = {}
        if self.latents_cached:
            out["latent"], fps = self._latent(index, frames, h, w, rng)
        else:
            out["video"], fps = self._video(index, frames, h, w, rng), self._fps(rec)
        if self.text_cached:
            out.update(self._text(index))
        else:
            out.update(self._caption(rec))
        out.update(fps=fps, height=h, width=w, num_frames=frames)
        return out


def build_video_dataset(data, text_spec=None, latent_spec=None, *, model: Optional[str] = None,
                        text_weights: Optional[str] = None, vae_weights: Optional[str] = None) -> VideoDataset:
    """The data set of a data=video / data=webvid config: VideoDataset when latents and text are
    both online, else CachedVideoDataset (checked against the family's text and latent specs)."""
    modes = {"latents": data.get("latents", "online"), "text": data.get("text", "online")}
    for key, value in modes.items():
        if value not in ("online", "cache"):
            raise DataError(f"data.{key}={value!r}: expected online or cache")
    buckets = make_buckets(data)
    # cached latents need no video files, only their metadata (CSV columns, or probed earlier)
    records, root, problems = read_video_records(data, check_files=modes["latents"] != "cache",
                                                 metadata=buckets is not None)
    return clip_dataset(data, records, root, problems, buckets, text_spec, latent_spec, model=model,
                        text_weights=text_weights, vae_weights=vae_weights)


def clip_dataset(data, records, root: str, problems: List[Problem], buckets, text_spec=None, latent_spec=None, *,
                 model=None, text_weights=None, vae_weights=None) -> VideoDataset:
    """The data set of these records once their problems are settled (failed on, or skipped)."""
    settle_problems(data.csv_path, problems, bool(data.get("skip_bad", False)))
    latents_cached, text_cached = data.get("latents") == "cache", data.get("text") == "cache"
    common = dict(csv_path=data.csv_path, root=root, num_frames=data.num_frames, resolution=data.resolution,
                  frame_stride=data.frame_stride, target_fps=data.get("target_fps"), buckets=buckets,
                  skipped_rows=len(problems))
    if not (latents_cached or text_cached):
        return VideoDataset(records, **common)
    return CachedVideoDataset(records, cache_dir=data.get("cache_dir"), text_spec=text_spec, latent_spec=latent_spec,
                              latents=latents_cached, text=text_cached, model=model, text_weights=text_weights,
                              vae_weights=vae_weights, **common)
