"""Decoding video clips (decord) and images (Pillow) into model-ready frames.

A clip is `num_frames` frames taken every `stride` frames (or at the stride that brings the
video's fps down to `target_fps`) from a start frame, resized so that the bucket's (h, w) is
covered with the aspect kept, then center-cropped to (h, w), as Open-Sora's `resize_crop`
transform does. Output: float32 [T, 3, h, w] in [-1, 1]. Images are 1-frame clips."""
import os
from typing import Optional, Tuple

import numpy as np
# MindSpore must be imported before decord: with decord first, the process aborts when MindSpore
# loads ("random_device could not be read").
import mindspore  # noqa: F401  (import order only)
import decord

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
IMAGE_FPS = 120.0  # the fps Open-Sora 1.1 reports for images


def is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")


def _open_video(path: str, width: int = -1, height: int = -1) -> "decord.VideoReader":
    _check_exists(path)
    try:
        return decord.VideoReader(path, width=width, height=height)
    except Exception as e:  # decord raises RuntimeError / DECORDError / AssertionError for bad files
        raise DataError(f"{path}: unreadable video ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e


def _open_image(path: str):
    from PIL import Image  # Pillow comes with MindSpore; decord cannot read still images

    _check_exists(path)
    try:
        img = Image.open(path)
        img.load()
        return img.convert("RGB")
    except Exception as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e


def _header_info(path: str) -> Optional[Tuple[int, int, int, float]]:
    """Frame count, size and fps from the container header with PyAV, if installed (no decoding,
    no demuxing of the whole file); None when PyAV is absent or the header lacks a field."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            frames, rate = int(stream.frames), stream.average_rate
            h, w = int(stream.codec_context.height), int(stream.codec_context.width)
    except Exception:
        return None  # let decord judge the file
    if frames <= 0 or not rate or h <= 0 or w <= 0:
        return None
    return frames, h, w, float(rate)


def video_info(path: str) -> Tuple[int, int, int, float]:
    """(num_frames, height, width, fps) of a video or image, for bucket assignment. Read from the
    header (PyAV when installed, else decord's index plus one decoded frame for the size)."""
    if is_image(path):
        _check_exists(path)
        from PIL import Image

        try:
            with Image.open(path) as img:  # reads the header only
                w, h = img.size
        except Exception as e:
            raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e
        return 1, h, w, IMAGE_FPS
    _check_exists(path)
    info = _header_info(path)
    if info is not None:
        return info
    vr = _open_video(path)
    try:
        h, w = vr[0].shape[:2]
    except Exception as e:
        raise DataError(f"{path}: unreadable video, cannot decode the first frame ({type(e).__name__}: {e})") from e
    return len(vr), int(h), int(w), float(vr.get_avg_fps())


def resize_crop_geometry(height: int, width: int, target_h: int, target_w: int) -> Tuple[int, int, int, int]:
    """(resized_h, resized_w, top, left): scale so the target is covered with the aspect kept,
    then crop the target from the middle (Open-Sora's resize_crop_to_fill)."""
    rh, rw = target_h / height, target_w / width
    if rh > rw:  # height is the tight side: it fits exactly, the width overhangs
        sh, sw = target_h, round(width * rh)
        return sh, sw, 0, (sw - target_w) // 2
    sh, sw = round(height * rw), target_w
    return sh, sw, (sh - target_h) // 2, 0


def resolve_stride(video_fps: float, stride: Optional[int] = None, target_fps: Optional[float] = None,
                   path: str = "") -> int:
    """Frame stride: given, or the one that brings video_fps nearest to target_fps (at least 1)."""
    if stride is not None and target_fps is not None:
        raise ValueError("give either stride or target_fps, not both")
    if target_fps is None:
        return 1 if stride is None else int(stride)
    if not video_fps or video_fps <= 0:
        raise DataError(f"{path}: the video reports no fps, cannot sample at target_fps={target_fps}; "
                        f"use a fixed frame stride instead")
    return max(1, int(round(video_fps / target_fps)))


def frame_indices(total: int, num_frames: int, stride: int, start=None, path: str = "") -> np.ndarray:
    """Indices start, start + stride, ... (num_frames of them). `start`: None (the first frame),
    an int, or a numpy Generator (uniform over the valid starts)."""
    if stride < 1 or num_frames < 1:
        raise ValueError(f"need num_frames >= 1 and stride >= 1, got {num_frames}, {stride}")
    span = (num_frames - 1) * stride + 1
    if total < span:
        raise DataError(f"{path}: {total} frames, too short for {num_frames} frames at stride {stride} "
                        f"(needs {span})")
    last_start = total - span
    if start is None:
        first = 0
    elif isinstance(start, np.random.Generator):
        first = int(start.integers(0, last_start + 1))
    else:
        first = int(start)
        if not 0 <= first <= last_start:
            raise ValueError(f"{path}: start {first} outside [0, {last_start}] for {num_frames} frames at "
                             f"stride {stride} of {total}")
    return first + stride * np.arange(num_frames)


def _to_model_range(frames_uint8: np.ndarray) -> np.ndarray:
    """[T, h, w, 3] uint8 -> [T, 3, h, w] float32 in [-1, 1]."""
    x = frames_uint8.astype(np.float32) * (2.0 / 255.0) - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _read_image(path: str, num_frames: int, size) -> np.ndarray:
    from PIL import Image

    img = _open_image(path)
    if size is not None:
        sh, sw, top, left = resize_crop_geometry(img.height, img.width, *size)
        img = img.resize((sw, sh), Image.BICUBIC).crop((left, top, left + size[1], top + size[0]))
    frame = np.asarray(img, np.uint8)[None]
    # an image stands for a still clip when more than one frame is asked for (Open-Sora 1.0 repeats it)
    return _to_model_range(np.repeat(frame, num_frames, axis=0))


def read_clip(path: str, num_frames: int, stride: Optional[int] = None, target_fps: Optional[float] = None,
              start=None, size: Optional[Tuple[int, int]] = None, known=None) -> np.ndarray:
    """float32 [num_frames, 3, h, w] in [-1, 1] (size=None keeps the native size).

    Frames: every `stride`-th frame (default 1), or the stride derived from the video's fps when
    `target_fps` is given, from `start` (None: the first frame; int; or a Generator for a random
    start). `known`: (height, width, fps) the caller already has (CSV columns or a probe): the file
    is then opened once, at the size it is decoded to. Raises DataError naming the file when it is
    missing, unreadable or too short."""
    if is_image(path):
        return _read_image(path, num_frames, size)
    h, w, fps = known if known is not None else video_info(path)[1:]  # decord's frame count is checked below
    step = resolve_stride(fps, stride, target_fps, path)
    if size is None:
        sh, sw, top, left = h, w, 0, 0
        vr = _open_video(path)
    else:
        sh, sw, top, left = resize_crop_geometry(h, w, *size)
        vr = _open_video(path, width=sw, height=sh)  # decord resizes while decoding (cheaper than after)
    idx = frame_indices(len(vr), num_frames, step, start, path)  # decord's count: what it can seek to
    frames = _decode(vr, path, idx, sh, sw)
    if size is not None:
        frames = frames[:, top:top + size[0], left:left + size[1]]
    return _to_model_range(frames)


def _decode(vr, path: str, idx: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [T, height, width, 3] frames at `idx` from a reader opened at that size."""
    try:
        return vr.get_batch(idx.tolist()).asnumpy()
    except Exception as e:
        error = e
    if "DECORDArrayCopyFromTo" in str(error):
        # decord 0.6 cannot copy out frames of a few narrow widths (16, 24, 48, 72 px seen): decode at
        # k times the size and average k x k blocks back down (a box resize; exact on flat areas)
        for k in (2, 3):
            try:
                big = decord.VideoReader(path, width=k * width, height=k * height).get_batch(idx.tolist()).asnumpy()
            except Exception:
                continue
            t = big.shape[0]
            blocks = big.reshape(t, height, k, width, k, 3).astype(np.float32).mean(axis=(2, 4))
            return np.clip(np.rint(blocks), 0, 255).astype(np.uint8)
    raise DataError(f"{path}: cannot decode frames {idx[0]}..{idx[-1]} of {len(vr)} "
                    f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error
