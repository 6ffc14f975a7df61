"""Rectified flow against its formulas."""
import numpy as np
from mindspore import Parameter, Tensor, nn

from vgen.objectives.rectified_flow import RectifiedFlow, shift_sigma


class Velocity(nn.Cell):
    """v = a * x_s + b * t/1000: a linear 'denoiser' whose loss has a closed form."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = Parameter(Tensor(np.float32(a)), name="a"), Parameter(Tensor(np.float32(b)), name="b")

    def construct(self, x, t):
        return self.a * x + self.b * (t / 1000.0).reshape((-1,) + (1,) * (x.ndim - 1))


def test_loss_is_the_velocity_mse():
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 4, 2, 4, 4)).astype(np.float32)
    eps = rng.standard_normal(x0.shape).astype(np.float32)
    s = np.array([0.1, 0.5, 0.9], np.float32)
    loss = RectifiedFlow().loss_cell(Velocity(0.3, -0.7))({"latent": Tensor(x0), "noise": Tensor(eps),
                                                            "t": Tensor(s)}).asnumpy()
    sb = s[:, None, None, None, None]
    x_s = (1 - sb) * x0 + sb * eps
    want = ((0.3 * x_s - 0.7 * sb - (eps - x0)) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_timestep_draws():
    rf = RectifiedFlow(logit_mean=0.0, logit_std=1.0, shift=1.0)
    s = np.array([rf.draw_s(np.random.default_rng(i)) for i in range(4000)])
    assert 0 < s.min() and s.max() < 1 and abs(np.median(s) - 0.5) < 0.03  # sigmoid(N(0,1)) has median 1/2
    shifted = RectifiedFlow(shift=3.0)
    s3 = np.array([shifted.draw_s(np.random.default_rng(i)) for i in range(4000)])
    np.testing.assert_allclose(s3, 3 * s / (1 + 2 * s), rtol=1e-6)  # the same draws, shifted
    u = np.array([RectifiedFlow("uniform").draw_s(np.random.default_rng(i)) for i in range(4000)])
    assert abs(u.mean() - 0.5) < 0.02


def test_shifted_schedule_and_euler_sampler_are_exact_on_straight_paths():
    rf = RectifiedFlow(sample_shift=7.0, sampling_steps=10)
    sig = rf.sigmas()
    assert sig[0] == 1.0 and sig[-1] == 0.0 and np.all(np.diff(sig) < 0)
    np.testing.assert_allclose(sig[5], 7 * 0.5 / (1 + 6 * 0.5))
    # with the true velocity of a straight path (eps - x0, constant), Euler lands on x0 exactly
    x0 = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    eps = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    out = rf.sample(lambda x, t: Tensor(eps - x0), Tensor(eps)).asnumpy()
    np.testing.assert_allclose(out, x0, atol=1e-5)
    assert shift_sigma(0.25, 1.0) == 0.25
