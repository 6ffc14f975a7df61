"""Preference pairs for a DPO stage: a CSV whose rows are (caption, chosen video, rejected video),
the chosen clip in data.video_column (`chosen` by default), the rejected one in dpo.rejected_column
(`rejected`):

    caption,chosen,rejected
    a red fox in snow,videos/fox_a.mp4,videos/fox_b.mp4

The clips are the distinct videos of both columns, one record each (a clip may sit in several
pairs, as when several generations of one prompt are ranked), and they are read, cached and
encoded like any video data set: vgen-cache over this CSV (with dpo.enabled) encodes every clip
once, its caption being the prompt of its pairs. A sample is the chosen clip's sample (latent or
video, its text) plus the rejected clip as `latent_rejected` / `video_rejected`, both at the step's
bucket shape; the bucket is assigned by the chosen clip, so the rejected one must be as long.
Metadata columns (num_frames, height, ...) are not read: one row holds two videos, so they are probed."""
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .cached_video import (VideoDataset, cache_name, clip_dataset, duplicate_names, make_buckets,
                           strides_or_problems)
from .errors import DataError
from .video_records import VideoRecord, fill_metadata, read_records

Problem = Tuple[int, str]


def _column(data, key: str, default: str) -> str:
    return data.get(key) or default


def read_pairs(data, rejected_column: str, *, check_files: bool, metadata: bool
               ) -> Tuple[List[VideoRecord], List[Tuple[int, int, int]], str, List[Problem]]:
    """(clip records, pairs (CSV line, chosen clip, rejected clip), root, problems)."""
    root = data.get("root") or str(Path(data.csv_path).resolve().parent)
    if data.get("schema", "generic") != "generic":
        raise DataError(f"dpo: the pairs CSV {data.csv_path} uses the generic schema (caption, chosen, rejected "
                        f"columns); data.schema={data.schema!r}")
    caption = _column(data, "caption_column", "caption")
    sides = {}
    problems: List[Problem] = []
    for side, column in (("chosen", _column(data, "video_column", "chosen")), ("rejected", rejected_column)):
        records, bad = read_records(data.csv_path, root, video_column=column, caption_column=caption,
                                    check_files=check_files)
        sides[side] = {r.line: replace(r, num_frames=None, height=None, width=None, fps=None) for r in records}
        problems += [(line, f"{side} ({column}): {msg}") for line, msg in bad]
    clips: Dict[str, VideoRecord] = {}  # by cache name, in first-seen order
    named = []  # (line, chosen name, rejected name)
    for line in sorted(set(sides["chosen"]) & set(sides["rejected"])):
        w, l = sides["chosen"][line], sides["rejected"][line]
        names = cache_name(w.path, root), cache_name(l.path, root)
        if names[0] == names[1]:
            problems.append((line, f"{names[0]}: chosen and rejected are the same clip"))
            continue
        clash = [n for n, r in zip(names, (w, l)) if n in clips and clips[n].caption != r.caption]
        if clash:
            problems.append((line, f"{clash[0]}: caption differs from line {clips[clash[0]].line}'s; a clip has "
                                   f"one prompt (its cached text)"))
            continue
        for n, r in zip(names, (w, l)):
            clips.setdefault(n, r)
        named.append((line, *names))
    records, dups = duplicate_names(list(clips.values()), root)  # paths that differ but share a cache name
    problems += dups
    if metadata and records:
        records, probed = fill_metadata(records, data.get("probe_cache"))
        problems += probed
        records, _, no_fps = strides_or_problems(records, data.frame_stride, data.get("target_fps"))
        problems += no_fps
    position = {cache_name(r.path, root): i for i, r in enumerate(records)}
    pairs = []
    for line, w, l in named:
        lost = [n for n in (w, l) if n not in position]
        if lost:
            problems.append((line, f"{lost[0]}: the clip is unusable (its problem is listed with its first line)"))
        else:
            pairs.append((line, position[w], position[l]))
    return records, pairs, root, sorted(problems)


class PreferenceDataset:
    """Samples of pairs over a clip data set (VideoDataset or CachedVideoDataset): the chosen clip's
    sample plus `latent_rejected` (cached latents) or `video_rejected` (decoded, encoded online)."""

    def __init__(self, clips: VideoDataset, pairs: Sequence[Tuple[int, int, int]]):
        if not pairs:
            raise DataError(f"{clips.csv_path}: no usable preference pairs")
        self.clips, self.pairs = clips, list(pairs)
        chosen = [w for _, w, _ in self.pairs]
        self.buckets = clips.buckets
        pick = (lambda a: None if a is None else a[chosen])
        self.frames, self.heights, self.widths = pick(clips.frames), pick(clips.heights), pick(clips.widths)
        self.frame_intervals = pick(clips.frame_intervals)
        self.csv_path = clips.csv_path

    def __len__(self):
        return len(self.pairs)

    def describe(self, index: int) -> str:
        line, w, l = self.pairs[index]
        return f"{self.csv_path} line {line} (chosen {self.clips.names[w]}, rejected {self.clips.names[l]})"

    def empty_text(self) -> dict:
        return self.clips.empty_text()

    def get(self, index: int, rng, shape=None) -> dict:
        _, w, l = self.pairs[index]
        try:
            out = self.clips.get(w, rng, shape)
            rejected = self.clips.get(l, rng, shape)
        except DataError as e:
            raise DataError(f"{self.describe(index)}: {e}") from e
        key = "latent" if "latent" in rejected else "video"
        out[key + "_rejected"] = rejected[key]
        return out


def build_preference_dataset(data, rejected_column: str, text_spec=None, latent_spec=None, *, model=None,
                             text_weights=None, vae_weights=None) -> PreferenceDataset:
    """The pairs of data.csv_path over their clips, cached or online as data.latents / data.text say."""
    buckets = make_buckets(data)
    records, pairs, root, problems = read_pairs(data, rejected_column, check_files=data.get("latents") != "cache",
                                                metadata=buckets is not None)
    clips = clip_dataset(data, records, root, problems, buckets, text_spec, latent_spec, model=model,
                         text_weights=text_weights, vae_weights=vae_weights)
    return PreferenceDataset(clips, pairs)
