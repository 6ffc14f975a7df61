"""Open-Sora 1.1 buckets: which (frames, height, width) a sample is trained at, and the batches
that keep every data-parallel rank on the same bucket at each step.

A bucket spec is `{resolution: {num_frames: [keep_prob, batch_size]}}` (Open-Sora 1.1's
`bucket_config`, e.g. `"240p": {16: [0.3, 2]}`); each (resolution, num_frames) entry holds one
bucket per aspect ratio of that resolution's table. A bucket id is the triple
(resolution, num_frames, aspect-ratio key), as the official `get_bucket_id` returns it.

Assignment follows `get_bucket_id` (opensora/datasets/bucket.py, v1.1.0): resolutions are tried
from the most pixels down; one is eligible when the sample has at least 80% of its pixels; an
image (1 frame) takes that resolution's 1-frame entry, a video the largest entry n != 1 with
frames > n x frame_interval; the entry is kept with probability keep_prob, otherwise the next
resolution is tried; the aspect ratio is the table key closest to height / width. The keep
draws are ours: one uniform per (sample, resolution), keyed by (seed, epoch).

Besides the official resolution names, "<N>px" (e.g. "64px") names a small table of the same
aspect keys at N x N pixels, for tiny models and the quickstart data (not official)."""
import logging
import math
import re
import threading
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import DataError

log = logging.getLogger("vgen")

