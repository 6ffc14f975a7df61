import numpy as np
import pytest

from conftest import compose
from vgen.data.cache import CachedLatentDataset
from vgen.data.errors import DataError
from vgen.data.sampler import GlobalBatchSampler
from vgen.models.registry import build_family
from vgen.train.batches import StepBatchBuilder
from vgen.train.pipeline import named_inputs
from vgen.train.datasets import build_dataset


def test_global_batch_positions_partition_the_step():
    s = GlobalBatchSampler(100, batch_size=3, dp=2, accum=2, seed=0)
    assert s.global_batch == 12 and s.steps_per_epoch == 8
    seen = np.concatenate([s.micro_positions(r, m) for m in range(2) for r in range(2)])
    assert sorted(seen) == list(range(12))
    epoch0 = [s.dataset_index(k, j) for k in range(8) for j in range(12)]
    assert len(set(epoch0)) == 96  # no sample twice in an epoch
    assert [s.dataset_index(0, j) for j in range(12)] != [s.dataset_index(8, j) for j in range(12)]


def test_too_little_data_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one global batch"):
        GlobalBatchSampler(5, batch_size=2, dp=2, accum=2, seed=0)


def _builder(dp, dp_rank, batch_size):
    cfg = compose(["data.num_samples=32"])
    family = build_family(cfg.model)
    ds = build_dataset(cfg.data, family)
    sampler = GlobalBatchSampler(len(ds), batch_size, dp, 1, seed=7)
    return StepBatchBuilder(ds, family, sampler, seed=7, dp_rank=dp_rank, text_dropout=0.5, skip_bad=False)


def test_draws_do_not_depend_on_the_worker_count():
    """Ranks of a dp=2 job together see exactly the single-process batch of twice the size."""
    b = _builder(1, 0, 4)
    single = named_inputs(b.family, b.build(3).micro[0].batch)
    ranks = []
    for r in range(2):
        br = _builder(2, r, 2)
        ranks.append(named_inputs(br.family, br.build(3).micro[0].batch))
    for name, whole in single.items():
        np.testing.assert_array_equal(whole, np.concatenate([ranks[0][name], ranks[1][name]]), err_msg=name)


def _write_cache(root, n, frames=6, c=4, h=16, w=16, L=16, D=256, bad=()):
    (root / "t5").mkdir(parents=True)
    (root / "vae").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"clip_{i}.mp4"
        rows.append(f"{name},a caption {i}")
        if i in bad:
            continue
        mask = (np.arange(L) < 5 + i % 7).astype(np.uint8)
        np.savez(root / "t5" / f"clip_{i}.npz", text_emb=rng.standard_normal((L, D)).astype(np.float32), mask=mask)
        np.savez(root / "vae" / f"clip_{i}.npz", latent_mean=rng.standard_normal((frames, c, h, w)).astype(np.float32),
                 latent_std=np.full((frames, c, h, w), 0.1, np.float32), fps=np.float32(24),
                 ori_size=np.array([128, 128]))
    (root / "train.csv").write_text("video,caption\n" + "\n".join(rows) + "\n")
    return root


def _cached(root, **kw):
    return CachedLatentDataset(str(root / "train.csv"), str(root / "t5"), str(root / "vae"), text_len=16, text_dim=256,
                               latent_shape=(4, 4, 16, 16), scale=0.18215, **kw)


def test_cached_latents_are_sampled_and_scaled(tmp_path):
    ds = _cached(_write_cache(tmp_path, 4))
    s = ds.get(1, np.random.default_rng(0))
    assert s["latent"].shape == (4, 4, 16, 16) and s["text_emb"].shape == (16, 256)
    with np.load(tmp_path / "vae" / "clip_1.npz") as z:
        mean = z["latent_mean"].transpose(1, 0, 2, 3) * 0.18215
    # mean + 0.1 * noise, scaled: within a few std of one of the frame windows
    starts = [abs(s["latent"] - mean[:, k:k + 4]).mean() for k in range(3)]
    assert min(starts) < 0.1 * 0.18215 * 1.2


def test_missing_cache_files_are_reported_with_line_numbers(tmp_path):
    root = _write_cache(tmp_path, 5, bad=(1, 3))
    with pytest.raises(DataError) as e:
        _cached(root)
    msg = str(e.value)
    assert "line 3" in msg and "line 5" in msg and "clip_1.mp4" in msg and "skip_bad" in msg
    ds = _cached(root, skip_bad=True)
    assert len(ds) == 3 and ds.skipped_rows == 2


def test_malformed_cache_file_names_it(tmp_path):
    root = _write_cache(tmp_path, 3)
    (root / "vae" / "clip_2.npz").write_bytes(b"not a zip")
    np.savez(root / "t5" / "clip_1.npz", text_emb=np.zeros((8, 256), np.float32), mask=np.ones(8))
    ds = _cached(root)
    with pytest.raises(DataError, match="clip_2.npz"):
        ds.get(2, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"clip_1.npz.*\[16, 256\]"):
        ds.get(1, np.random.default_rng(0))
