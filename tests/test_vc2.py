"""VideoCrafter2 as a family: latent diffusion's eps objective on its schedule, its fields and the
student's embedded guidance. (Training, resume and ZeRO-3: test_unet_training.py; the UNet's layers
against the lvdm formulas: test_vc2_unet.py; the full layouts: test_layouts.py.)"""
import numpy as np

from conftest import compose


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
