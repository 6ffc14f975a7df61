"""The validation loss: the data set's last data.holdout samples, which training never draws,
scored by the family's own loss cell at fixed noise levels (schedule.val_levels; objectives
without timesteps, such as an autoencoder's, score each sample once). A sample's latent, noise and
every other draw are keyed by (seed, VALIDATION_STEP, its index), the same noise at every level, so
validations differ only by the weights. A bucketed sample is read at the bucket it would be
trained in (keep draws aside). The encoded samples are kept after the first validation (online
runs encode them once).

Each data-parallel group scores its share of the samples, padded by repeats of weight 0 so that
every rank makes the same calls (ZeRO-3 gathers span all ranks); the sums are all-reduced."""
import logging
from typing import Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..data.errors import DataError
from .pipeline import named_inputs

log = logging.getLogger("vgen")


def held_out_shapes(dataset, sampler, indices) -> Dict[int, Optional[tuple]]:
    """{index: the (frames, height, width) its bucket reads it at, None unbucketed}; samples that
    fit no bucket are left out (with a warning)."""
    buckets = getattr(sampler, "buckets", None)
    if buckets is None:
        return {i: None for i in indices}
    intervals = dataset.frame_intervals
    shapes, unfit = {}, []
    for i in indices:
        interval = None if intervals is None else (intervals[i] if np.ndim(intervals) else intervals)
        bucket = buckets.assign(int(dataset.frames[i]), int(dataset.heights[i]), int(dataset.widths[i]),
                                frame_interval=interval)
        if bucket is None:
            unfit.append(i)
        else:
            shapes[i] = buckets.shape(bucket)
    if unfit:
        log.warning("validation loss: held-out samples %s fit no bucket of data.buckets and are left out", unfit)
    return shapes


def shares(items: List[int], dp: int, dp_rank: int) -> List[tuple]:
    """[(item, weight)] of this data-parallel rank: every dp-th item, padded with weight-0 repeats
    to the same count on every rank."""
    mine = [(x, 1.0) for x in items[dp_rank::dp]]
    count = -(-len(items) // dp)
    return mine + [(mine[0][0] if mine else items[0], 0.0)] * (count - len(mine))


class HeldOutLoss:
    def __init__(self, cfg, family, data, mesh, sync):
        n, holdout = len(data.dataset), cfg.data.holdout
        self.shapes = held_out_shapes(data.dataset, data.sampler, range(n - holdout, n))
        if not self.shapes:
            raise DataError(f"data.holdout={holdout}: no held-out sample fits a bucket of data.buckets={cfg.data.buckets}")
        self.family, self.data, self.sync, self.sp = family, data, sync, mesh.sp
        timed = hasattr(family.objective, "timesteps_at")
        self.levels = [float(v) for v in cfg.schedule.val_levels] if timed else []
        self.rows = cfg.schedule.batch_size
        self.mine = shares(list(self.shapes), mesh.dp, mesh.dp_rank)
        self.encoded = {}  # index -> its encoded batch of one, kept after the first validation
        self.cell = family.make_loss_cell()
        self.loss = ms.jit(self._loss) if cfg.jit else self._loss

    def _loss(self, batch):
        return self.cell(batch)

    def _encoded(self, index: int) -> dict:
        if index not in self.encoded:
            batch = self.data.batches.validation_batch(index, self.shapes[index])
            if self.data.encoders is not None:
                batch = self.data.encoders(batch)
                if "video" not in self.family.input_fields:  # encoded: the clip's pixels are not kept
                    batch.pop("video", None)
            self.encoded[index] = batch
        return self.encoded[index]

    def _per_level(self, index: int) -> np.ndarray:
        """The sample's loss at every level ([1] without levels), in calls of schedule.batch_size rows."""
        one = self._encoded(index)
        reps = max(1, len(self.levels))
        batch = {k: (v * reps if isinstance(v, list) else np.repeat(v, reps, axis=0)) for k, v in one.items()}
        if self.levels:
            batch["t"] = self.family.objective.timesteps_at(self.levels)
        inputs = named_inputs(self.family, batch)
        out = []
        for start in range(0, reps, self.rows):
            chunk = {k: Tensor(v[start:start + self.rows]) for k, v in inputs.items()}
            out.append(self.loss(ms.mutable(chunk)).astype(ms.float32).asnumpy())
        return np.concatenate(out)

    def __call__(self) -> Dict[str, float]:
        """{"val_loss": mean over samples and levels, "val_loss_<level>": mean over samples}."""
        width = max(1, len(self.levels))
        sums = np.zeros(width + 1, np.float64)
        for index, weight in self.mine:
            sums[:width] += weight * self._per_level(index)
            sums[width] += weight
        if self.sync.size > 1:  # SP ranks of a group score the same samples: their sums counted sp times
            sums = self.sync.all_reduce(Tensor(sums.astype(np.float32))).asnumpy().astype(np.float64) / self.sp
        means = sums[:width] / sums[width]
        out = {"val_loss": float(means.mean())}
        out.update({f"val_loss_{v:.2f}": float(m) for v, m in zip(self.levels, means)})
        return out
