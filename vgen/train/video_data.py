"""Video data for training: records (CSV), bucketed or fixed-size sampling, and samples that are
decoded clips (encoded online) or cached latents / text embeddings."""
import numpy as np

from ..data.buckets import BucketSampler
from ..data.cached_video import build_video_dataset
from ..data.preference import build_preference_dataset
from ..data.sampler import GlobalBatchSampler
from .datasets import trained_size


def build_video_data(cfg, family, dp: int):
    d, s = cfg.data, cfg.schedule
    dpo = cfg.get("dpo")
    if dpo is not None and dpo.enabled:  # (caption, chosen, rejected) rows
        dataset = build_preference_dataset(d, dpo.rejected_column, family.text, family.latent, model=cfg.model.name)
    else:
        dataset = build_video_dataset(d, family.text, family.latent, model=cfg.model.name)
    n = trained_size(d, dataset)
    if dataset.buckets is None:
        return dataset, GlobalBatchSampler(n, s.batch_size, dp, s.grad_accum, cfg.seed, shuffle=d.shuffle)
    interval = dataset.frame_intervals
    interval = interval[:n] if interval is not None and np.ndim(interval) else interval  # per sample or one
    sampler = BucketSampler(dataset.buckets, dataset.frames[:n], dataset.heights[:n], dataset.widths[:n], dp=dp,
                            accum=s.grad_accum, seed=cfg.seed, frame_interval=interval, shuffle=d.shuffle)
    return dataset, sampler