# Open-Sora 1.1 (opensora/datasets/aspect.py): resolution -> (pixel count, {aspect key: (height, width)}).
# Aspect keys are height / width rounded as the official writes them; their order is the official one
# (it breaks ties in the closest-ratio search). "256", "512", "1024" are PixArt's image tables.
ASPECT_RATIOS: Dict[str, Tuple[int, Dict[str, Tuple[int, int]]]] = {
    "144p": (36864, {
        "0.38": (117, 312), "0.43": (125, 291), "0.48": (133, 277), "0.50": (135, 270), "0.53": (139, 262),
        "0.54": (141, 260), "0.56": (144, 256), "0.62": (151, 241), "0.67": (156, 234), "0.75": (166, 221),
        "1.00": (192, 192), "1.33": (221, 165), "1.50": (235, 156), "1.78": (256, 144), "1.89": (263, 139),
        "2.00": (271, 135), "2.08": (277, 132),
    }),
    "256": (65536, {
        "0.25": (128, 512), "0.26": (128, 496), "0.27": (128, 480), "0.28": (128, 464), "0.32": (144, 448),
        "0.33": (144, 432), "0.35": (144, 416), "0.4": (160, 400), "0.42": (160, 384), "0.48": (176, 368),
        "0.5": (176, 352), "0.52": (176, 336), "0.57": (192, 336), "0.6": (192, 320), "0.68": (208, 304),
        "0.72": (208, 288), "0.78": (224, 288), "0.82": (224, 272), "0.88": (240, 272), "0.94": (240, 256),
        "1.0": (256, 256), "1.07": (256, 240), "1.13": (272, 240), "1.21": (272, 224), "1.29": (288, 224),
        "1.38": (288, 208), "1.46": (304, 208), "1.67": (320, 192), "1.75": (336, 192), "2.0": (352, 176),
        "2.09": (368, 176), "2.4": (384, 160), "2.5": (400, 160), "2.89": (416, 144), "3.0": (432, 144),
        "3.11": (448, 144), "3.62": (464, 128), "3.75": (480, 128), "3.88": (496, 128), "4.0": (512, 128),
    }),
    "240p": (102240, {
        "0.38": (196, 522), "0.43": (210, 490), "0.48": (222, 462), "0.50": (226, 452), "0.53": (232, 438),
        "0.54": (236, 436), "0.56": (240, 426), "0.62": (252, 404), "0.67": (262, 393), "0.75": (276, 368),
        "1.00": (320, 320), "1.33": (370, 278), "1.50": (392, 262), "1.78": (426, 240), "1.89": (440, 232),
        "2.00": (452, 226), "2.08": (462, 222),
    }),
    "360p": (230400, {
        "0.38": (294, 784), "0.43": (314, 732), "0.48": (332, 692), "0.50": (340, 680), "0.53": (350, 662),
        "0.54": (352, 652), "0.56": (360, 640), "0.62": (380, 608), "0.67": (392, 588), "0.75": (416, 554),
        "1.00": (480, 480), "1.33": (554, 416), "1.50": (588, 392), "1.78": (640, 360), "1.89": (660, 350),
        "2.00": (678, 340), "2.08": (692, 332),
    }),
    "512": (262144, {
        "0.25": (256, 1024), "0.26": (256, 992), "0.27": (256, 960), "0.28": (256, 928), "0.32": (288, 896),
        "0.33": (288, 864), "0.35": (288, 832), "0.4": (320, 800), "0.42": (320, 768), "0.48": (352, 736),
        "0.5": (352, 704), "0.52": (352, 672), "0.57": (384, 672), "0.6": (384, 640), "0.68": (416, 608),
        "0.72": (416, 576), "0.78": (448, 576), "0.82": (448, 544), "0.88": (480, 544), "0.94": (480, 512),
        "1.0": (512, 512), "1.07": (512, 480), "1.13": (544, 480), "1.21": (544, 448), "1.29": (576, 448),
        "1.38": (576, 416), "1.46": (608, 416), "1.67": (640, 384), "1.75": (672, 384), "2.0": (704, 352),
        "2.09": (736, 352), "2.4": (768, 320), "2.5": (800, 320), "2.89": (832, 288), "3.0": (864, 288),
        "3.11": (896, 288), "3.62": (928, 256), "3.75": (960, 256), "3.88": (992, 256), "4.0": (1024, 256),
    }),
    "480p": (409920, {
        "0.38": (392, 1046), "0.43": (420, 980), "0.48": (444, 925), "0.50": (452, 904), "0.53": (466, 880),
        "0.54": (470, 870), "0.56": (480, 854), "0.62": (506, 810), "0.67": (522, 784), "0.75": (554, 738),
        "1.00": (640, 640), "1.33": (740, 555), "1.50": (784, 522), "1.78": (854, 480), "1.89": (880, 466),
        "2.00": (906, 454), "2.08": (924, 444),
    }),
    "720p": (921600, {
        "0.38": (588, 1568), "0.43": (628, 1466), "0.48": (666, 1388), "0.50": (678, 1356), "0.53": (698, 1318),
        "0.54": (706, 1306), "0.56": (720, 1280), "0.62": (758, 1212), "0.67": (784, 1176), "0.75": (832, 1110),
        "1.00": (960, 960), "1.33": (1108, 832), "1.50": (1176, 784), "1.78": (1280, 720), "1.89": (1320, 698),
        "2.00": (1358, 680), "2.08": (1386, 666),
    }),
    "1024": (1048576, {
        "0.25": (512, 2048), "0.26": (512, 1984), "0.27": (512, 1920), "0.28": (512, 1856), "0.32": (576, 1792),
        "0.33": (576, 1728), "0.35": (576, 1664), "0.4": (640, 1600), "0.42": (640, 1536), "0.48": (704, 1472),
        "0.5": (704, 1408), "0.52": (704, 1344), "0.57": (768, 1344), "0.6": (768, 1280), "0.68": (832, 1216),
        "0.72": (832, 1152), "0.78": (896, 1152), "0.82": (896, 1088), "0.88": (960, 1088), "0.94": (960, 1024),
        "1.0": (1024, 1024), "1.07": (1024, 960), "1.13": (1088, 960), "1.21": (1088, 896), "1.29": (1152, 896),
        "1.38": (1152, 832), "1.46": (1216, 832), "1.67": (1280, 768), "1.75": (1344, 768), "2.0": (1408, 704),
        "2.09": (1472, 704), "2.4": (1536, 640), "2.5": (1600, 640), "2.89": (1664, 576), "3.0": (1728, 576),
        "3.11": (1792, 576), "3.62": (1856, 512), "3.75": (1920, 512), "3.88": (1984, 512), "4.0": (2048, 512),
    }),
    "1080p": (2073600, {
        "0.38": (882, 2352), "0.43": (942, 2198), "0.48": (998, 2080), "0.50": (1018, 2036), "0.53": (1048, 1980),
        "0.54": (1058, 1958), "0.56": (1080, 1920), "0.62": (1138, 1820), "0.67": (1176, 1764), "0.75": (1248, 1664),
        "1.00": (1440, 1440), "1.33": (1662, 1246), "1.50": (1764, 1176), "1.78": (1920, 1080), "1.89": (1980, 1048),
        "2.00": (2036, 1018), "2.08": (2078, 998),
    }),
    "4k": (8294400, {
        "0.38": (1764, 4704), "0.43": (1886, 4400), "0.48": (1996, 4158), "0.50": (2036, 4072), "0.53": (2096, 3960),
        "0.54": (2118, 3918), "0.62": (2276, 3642), "0.56": (2160, 3840), "0.67": (2352, 3528), "0.75": (2494, 3326),
        "1.00": (2880, 2880), "1.33": (3326, 2494), "1.50": (3528, 2352), "1.78": (3840, 2160), "1.89": (3958, 2096),
        "2.00": (4072, 2036), "2.08": (4156, 1994),
    }),
}

