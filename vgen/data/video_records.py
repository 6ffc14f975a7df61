"""Video sample lists: CSV rows -> records (file path, caption, CSV line, optional metadata).

Schemas:
  generic  `video,caption` (the OpenSora tools' layout; Open-Sora's own `path,text` is accepted
           too), paths relative to `root` (default: the CSV's folder), optional columns
           num_frames,height,width,fps (metadata for bucket assignment without opening files).
  webvid   WebVid-10M's `videoid,name,page_dir,duration,contentUrl`: the video is
           <root>/<page_dir>/<videoid>.mp4 and the caption is `name`.
Rows whose file is missing or whose caption is empty come back as problems (csv line,
message); the caller fails with format_problems(...) or skips and counts them (data.skip_bad)."""
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .errors import DataError
from .records import read_csv

META_COLUMNS = ("num_frames", "height", "width", "fps")
Problem = Tuple[int, str]


@dataclass(frozen=True)
class VideoRecord:
    path: str
    caption: str
    line: int  # CSV line (the header is line 1)
    num_frames: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    fps: Optional[float] = None

    @property
    def has_metadata(self) -> bool:
        return None not in (self.num_frames, self.height, self.width)


def _columns(df, schema: str, video_column: Optional[str], caption_column: Optional[str]):
    if schema == "webvid":
        return None, "name"
    if video_column or caption_column:
        return video_column or "video", caption_column or "caption"
    if "video" not in df.columns and {"path", "text"} <= set(df.columns):
        return "path", "text"  # Open-Sora's own CSV layout
    return "video", "caption"


def _metadata(row, line: int, problems: List[Problem]) -> Optional[dict]:
    """Optional metadata columns of a row; None (and a problem) when one does not parse."""
    meta = {}
    for col in META_COLUMNS:
        raw = str(row.get(col, "")).strip()
        if not raw:
            meta[col] = None
            continue
        try:
            value = float(raw)
            if col != "fps":
                if value != int(value):
                    raise ValueError
                value = int(value)
            if value <= 0:
                raise ValueError
        except ValueError:
            problems.append((line, f"{col}={raw!r} is not a positive {'number' if col == 'fps' else 'integer'}"))
            return None
        meta[col] = value
    return meta


def read_records(csv_path: str, root: Optional[str] = None, schema: str = "generic", *,
                 video_column: Optional[str] = None, caption_column: Optional[str] = None,
                 check_files: bool = True) -> Tuple[List[VideoRecord], List[Problem]]:
    """Records of the usable rows and (csv line, message) for the others. check_files=False skips
    the per-row existence test (slow on network storage; missing files then fail when read)."""
    if schema not in ("generic", "webvid"):
        raise ValueError(f"data.schema={schema!r}: expected 'generic' or 'webvid'")
    if root is None:
        root = str(Path(csv_path).resolve().parent)
    df = read_csv(csv_path, ["videoid", "name", "page_dir"] if schema == "webvid" else [])
    video_col, caption_col = _columns(df, schema, video_column, caption_column)
    missing = [c for c in ([caption_col] if schema == "webvid" else [video_col, caption_col]) if c not in df.columns]
    if missing:
        raise DataError(f"CSV {csv_path} lacks column(s) {missing}; it has {[c for c in df.columns if c != '_line']}. "
                        f"Rename the columns or set data.video_column / data.caption_column.")
    records, problems = [], []
    for row in df.to_dict("records"):
        line = int(row["_line"])
        if schema == "webvid":
            videoid, page_dir = str(row["videoid"]).strip(), str(row["page_dir"]).strip()
            if not videoid or not page_dir:
                problems.append((line, "empty videoid or page_dir"))
                continue
            name = os.path.join(page_dir, videoid + ".mp4")
        else:
            name = str(row[video_col]).strip()
            if not name:
                problems.append((line, "empty video path"))
                continue
        path = os.path.join(root, name)  # an absolute `name` stays as it is
        caption = str(row[caption_col]).strip()
        if not caption:
            problems.append((line, f"{name}: empty caption"))
            continue
        if check_files and not os.path.isfile(path):
            problems.append((line, f"{name}: file not found at {path}"))
            continue
        meta = _metadata(row, line, problems)
        if meta is None:
            continue
        records.append(VideoRecord(path, caption, line, **meta))
    return records, problems


def _stat_key(path: str):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def fill_metadata(records: List[VideoRecord], cache_file: Optional[str] = None
                  ) -> Tuple[List[VideoRecord], List[Problem]]:
    """Records with (num_frames, height, width, fps) filled in: from the CSV when present, else
    probed with video_info and remembered in `cache_file` (JSON, keyed by path, size and mtime).
    Files that cannot be probed come back as problems with their CSV line."""
    from .video import video_info  # imports MindSpore and decord: only when probing is needed

    cache = {}
    if cache_file and os.path.isfile(cache_file):
        try:
            with open(cache_file) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            cache = {}  # a damaged cache is rebuilt
    out, problems, dirty = [], [], False
    for rec in records:
        if rec.has_metadata:  # fps is optional: read_clip takes it from the file when it needs it
            out.append(rec)
            continue
        try:
            key = _stat_key(rec.path)
            hit = cache.get(rec.path)
            if hit is not None and hit["stat"] == key:
                info = hit["info"]
            else:
                info = list(video_info(rec.path))
                cache[rec.path] = {"stat": key, "info": info}
                dirty = True
        except (DataError, OSError) as e:
            problems.append((rec.line, str(e)))
            continue
        frames, h, w, fps = info
        out.append(replace(rec, num_frames=rec.num_frames or int(frames), height=rec.height or int(h),
                           width=rec.width or int(w), fps=rec.fps or float(fps)))
    if cache_file and dirty:
        tmp = f"{cache_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, cache_file)  # readers never see a half-written cache
    return out, problems


def metadata_arrays(records: List[VideoRecord]):
    """(num_frames, height, width, fps) arrays for the bucket sampler; records need metadata."""
    lacking = [r.line for r in records if not r.has_metadata]
    if lacking:
        raise DataError(f"{len(lacking)} record(s) lack num_frames/height/width (CSV lines {lacking[:10]}...); "
                        f"run fill_metadata first")
    return (np.array([r.num_frames for r in records], np.int64), np.array([r.height for r in records], np.int64),
            np.array([r.width for r in records], np.int64),
            np.array([r.fps if r.fps is not None else 0.0 for r in records], np.float64))
