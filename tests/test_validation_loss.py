"""The validation loss (data.holdout, schedule.val_levels): the held-out samples are never
trained on, their loss at each fixed level is the objective's formula, and every data-parallel
rank makes the same calls. (Resume and multi-worker runs: test_quickstart, test_stepvideo.)"""
import numpy as np
import pytest

from conftest import compose
from vgen.objectives.iddpm import IDDPM
from vgen.objectives.rectified_flow import RectifiedFlow
from vgen.train.heldout import shares

HY = ["model=hunyuan_tiny", "model.depth_double=1", "model.depth_single=1", "data=synthetic", "data.num_samples=10",
      "data.holdout=3", "schedule.val_every=2", "schedule.val_levels=[0.2,0.8]", "schedule.batch_size=2",
      "progress=false", "jit=false"]


def test_held_out_samples_are_never_drawn_for_training():
    from vgen.models.registry import build_family
    from vgen.train.datasets import build_data

    cfg = compose(HY)
    dataset, sampler = build_data(cfg, build_family(cfg.model), dp=1)
    drawn = {sampler.dataset_index(step, p) for step in range(12) for p in sampler.micro_positions(0, 0, step)}
    assert len(dataset) == 10 and drawn == set(range(7))  # three epochs of the first 7


def test_every_rank_makes_the_same_calls():
    assert shares([5, 6, 7], 2, 0) == [(5, 1.0), (7, 1.0)]
    assert shares([5, 6, 7], 2, 1) == [(6, 1.0), (6, 0.0)]  # a weight-0 repeat
    assert shares([5], 3, 2) == [(5, 0.0)]


def test_levels_are_the_objectives_timesteps():
    np.testing.assert_array_equal(RectifiedFlow().timesteps_at([0.1, 0.5]), np.float32([0.1, 0.5]))
    t = IDDPM(1000).timesteps_at([0.0, 0.3, 1.0])
    assert t.dtype == np.int32 and t.tolist() == [0, 300, 999]


@pytest.mark.slow
def test_validation_loss_is_the_flow_matching_loss_at_each_level(tmp_path):
    """mean over held-out samples of |v(x_s, 1000 s) - (noise - x0)|^2, x_s = (1 - s) x0 + s noise,
    the noise drawn from the sample's validation key: computed here from the net directly."""
    from mindspore import Tensor

    from vgen.models.layers.init import named_params
    from vgen.objectives.denoise import plain_denoise
    from vgen.rng import VALIDATION_STEP, keyed_rng
    from vgen.train.pipeline import named_inputs
    from vgen.train.trainer import Trainer

    trainer = Trainer(compose(HY), tmp_path).setup()
    family, rng = trainer.family, np.random.default_rng(0)
    for _, q in named_params(family.net):  # the zero-initialised output layers carry weights
        if not q.asnumpy().any():
            q.set_data(Tensor((rng.standard_normal(q.shape) * 0.05).astype(np.float32)))
    heldout = trainer.validation.heldout
    got = heldout()
    assert heldout() == got  # the same weights score the same
    assert sorted(heldout.shapes) == [7, 8, 9]
    denoise = family.denoise or plain_denoise
    want = {0.2: [], 0.8: []}
    for i in (7, 8, 9):
        x0 = trainer.data.dataset.get(i)["latent"][None]
        noise = keyed_rng(trainer.cfg.seed, VALIDATION_STEP, i, "noise").standard_normal(x0.shape[1:],
                                                                                        dtype=np.float32)[None]
        fields = {k: Tensor(np.asarray(v)) for k, v in named_inputs(family, dict(heldout._encoded(i))).items()}
        for s in want:
            x_s = (1 - s) * x0 + s * noise
            v = denoise(family.net, Tensor(x_s.astype(np.float32)), Tensor(np.float32([1000 * s])), fields).asnumpy()
            want[s].append(np.mean((v - (noise - x0)) ** 2))
    for s, losses in want.items():
        np.testing.assert_allclose(got[f"val_loss_{s:.2f}"], np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(got["val_loss"], np.mean([np.mean(v) for v in want.values()]), rtol=1e-5)