MIN_PIXEL_FRACTION = 0.8  # a resolution is eligible down to 80% of its pixels (official `approx`)
NO_BUCKET, KEPT_OUT = -1, -2  # assignment codes: no eligible entry / every eligible entry lost its keep draw
BucketId = Tuple[str, int, str]  # (resolution, num_frames, aspect key)
SMALL_MULTIPLE = 16


def small_table(side: int, multiple: int = SMALL_MULTIPLE) -> Tuple[int, Dict[str, Tuple[int, int]]]:
    """A table for tiny models and test data (ours, not official): the 144p aspect keys at
    side x side pixels, heights and widths rounded to multiples of `multiple` (VAE 8 x patch 2)."""
    pixels = side * side
    table = {}
    for key in ASPECT_RATIOS["144p"][1]:
        ar = float(key)
        h = max(multiple, int(round(math.sqrt(pixels * ar) / multiple)) * multiple)
        w = max(multiple, int(round(math.sqrt(pixels / ar) / multiple)) * multiple)
        table[key] = (h, w)
    return pixels, table


def resolution_table(name: str) -> Tuple[int, Dict[str, Tuple[int, int]]]:
    """(pixel count, {aspect key: (h, w)}) of an official resolution name or of "<N>px"."""
    if name in ASPECT_RATIOS:
        return ASPECT_RATIOS[name]
    m = re.fullmatch(r"(\d+)px", name)
    if m and int(m.group(1)) >= 16:
        return small_table(int(m.group(1)))
    raise ValueError(f"data.buckets: unknown resolution {name!r}; known: {list(ASPECT_RATIOS)} or '<N>px' "
                     f"(N x N pixels, for tiny models)")


def bucket_name(bucket: BucketId) -> str:
    res, frames, ar = bucket
    return f"{res}/{frames}f/{ar}"


def _parse_spec(spec) -> "OrderedDict[str, List[Tuple[int, float, Optional[int]]]]":
    """{resolution: [(num_frames, keep_prob, batch_size)]}, resolutions by pixels and frames
    both descending (the order the official tries them in)."""
    if not spec:
        raise ValueError("data.buckets is empty: give {resolution: {num_frames: [keep_prob, batch_size]}}")
    for r in spec:
        resolution_table(str(r))  # fails on an unknown name
    out = OrderedDict()
    for res in sorted((str(r) for r in spec), key=lambda r: resolution_table(r)[0], reverse=True):
        entries = []
        for t, value in dict(spec[res]).items():
            where = f"data.buckets.{res}.{t}"
            try:
                frames = int(t)
                keep_prob, batch_size = value
                keep_prob = float(keep_prob)
                batch_size = None if batch_size is None else int(batch_size)
            except (TypeError, ValueError):
                raise ValueError(f"{where}={value!r}: expected [keep_prob, batch_size] with an integer frame count")
            if frames < 1 or not 0.0 <= keep_prob <= 1.0:
                raise ValueError(f"{where}: need num_frames >= 1 and 0 <= keep_prob <= 1, got {frames}, {keep_prob}")
            if keep_prob > 0 and (batch_size is None or batch_size < 1):
                raise ValueError(f"{where}: keep_prob {keep_prob} > 0 needs a batch size >= 1, got {batch_size}")
            entries.append((frames, keep_prob, batch_size))
        out[res] = sorted(entries, key=lambda e: e[0], reverse=True)
    return out


