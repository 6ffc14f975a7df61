"""One step's data on this rank: samples from the data set (in the bucket of the step) and every
random draw of the step in one place (`draw`): timesteps and noise (the objective), caption
dropout, the VAE's sampling noise, the family's own streams (e.g. frame masks), each keyed by
(seed, step, global sample index, stream). Built in the prefetch thread as numpy; the data
pipeline (pipeline.py) then encodes online what the run encodes online and names the inputs."""
import logging
from dataclasses import dataclass, field
from typing import List

import numpy as np

from ..data.errors import DataError
from ..rng import VALIDATION_STEP, sample_rngs

log = logging.getLogger("vgen")
MAX_REPLACEMENTS = 50


@dataclass
class MicroBatch:
    batch: dict  # latent or video, text_emb/text_mask or caption, metadata, draws, rngs
    positions: np.ndarray  # global sample indices within the step
    skipped: int = 0  # bad samples replaced while building it


@dataclass
class StepBatch:
    micro: List[MicroBatch] = field(default_factory=list)
    shape: tuple = None  # the step's bucket (pixel frames, height, width), when bucketed

    @property
    def skipped(self):
        return sum(m.skipped for m in self.micro)


def stack_samples(samples) -> dict:
    """Samples (dicts) -> one batch: arrays stacked, strings (captions) listed."""
    def stack(key):
        values = [s[key] for s in samples]
        return values if isinstance(values[0], str) else np.stack([np.asarray(v) for v in values])

    return {k: stack(k) for k in samples[0]}


class StepBatchBuilder:
    def __init__(self, dataset, family, sampler, *, seed: int, dp_rank: int, text_dropout: float, skip_bad: bool):
        self.dataset, self.family, self.sampler = dataset, family, sampler
        self.seed, self.dp_rank = seed, dp_rank
        self.text_dropout, self.skip_bad = text_dropout, skip_bad
        self.bucketed = hasattr(sampler, "shape_of")
        self.bad = set()  # data-set indices known to fail

    def _sample(self, step: int, position: int, shape):
        """The sample at `position`, walking on past bad samples when skip_bad."""
        rng = sample_rngs(self.seed, step, [position], ["latent"])["latent"][0]
        for shift in range(MAX_REPLACEMENTS):
            index = self.sampler.dataset_index(step, position, shift)
            if index in self.bad:
                continue
            try:
                return self.dataset.get(index, rng, shape), shift
            except DataError as e:
                if not self.skip_bad:
                    raise
                self.bad.add(index)
                log.warning("skipping bad sample: %s", e)
        raise DataError(f"{MAX_REPLACEMENTS} bad samples in a row at step {step}: the data set is mostly unreadable")

    def _empty_text(self, needed_by: str) -> dict:
        if not hasattr(self.dataset, "empty_text"):
            raise DataError(f"{needed_by} the empty prompt's embedding, which the data set does not provide: build "
                            "the text cache with vgen-cache text (it writes text/empty.npz)")
        return self.dataset.empty_text()

    def _drop_to_empty(self, batch):
        """Dropped captions become the empty prompt's embedding (families without a null caption)."""
        if not batch["text_drop"].any():
            return
        for key, value in self._empty_text("this model drops captions to").items():
            if key in batch:
                batch[key][batch["text_drop"]] = value

    def _add_uncond_text(self, batch):
        """`<key>_uncond`: the empty prompt's text (or caption, with online text) for every sample,
        the unconditional side of an objective's classifier-free guidance."""
        n = len(batch["text_drop"])
        for key, value in self._empty_text("the distillation teacher's guidance needs").items():
            batch[key + "_uncond"] = [value] * n if isinstance(value, str) else np.stack([np.asarray(value)] * n)

    def draw(self, step: int, positions, batch) -> dict:
        """Every random draw of a micro-batch (besides the data set's own reading: clip windows and
        latent sampling, keyed the same way), from generators keyed by (seed, step, sample, stream)."""
        family = self.family
        streams = ["timestep", "noise", "text_drop", "vae_noise", "vae_noise_rejected",
                   *getattr(family.objective, "streams", ()), *family.spec.streams]
        rngs = sample_rngs(self.seed, step, positions, streams)
        out = {}
        if "latent" in batch:
            latent_shape = batch["latent"].shape[1:]
        else:  # clips: the latent shape their VAE gives, and its sampling noise
            _, _, t, h, w = batch["video"].shape
            latent_shape = family.latent.latent_shape(t, h, w)
            keys = ["vae_noise"] + (["vae_noise_rejected"] if "video_rejected" in batch else [])  # DPO pairs
            for key in keys:
                out[key] = np.stack([r.standard_normal(latent_shape, dtype=np.float32) for r in rngs[key]])
        out.update(family.objective.draw(rngs, latent_shape, step))
        out["text_drop"] = np.array([r.random() < self.text_dropout for r in rngs["text_drop"]])
        if family.draw is not None:
            out.update(family.draw(rngs, latent_shape))
        return out

    def build(self, step: int) -> StepBatch:
        shape = self.sampler.shape_of(step) if self.bucketed else None
        out = StepBatch(shape=shape)
        for m in range(self.sampler.accum):
            positions = self.sampler.micro_positions(self.dp_rank, m, step)
            samples, skipped = [], 0
            for p in positions:
                s, shift = self._sample(step, int(p), shape)
                samples.append(s)
                skipped += shift
            batch = stack_samples(samples)
            batch.update(self.draw(step, positions, batch))
            if self.family.text.drop_to == "empty":
                self._drop_to_empty(batch)
            if getattr(self.family.objective, "uncond_text", False):
                self._add_uncond_text(batch)
            out.micro.append(MicroBatch(batch, positions, skipped))
        return out

    def validation_batch(self, index: int, shape=None) -> dict:
        """Data-set sample `index` alone in a batch, its draws keyed by (seed, VALIDATION_STEP, index):
        the same at every validation. No caption dropout, every frame generated (no frame masks),
        no adversarial term."""
        rng = sample_rngs(self.seed, VALIDATION_STEP, [index], ["latent"])["latent"][0]
        batch = stack_samples([self.dataset.get(index, rng, shape)])
        batch.update(self.draw(VALIDATION_STEP, [index], batch))
        batch["text_drop"][:] = False
        for key, value in (("frame_mask", True), ("gan_on", 0.0)):
            if key in batch:
                batch[key][:] = value
        return batch
