"""T2V-Turbo's consistency distillation (objectives/consistency.py) against its formulas, written
out in float64 from train_t2v_turbo_v1_lora.py, on a tiny VideoCrafter2 student whose roles share
one base: the teacher is the base with the adapters off and no guidance embedding, the student
and the target are the base + LoRA with the embedded guidance."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from vgen.models.layers.init import materialize, named_params
from vgen.models.lora import adapters_disabled, apply_lora
from vgen.models.videocrafter.family import denoise, denoise_guided
from vgen.models.videocrafter.unet import build_vc2_unet
from vgen.objectives.consistency import ConsistencyDistillation, boundary_scalings, ema_update
from vgen.objectives.iddpm import scaled_linear_betas
from vgen.rng import sample_rngs
from vgen.runtime import setup_device

setup_device("auto")  # before any kernel runs (a Trainer later in the process sets it too)

AC = np.cumprod(1.0 - scaled_linear_betas(1000))
STREAMS = ["timestep", "noise", "guidance"]


def test_solver_tables_and_boundary_scalings():
    cd = ConsistencyDistillation(AC)
    assert list(cd.solver.timesteps) == list(range(19, 1000, 20))  # 50 steps, T // 50 = 20
    np.testing.assert_array_equal(cd.solver.alphas_prev, np.concatenate([[AC[0]], AC[19:980:20]]))
    c_skip, c_out = boundary_scalings(np.array([0.0, 19.0, 999.0]))
    np.testing.assert_allclose(c_skip, [1.0, 0.25 / (190.0 ** 2 + 0.25), 0.25 / (9990.0 ** 2 + 0.25)], rtol=1e-12)
    np.testing.assert_allclose(c_out, [0.0, 190.0 / np.sqrt(190.0 ** 2 + 0.25), 9990.0 / np.sqrt(9990.0 ** 2 + 0.25)],
                               rtol=1e-12)


def test_draws_are_keyed_per_sample_and_in_range():
    cd = ConsistencyDistillation(AC)
    a = cd.draw(sample_rngs(0, 3, range(64), STREAMS), (4, 2, 3, 3))
    b = cd.draw(sample_rngs(0, 3, range(64), STREAMS), (4, 2, 3, 3))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(a["t_start"], cd.solver.timesteps[a["solver_index"]])
    np.testing.assert_array_equal(a["t_end"], np.maximum(a["t_start"] - 20, 0))
    assert (a["cfg_w"] >= 5).all() and (a["cfg_w"] <= 15).all() and np.array_equal(a["cfg_w"], a["guidance"])
    np.testing.assert_allclose(a["c_skip_end"], boundary_scalings(a["t_end"].astype(np.float64))[0], rtol=1e-6)
    one = cd.draw(sample_rngs(0, 3, [5], STREAMS), (4, 2, 3, 3))
    assert all(np.array_equal(one[k][0], a[k][5]) for k in a)  # a sample's draws do not depend on the batch


@pytest.fixture(scope="module")
def student():
    net = build_vc2_unet("tiny", channel_mult=(1, 2), attention_resolutions=(1,), time_cond_proj_dim=16)
    apply_lora(net, 4, 4, "*", style="lora_diffusion")
    materialize(net, seed=0)
    rng = np.random.default_rng(1)
    for _, p in named_params(net):  # every weight drawn: the zero-initialised up matrices would hide the adapters
        ops.assign(p, Tensor((0.05 * rng.standard_normal(p.shape)).astype(np.float32)))
    net.set_train(False)
    return net


def batch_of(cd, seed=0):
    rng = np.random.default_rng(seed)
    b = {"latent": rng.standard_normal((2, 4, 2, 8, 8)).astype(np.float32),
         "text_emb": rng.standard_normal((2, 16, 32)).astype(np.float32),
         "text_emb_uncond": rng.standard_normal((2, 16, 32)).astype(np.float32),
         "fps": np.full(2, 16.0, np.float32)}
    b.update(cd.draw(sample_rngs(seed, 0, [0, 1], STREAMS), b["latent"].shape[1:]))
    b["solver_index"][:] = [3, 0]  # t 79 -> 59, and the first step: 19 -> 0 (clipped)
    b["t_start"] = cd.solver.timesteps[b["solver_index"]]
    b["t_end"] = np.maximum(b["t_start"] - 20, 0).astype(np.int32)
    for key, t in (("start", b["t_start"]), ("end", b["t_end"])):
        b[f"c_skip_{key}"], b[f"c_out_{key}"] = (c.astype(np.float32) for c in boundary_scalings(t.astype(np.float64)))
    return b


def tensors(b):
    return {k: Tensor(v) for k, v in b.items()}


def eps_of(net, x, t, b, guided, context="text_emb"):
    fields = {"text_emb": Tensor(b[context]), "fps": Tensor(b["fps"]), "guidance": Tensor(b["guidance"])}
    fn = denoise_guided if guided else denoise
    return fn(net, Tensor(x.astype(np.float32)), Tensor(t), fields).asnumpy().astype(np.float64)


def bcast(v):
    return np.asarray(v, np.float64).reshape(-1, 1, 1, 1, 1)


@pytest.mark.slow
def test_teacher_target_and_loss_match_the_formulas(student):
    cd = ConsistencyDistillation(AC)
    b = batch_of(cd)
    x0, noise, s, n = b["latent"].astype(np.float64), b["noise"].astype(np.float64), b["t_start"], b["solver_index"]
    x_s = np.sqrt(bcast(AC[s])) * x0 + np.sqrt(1 - bcast(AC[s])) * noise
    x0_hat = lambda x, e, t: (x - np.sqrt(1 - bcast(AC[t])) * e) / np.sqrt(bcast(AC[t]))

    # teacher: the base (adapters off, no guidance embedding), CFG in the LCM form, one DDIM step
    with adapters_disabled(student):
        eps_c = eps_of(student, x_s, s, b, guided=False)
        eps_u = eps_of(student, x_s, s, b, guided=False, context="text_emb_uncond")
        x_prev = cd.teacher_step(student, denoise, ("text_emb", "fps")).construct(tensors(b)).asnumpy()
    w = bcast(b["cfg_w"])
    x0_w = x0_hat(x_s, eps_c, s) + w * (x0_hat(x_s, eps_c, s) - x0_hat(x_s, eps_u, s))
    eps_w = eps_c + w * (eps_c - eps_u)
    a_prev = bcast(cd.solver.alphas_prev[n])
    want_prev = np.sqrt(a_prev) * x0_w + np.sqrt(1 - a_prev) * eps_w
    np.testing.assert_allclose(x_prev, want_prev, rtol=1e-4, atol=1e-4 * np.abs(want_prev).max())
    # the DDIM step lands on the end timestep's alpha: a_prev(n) = alphas_cumprod[t_end] (t_end 0 at n = 0)
    np.testing.assert_allclose(cd.solver.alphas_prev[n], AC[b["t_end"]], rtol=1e-12)

    # target: f(x_prev, t_end) of the student weights, with the embedded guidance
    b["x_prev"] = x_prev
    t = b["t_end"]
    eps_t = eps_of(student, x_prev.astype(np.float64), t, b, guided=True)
    want_target = bcast(b["c_skip_end"]) * x_prev + bcast(b["c_out_end"]) * x0_hat(x_prev, eps_t, t)
    target = cd.target_cell(student, denoise_guided).construct(tensors(b)).asnumpy()
    np.testing.assert_allclose(target, want_target, rtol=1e-4, atol=1e-5 * np.abs(want_target).max())
    assert np.allclose(b["c_skip_end"][1], 1.0) and np.allclose(b["c_out_end"][1], 0.0)  # t = 0: f is the identity
    np.testing.assert_allclose(target[1], x_prev[1], rtol=1e-6, atol=1e-6)

    # student loss: pseudo-Huber per sample, c = 0.001
    b["target"] = target
    eps_s = eps_of(student, x_s, s, b, guided=True)
    pred = bcast(b["c_skip_start"]) * x_s + bcast(b["c_out_start"]) * x0_hat(x_s, eps_s, s)
    d = pred - target
    want_loss = (np.sqrt(d ** 2 + 1e-6) - 1e-3).reshape(2, -1).mean(-1)
    loss_cell = cd.loss_cell(student, denoise_guided)
    np.testing.assert_allclose(loss_cell.construct(tensors(b)).asnumpy(), want_loss, rtol=1e-4)

    # only the adapters are trained, and the loss reaches them through the student alone
    params = [p for _, p in named_params(student) if p.requires_grad]
    grads = ms.grad(lambda batch: loss_cell(batch).mean(), grad_position=None, weights=params)(tensors(b))
    assert params and all(np.isfinite(g.asnumpy()).all() for g in grads)
    assert sum(float(np.abs(g.asnumpy()).sum()) for g in grads) > 0


def test_target_ema_is_the_lcm_update():
    rng = np.random.default_rng(0)
    target, online = rng.standard_normal(5), rng.standard_normal(5)
    np.testing.assert_allclose(ema_update(target, online, 0.95), 0.95 * target + 0.05 * online, rtol=1e-12)
    np.testing.assert_array_equal(ema_update(target, online, 0.0), online)  # the official LoRA script's target


def test_consistency_schedule_and_sampler_are_t2v_turbos():
    """set_timesteps(4 / 8, lcm_origin_steps 50), then per step f = c_skip x + c_out x0_hat and,
    before the next timestep, x = sqrt(a_next) f + sqrt(1 - a_next) z; the last f is returned."""
    from vgen.objectives.consistency import consistency_sample, consistency_timesteps
    from vgen.objectives.iddpm import IDDPM
    from vgen.rng import keyed_rng

    assert list(consistency_timesteps(4)) == [999, 759, 519, 279]
    assert list(consistency_timesteps(8)) == [999, 879, 759, 639, 519, 399, 279, 159]
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 4)) * 0.3

    def model(x, t):
        return np.einsum("oc,bc...->bo...", weights, x) * np.cos(t / 700.0).reshape(-1, 1, 1, 1, 1)

    noise = rng.standard_normal((2, 4, 2, 3, 3)).astype(np.float32)
    x, ts = noise.astype(np.float64), [999, 759, 519, 279]
    fresh = [keyed_rng(s, 0, 0, "sampler_noise") for s in (0, 1)]
    for i, t in enumerate(ts):
        eps = model(x.astype(np.float32), np.full(2, t)).astype(np.float64)
        c_skip = 0.25 / ((10 * t) ** 2 + 0.25)
        c_out = 10 * t / np.sqrt((10 * t) ** 2 + 0.25)
        f = c_skip * x + c_out * (x - np.sqrt(1 - AC[t]) * eps) / np.sqrt(AC[t])
        if i < 3:
            z = np.stack([r.standard_normal(x.shape[1:]) for r in fresh])
            x = np.sqrt(AC[ts[i + 1]]) * f + np.sqrt(1 - AC[ts[i + 1]]) * z
    rngs = [keyed_rng(s, 0, 0, "sampler_noise") for s in (0, 1)]
    np.testing.assert_allclose(consistency_sample(AC, model, noise, rngs, 4), f, rtol=1e-5, atol=1e-5)
    d = IDDPM(1000, "scaled_linear", False)
    rngs = [keyed_rng(s, 0, 0, "sampler_noise") for s in (0, 1)]
    np.testing.assert_allclose(d.sample(model, noise, rngs, None, "lcm"), f, rtol=1e-5, atol=1e-5)