class Buckets:
    """The buckets of a spec and the assignment of samples to them."""

    def __init__(self, spec, frame_interval: int = 1):
        self.spec = _parse_spec(spec)
        self.frame_interval = int(frame_interval)
        self.resolutions = list(self.spec)
        self.ids: List[BucketId] = []
        self._first_code = {}  # (resolution, entry index) -> code of its first aspect ratio
        self._ratios = {}  # resolution -> aspect keys as floats, in table order
        for res, entries in self.spec.items():
            table = resolution_table(res)[1]
            self._ratios[res] = np.array([float(k) for k in table], np.float64)
            for e, (frames, _, _) in enumerate(entries):
                self._first_code[res, e] = len(self.ids)
                self.ids.extend((res, frames, ar) for ar in table)
        self.code_of = {b: c for c, b in enumerate(self.ids)}
        self.batch_sizes = np.array([self.batch_size(b) or 0 for b in self.ids], np.int64)

    def __len__(self):
        return len(self.ids)

    def _entry(self, bucket: BucketId):
        res, frames, _ = bucket
        return next(e for e in self.spec[res] if e[0] == frames)

    def shape(self, bucket: BucketId) -> Tuple[int, int, int]:
        """(num_frames, height, width) that samples of the bucket are decoded to."""
        res, frames, ar = bucket
        h, w = resolution_table(res)[1][ar]
        return frames, h, w

    def batch_size(self, bucket: BucketId) -> Optional[int]:
        return self._entry(bucket)[2]

    def keep_prob(self, bucket: BucketId) -> float:
        return self._entry(bucket)[1]

    def assign(self, num_frames: int, height: int, width: int, rng=None, frame_interval=None) -> Optional[BucketId]:
        """The bucket of one sample, or None. `rng` gives one uniform per resolution (None: every
        keep draw succeeds, so only keep_prob == 0 rejects)."""
        draws = np.zeros((1, len(self.resolutions))) if rng is None else rng.random((1, len(self.resolutions)))
        code = int(self.assign_codes([num_frames], [height], [width], draws, frame_interval)[0])
        return self.ids[code] if code >= 0 else None

    def assign_codes(self, frames, heights, widths, draws, frame_interval=None) -> np.ndarray:
        """Vectorised assignment: bucket codes (indices into `ids`), NO_BUCKET or KEPT_OUT.
        draws[i, r] is sample i's keep draw at resolution r (in `resolutions` order);
        frame_interval (scalar or per sample) defaults to the one given at construction."""
        frames = np.asarray(frames, np.int64)
        pixels = np.asarray(heights, np.int64) * np.asarray(widths, np.int64)
        aspect = np.asarray(heights, np.float64) / np.maximum(np.asarray(widths, np.float64), 1)
        interval = np.broadcast_to(np.asarray(self.frame_interval if frame_interval is None else frame_interval,
                                              np.int64), frames.shape)
        draws = np.asarray(draws, np.float64)
        codes = np.full(frames.shape, NO_BUCKET, np.int64)
        open_ = (frames >= 1) & (pixels > 0)
        is_image = frames == 1
        for r, res in enumerate(self.resolutions):
            entries = self.spec[res]
            eligible = open_ & (pixels >= resolution_table(res)[0] * MIN_PIXEL_FRACTION)
            entry = np.full(frames.shape, -1, np.int64)
            # videos: the largest frame count n != 1 with frames > n x interval (visit ascending, largest wins)
            for e in reversed(range(len(entries))):
                n = entries[e][0]
                if n != 1:
                    entry[eligible & ~is_image & (frames > n * interval)] = e
                else:  # images only ever take the 1-frame entry
                    entry[eligible & is_image] = e
            candidate = entry >= 0
            codes[candidate] = KEPT_OUT
            probs = np.array([p for _, p, _ in entries])
            keep = candidate & (draws[:, r] < probs[np.maximum(entry, 0)])
            if keep.any():
                ratios = self._ratios[res]
                closest = np.argmin(np.abs(ratios[None, :] - aspect[keep][:, None]), axis=1)  # first on ties
                first = np.array([self._first_code[res, e] for e in range(len(entries))])
                codes[keep] = first[entry[keep]] + closest
            open_ &= ~keep
        return codes


