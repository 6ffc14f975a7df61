"""The data set of a run, shaped by the family's specs, and the sampler that batches it."""
from ..data.cache import CachedLatentDataset
from ..data.errors import DataError
from ..data.sampler import GlobalBatchSampler
from ..data.synthetic import SyntheticDataset


def build_dataset(data_cfg, family):
    lat, txt = family.latent, family.text
    if data_cfg.kind == "synthetic":
        size = tuple(data_cfg.latent_size or lat.size)
        return SyntheticDataset(data_cfg.num_samples, (lat.channels, *size), data_cfg.text_len or txt.length, txt.dim,
                                data_cfg.min_text_len, pooled_dim=txt.pooled_dim, pooled_length=txt.pooled_length)
    if data_cfg.kind == "cached":
        frames = data_cfg.num_frames or lat.size[0]
        return CachedLatentDataset(data_cfg.csv_path, data_cfg.text_emb_dir, data_cfg.latent_dir,
                                   text_len=txt.length, text_dim=txt.dim,
                                   latent_shape=(lat.channels, frames, lat.size[1], lat.size[2]), scale=lat.scale,
                                   frame_stride=data_cfg.frame_stride, video_column=data_cfg.video_column,
                                   skip_bad=data_cfg.skip_bad)
    raise ValueError(f"data.kind={data_cfg.kind!r}: expected synthetic or cached")


def trained_size(data_cfg, dataset) -> int:
    """How many samples training draws from: all but the last data.holdout (the validation loss's)."""
    holdout = data_cfg.get("holdout", 0)
    if holdout >= len(dataset):
        raise DataError(f"data.holdout={holdout} leaves no training samples: the data set has {len(dataset)}; "
                        "hold out fewer")
    return len(dataset) - holdout


def build_data(cfg, family, dp: int):
    """(dataset, sampler): fixed-shape data with the global-batch sampler; videos with buckets
    with the bucket sampler. The samplers draw from the trained part only (trained_size)."""
    d, s = cfg.data, cfg.schedule
    if d.kind == "video":
        from .video_data import build_video_data

        return build_video_data(cfg, family, dp)
    dataset = build_dataset(d, family)
    return dataset, GlobalBatchSampler(trained_size(d, dataset), s.batch_size, dp, s.grad_accum, cfg.seed,
                                       shuffle=d.get("shuffle", True))
