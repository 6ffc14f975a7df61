"""VideoCrafter2 as a trainable family: latent diffusion's eps objective on its schedule, the tiny
UNet trains and resumes exactly, ZeRO-3 (with recompute) at 2 workers equals one process. (The
UNet's layers against the lvdm formulas: test_vc2_unet.py; the full layouts: test_layouts.py.)"""
import numpy as np
import pytest

from conftest import TINY_MODEL, compose, read_metrics

# the tiny UNet at two levels, the second without attention (the paths of the full model's last
# level), 2 x 8 x 8 latents; PyNative: compiling the UNet's step costs more than these few steps
VC2 = [*TINY_MODEL[2:], "model=vc2_tiny", "model.input_size=[2,8,8]", "model.channel_mult=[1,2]",
       "model.attention_resolutions=[1]", "data=synthetic", "data.num_samples=8", "schedule.lr=1e-3",
       "schedule.ckpt_every=2", "schedule.warmup_steps=0", "jit=false"]


def test_objective_is_latent_diffusion_eps_on_the_scaled_linear_schedule():
    from vgen.models.registry import build_family

    family = build_family(compose(["model=vc2_tiny"]).model)
    betas = family.objective.tables.betas
    np.testing.assert_allclose(betas, np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2, rtol=1e-12)
    assert not family.objective.learn_sigma and family.text.drop_to == "empty"
    assert family.fields == ("text_emb", "fps")
    student = build_family(compose(["model=vc2_turbo"]).model)
    assert student.fields == ("text_emb", "fps", "guidance")
    assert student.prepare({"text_emb": np.zeros((2, 77, 1024))})["guidance"].tolist() == [7.5, 7.5]


@pytest.mark.slow
def test_tiny_trains_and_resumes_exactly(tmp_path):
    from vgen.train.trainer import Trainer

    base = [*VC2, "schedule.batch_size=2"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    Trainer(compose([*base, "schedule.max_steps=3"]), whole).setup().run()
    Trainer(compose([*base, "schedule.max_steps=2"]), part).setup().run()
    Trainer(compose([*base, "schedule.max_steps=3"]), part).setup().run()
    want = [m["loss"] for m in read_metrics(whole)]
    assert len(want) == 3 and all(np.isfinite(want)) and want[2] < want[0]
    np.testing.assert_allclose([m["loss"] for m in read_metrics(part)], want, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.dist
def test_zero3_with_recompute_equals_one_process(tmp_path):
    """ZeRO-3 with every block recomputed at 2 workers (a global batch of 2: one sample per rank)
    against one process with the same batch: loss, norm, weights, EMA and moments."""
    from distributed import assert_same_run, assert_same_weights_but_rare_elements, drawn_pretrained, run_scenarios
    from vgen.train.trainer import Trainer

    base = [*VC2, "schedule.max_steps=2", "schedule.ema_decay=0.9",
            f"model.pretrained={drawn_pretrained(VC2, tmp_path / 'pretrained.safetensors')}"]
    ref = tmp_path / "single"
    Trainer(compose([*base, "schedule.batch_size=2"]), ref).setup().run()
    run_scenarios(tmp_path / "two", 2, [
        {"name": "zero3", "overrides": [*base, "schedule.batch_size=1", "parallel.recompute=all"], "zero": 3}])
    assert_same_run(tmp_path / "two" / "zero3", ref, steps=range(1, 3))
    assert_same_weights_but_rare_elements(tmp_path / "two" / "zero3", ref)