class EpochPlan:
    """One epoch's batches: every bucket's members shuffled, cut into global batches, and the
    batches shuffled across buckets. Batch k is chunk `batch_chunk[k]` of bucket `batch_code[k]`."""

    def __init__(self, epoch, codes, members, batch_code, batch_chunk):
        self.epoch = epoch
        self.codes = codes  # per sample: bucket code, NO_BUCKET or KEPT_OUT
        self.members = members  # {code: shuffled data-set indices}
        self.batch_code, self.batch_chunk = batch_code, batch_chunk

    def __len__(self):
        return len(self.batch_code)


class BucketSampler:
    """Global batches drawn from buckets, deterministic in (seed, epoch) and sharded across dp.

    A step's global batch comes from one bucket and has batch_size(bucket) x dp x accum samples;
    position j of it (the global sample index that keys the random draws) belongs to dp rank
    (j // batch_size) % dp and micro-step j // (batch_size x dp), as in GlobalBatchSampler, so every
    rank steps on the same bucket and the ranks' samples are disjoint. Per bucket, the members that
    do not fill a global batch are dropped (and counted) for the epoch; as they are shuffled first,
    which ones changes from epoch to epoch. Epochs may differ in length (keep draws change).

    Steps map to (epoch, batch index) from an anchor, (step 0 = epoch 0, batch 0) unless a
    checkpoint's state_dict was loaded."""

    def __init__(self, buckets: Buckets, frames, heights, widths, *, dp: int, accum: int = 1, seed: int,
                 frame_interval=None, shuffle: bool = True, chunk: int = 1 << 18):
        self.buckets = buckets
        self.frames = np.asarray(frames, np.int64)
        self.heights, self.widths = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
        # None: the Buckets' own; else a stride per sample (e.g. from fps and a target fps) or one for all
        self.frame_interval = None if frame_interval is None else np.asarray(frame_interval, np.int64)
        self.num_samples = len(self.frames)
        self.dp, self.accum, self.seed, self.shuffle, self.chunk = int(dp), int(accum), int(seed), shuffle, chunk
        self._plans: "OrderedDict[int, EpochPlan]" = OrderedDict()  # the last few epochs used
        self._epoch_start = {0: 0}  # epoch -> its first step
        self._anchor_step = 0
        self._lock = threading.RLock()  # the prefetch thread and the checkpoint writer both ask

    # ---- epochs ------------------------------------------------------------------------------

    def _key(self, epoch: int, *more) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0xB0C4, *more])

    def _codes(self, epoch: int) -> np.ndarray:
        rng = self._key(epoch, 0)
        codes = np.empty(self.num_samples, np.int64)
        r = len(self.buckets.resolutions)
        interval = self.frame_interval
        for s in range(0, self.num_samples, self.chunk):  # chunked: the draws equal one big draw, memory stays small
            e = min(s + self.chunk, self.num_samples)
            part = interval[s:e] if np.ndim(interval) else interval
            codes[s:e] = self.buckets.assign_codes(self.frames[s:e], self.heights[s:e], self.widths[s:e],
                                                   rng.random((e - s, r)), part)
        return codes

    def global_batch_of_code(self, code: int) -> int:
        return int(self.buckets.batch_sizes[code]) * self.dp * self.accum

    def plan(self, epoch: int) -> EpochPlan:
        with self._lock:
            return self._plan(epoch)

    def _plan(self, epoch: int) -> EpochPlan:
        if epoch in self._plans:
            self._plans.move_to_end(epoch)
            return self._plans[epoch]
        codes = self._codes(epoch)
        order = np.argsort(codes, kind="stable")  # data-set indices grouped by code, ascending inside a group
        used = np.unique(codes[codes >= 0])
        starts = np.searchsorted(codes[order], used)
        ends = np.searchsorted(codes[order], used, side="right")
        members, batch_code, batch_chunk = {}, [], []
        for code, a, b in zip(used.tolist(), starts, ends):
            group = order[a:b]
            if self.shuffle:
                group = self._key(epoch, 1, code).permutation(group)  # keyed per bucket: other buckets don't matter
            members[code] = group
            n = len(group) // self.global_batch_of_code(code)
            batch_code += [code] * n
            batch_chunk += range(n)
        batch_code, batch_chunk = np.array(batch_code, np.int64), np.array(batch_chunk, np.int64)
        if self.shuffle:
            perm = self._key(epoch, 2).permutation(len(batch_code))
            batch_code, batch_chunk = batch_code[perm], batch_chunk[perm]
        plan = EpochPlan(epoch, codes, members, batch_code, batch_chunk)
        if len(plan) == 0:
            raise DataError(self._empty_message(plan))
        self._plans[epoch] = plan
        while len(self._plans) > 2:  # the prefetcher may straddle an epoch boundary
            self._plans.popitem(last=False)
        return plan

    def _empty_message(self, plan: EpochPlan) -> str:
        h = self._histogram(plan)
        return (f"epoch {plan.epoch}: no bucket fills one global batch (batch_size x dp={self.dp} x "
                f"grad_accum={self.accum}) from {self.num_samples} samples:\n{format_histogram(h)}\n"
                f"Lower the bucket batch sizes, raise keep_prob, add buckets that match the data, or add data.")

    # ---- steps -------------------------------------------------------------------------------

    def locate(self, step: int) -> Tuple[int, int]:
        """(epoch, batch index) of a step."""
        with self._lock:
            if step < self._anchor_step:
                raise ValueError(f"step {step} precedes the resumed position (step {self._anchor_step})")
            epoch = max(e for e, s in self._epoch_start.items() if s <= step)
            while True:
                n = len(self._plan(epoch))
                if step < self._epoch_start[epoch] + n:
                    return epoch, step - self._epoch_start[epoch]
                self._epoch_start.setdefault(epoch + 1, self._epoch_start[epoch] + n)
                epoch += 1

    def epoch_of(self, step: int) -> int:
        return self.locate(step)[0]

    def first_step_of(self, epoch: int) -> int:
        """The step that starts `epoch` (epochs differ in length: their plans are built up to it)."""
        with self._lock:
            earlier = [e for e in self._epoch_start if e <= epoch]
            if not earlier:  # resumed past it
                return min(self._epoch_start.values())
            known = max(earlier)
            while known < epoch:
                self._epoch_start.setdefault(known + 1, self._epoch_start[known] + len(self._plan(known)))
                known += 1
            return self._epoch_start[epoch]

    def _batch(self, step: int):
        epoch, k = self.locate(step)
        plan = self.plan(epoch)
        return plan, int(plan.batch_code[k]), int(plan.batch_chunk[k])

    def bucket_of(self, step: int) -> BucketId:
        return self.buckets.ids[self._batch(step)[1]]

    def shape_of(self, step: int) -> Tuple[int, int, int]:
        """(num_frames, height, width) every sample of the step is decoded to."""
        return self.buckets.shape(self.bucket_of(step))

    def batch_size_of(self, step: int) -> int:
        """Samples per rank and micro-step."""
        return int(self.buckets.batch_sizes[self._batch(step)[1]])

    def global_batch_of(self, step: int) -> int:
        return self.global_batch_of_code(self._batch(step)[1])

    def micro_positions(self, dp_rank: int, micro: int, step: int) -> np.ndarray:
        """Global sample indices of (rank, micro-step) within step `step` (as GlobalBatchSampler's,
        with the step's bucket batch size)."""
        bs = self.batch_size_of(step)
        start = micro * bs * self.dp + dp_rank * bs
        return np.arange(start, start + bs)

    def dataset_index(self, step: int, position: int, shift: int = 0) -> int:
        """The data-set index at `position` of step `step`; shift > 0 walks on past bad samples,
        staying in the step's bucket."""
        plan, code, chunk = self._batch(step)
        members = plan.members[code]
        g = self.global_batch_of_code(code)
        return int(members[(chunk * g + position + shift * g) % len(members)])

    def indices(self, step: int, dp_rank: int, micro: int) -> List[int]:
        """Data-set indices that (rank, micro-step) loads at `step` (no bad-sample walking)."""
        return [self.dataset_index(step, int(p)) for p in self.micro_positions(dp_rank, micro, step)]

    # ---- checkpoint state --------------------------------------------------------------------

    def _identity(self) -> dict:
        spec = {r: [[t, p, b] for t, p, b in e] for r, e in self.buckets.spec.items()}
        return {"seed": self.seed, "dp": self.dp, "accum": self.accum, "num_samples": self.num_samples,
                "shuffle": bool(self.shuffle), "spec": spec}

    def state_dict(self, step: int) -> dict:
        """Position of the next step to run (`step`), for the checkpoint (JSON-friendly)."""
        epoch, batch = self.locate(step)
        return {"step": int(step), "epoch": epoch, "batch": batch, "batches_in_epoch": len(self.plan(epoch)),
                **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        """Continue at the saved (epoch, batch index): the saved step maps there. If the data,
        seed, dp, accumulation or buckets changed, the epoch's batches differ: the run goes on from
        the same epoch and batch index of the new plan (and the next epoch if that is past its end)."""
        step, epoch, batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        changed = [k for k, v in self._identity().items() if k in state and state[k] != v]
        if changed:
            log.warning("bucket sampler: %s changed since the checkpoint; continuing at epoch %d, batch %d "
                        "of the new plan", ", ".join(changed), epoch, batch)
            if batch >= len(self.plan(epoch)):
                epoch, batch = epoch + 1, 0
        with self._lock:
            self._anchor_step = step
            self._epoch_start = {epoch: step - batch}

    # ---- report ------------------------------------------------------------------------------

    def histogram(self, epoch: int = 0) -> dict:
        """Samples and batches per bucket for an epoch, and the samples dropped, by reason."""
        return self._histogram(self.plan(epoch))

    def _histogram(self, plan: EpochPlan) -> dict:
        per_bucket, remainder = {}, 0
        batches = np.bincount(plan.batch_code, minlength=len(self.buckets)) if len(plan) else None
        for code, members in plan.members.items():
            g = self.global_batch_of_code(code)
            n = len(members) // g
            bucket = self.buckets.ids[code]
            per_bucket[bucket_name(bucket)] = {
                "shape": list(self.buckets.shape(bucket)), "batch_size": int(self.buckets.batch_sizes[code]),
                "global_batch": g, "samples": len(members), "batches": n, "dropped_remainder": len(members) - n * g}
            assert batches is None or batches[code] == n
            remainder += len(members) - n * g
        used = sum(b["batches"] * b["global_batch"] for b in per_bucket.values())
        return {"epoch": plan.epoch, "samples": self.num_samples, "used": used, "batches": len(plan),
                "buckets": per_bucket,
                "dropped": {"no_bucket": int((plan.codes == NO_BUCKET).sum()),
                            "keep_prob": int((plan.codes == KEPT_OUT).sum()), "remainder": remainder}}


def format_histogram(h: dict) -> str:
    lines = [f"epoch {h['epoch']}: {h['used']} of {h['samples']} samples in {h['batches']} global batches"]
    for name, b in sorted(h["buckets"].items(), key=lambda kv: -kv[1]["samples"]):
        shape = "x".join(str(v) for v in b["shape"])
        lines.append(f"  {name:<18} {shape:<13} samples {b['samples']:>7}  batches {b['batches']:>6} "
                     f"(x{b['global_batch']})  remainder dropped {b['dropped_remainder']}")
    d = h["dropped"]
    lines.append(f"  dropped: {d['no_bucket']} with no eligible bucket, {d['keep_prob']} by keep_prob draws, "
                 f"{d['remainder']} as bucket remainders")
    return "\n".join(lines)
