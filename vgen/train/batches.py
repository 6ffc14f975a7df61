"""Model inputs for one step on this rank: samples from the data set, keyed random draws
(timesteps, noise, caption dropout) and the family's conditioning, as numpy arrays."""
import logging
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from ..data.errors import DataError
from ..data.sampler import GlobalBatchSampler
from ..rng import sample_rngs

log = logging.getLogger("vgen")
MAX_REPLACEMENTS = 50


@dataclass
class MicroBatch:
    inputs: Tuple[np.ndarray, ...]  # (x0, noise, t, *cond) in the order of the loss cell
    positions: np.ndarray  # global sample indices within the step
    skipped: int = 0  # bad samples replaced while building it


@dataclass
class StepBatch:
    micro: List[MicroBatch] = field(default_factory=list)

    @property
    def skipped(self):
        return sum(m.skipped for m in self.micro)


class StepBatchBuilder:
    def __init__(self, dataset, family, sampler: GlobalBatchSampler, *, seed: int, dp_rank: int,
                 text_dropout: float, skip_bad: bool):
        self.dataset, self.family, self.sampler = dataset, family, sampler
        self.seed, self.dp_rank = seed, dp_rank
        self.text_dropout, self.skip_bad = text_dropout, skip_bad
        self.bad = set()  # data-set indices known to fail

    def _sample(self, step: int, position: int):
        """The sample at `position`, walking on past bad samples when skip_bad."""
        rng = sample_rngs(self.seed, step, [position], ["latent"])["latent"][0]
        for shift in range(MAX_REPLACEMENTS):
            index = self.sampler.dataset_index(step, position, shift)
            if index in self.bad:
                continue
            try:
                return self.dataset.get(index, rng), shift
            except DataError as e:
                if not self.skip_bad:
                    raise
                self.bad.add(index)
                log.warning("skipping bad sample: %s", e)
        raise DataError(f"{MAX_REPLACEMENTS} bad samples in a row at step {step}: the data set is mostly unreadable")

    def build(self, step: int) -> StepBatch:
        out = StepBatch()
        for m in range(self.sampler.accum):
            positions = self.sampler.micro_positions(self.dp_rank, m)
            samples, skipped = [], 0
            for p in positions:
                s, shift = self._sample(step, int(p))
                samples.append(s)
                skipped += shift
            batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
            streams = ["timestep", "noise", "text_drop", *self.family.extra_streams]
            rngs = sample_rngs(self.seed, step, positions, streams)
            draws = self.family.objective.draw(rngs, batch["latent"].shape[1:])
            batch["text_drop"] = np.array([r.random() < self.text_dropout for r in rngs["text_drop"]])
            batch["rngs"] = rngs
            inputs = (batch["latent"], draws["noise"], draws["t"]) + tuple(self.family.cond_inputs(batch))
            out.micro.append(MicroBatch(inputs, positions, skipped))
        return out
