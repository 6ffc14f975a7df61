"""The IDDPM objective against its formulas, computed independently here in float64 numpy."""
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from vgen.objectives.iddpm import IDDPM


def reference_loss(x0, noise, t, out, T=1000):
    """Improved DDPM (Nichol & Dhariwal): L_simple on eps + L_vlb on the learned-range variance,
    with the predicted mean held fixed in the VLB term; in bits."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    a = np.cumprod(1 - betas)
    a_prev = np.append(1.0, a[:-1])
    post_var = betas * (1 - a_prev) / (1 - a)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    c1 = betas * np.sqrt(a_prev) / (1 - a)
    c2 = (1 - a_prev) * np.sqrt(1 - betas) / (1 - a)
    C = x0.shape[1]
    eps, var_v = out[:, :C].astype(np.float64), out[:, C:].astype(np.float64)
    losses = []
    for i in range(x0.shape[0]):
        ti = t[i]
        xt = np.sqrt(a[ti]) * x0[i] + np.sqrt(1 - a[ti]) * noise[i]
        mse = np.mean((noise[i] - eps[i]) ** 2)
        x0_hat = (xt - np.sqrt(1 - a[ti]) * eps[i]) / np.sqrt(a[ti])
        mean_p = c1[ti] * x0_hat + c2[ti] * xt
        frac = (var_v[i] + 1) / 2
        logvar_p = frac * np.log(betas[ti]) + (1 - frac) * post_logvar[ti]
        mean_q, logvar_q = c1[ti] * x0[i] + c2[ti] * xt, post_logvar[ti]
        if ti == 0:
            cdf = lambda z: 0.5 * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
            inv = np.exp(-0.5 * logvar_p)
            lo, hi = cdf(inv * (x0[i] - mean_p - 1 / 255)), cdf(inv * (x0[i] - mean_p + 1 / 255))
            ll = np.where(x0[i] < -0.999, np.log(np.maximum(hi, 1e-12)),
                          np.where(x0[i] > 0.999, np.log(np.maximum(1 - lo, 1e-12)), np.log(np.maximum(hi - lo, 1e-12))))
            vb = -np.mean(ll) / math.log(2)
        else:
            kl = 0.5 * (-1 + logvar_p - logvar_q + np.exp(logvar_q - logvar_p) + (mean_q - mean_p) ** 2 * np.exp(-logvar_p))
            vb = np.mean(kl) / math.log(2)
        losses.append(mse + vb)
    return np.array(losses)


class FixedOutput(nn.Cell):
    """A 'denoiser' that returns a trainable tensor: isolates the objective."""

    def __init__(self, out):
        super().__init__()
        self.out = Parameter(Tensor(out), name="out")

    def construct(self, x_t, t, *cond):
        return self.out * 1.0


def _case(seed=0, B=4, shape=(4, 2, 4, 4)):
    rng = np.random.default_rng(seed)
    x0 = np.clip(rng.standard_normal((B, *shape)).astype(np.float32), -1, 1)
    noise = rng.standard_normal((B, *shape)).astype(np.float32)
    out = (rng.standard_normal((B, 2 * shape[0], *shape[1:])) * 0.5).astype(np.float32)
    t = np.array([0, 1, 500, 999][:B], np.int32)
    return x0, noise, t, out


def batch(x0, noise, t):
    """The loss cell's named inputs."""
    as_tensor = lambda a: a if isinstance(a, Tensor) else Tensor(a)
    return {"latent": as_tensor(x0), "noise": as_tensor(noise), "t": as_tensor(t)}


def test_loss_matches_formulas():
    x0, noise, t, out = _case()
    obj = IDDPM()
    loss = obj.loss_cell(FixedOutput(out))(batch(x0, noise, t)).asnumpy()
    np.testing.assert_allclose(loss, reference_loss(x0, noise, t, out), rtol=2e-4, atol=1e-5)


def test_betas_and_draws():
    obj = IDDPM()
    b = obj.tables.betas
    assert len(b) == 1000 and math.isclose(b[0], 1e-4) and math.isclose(b[-1], 0.02)
    rngs = {"timestep": [np.random.default_rng(i) for i in range(64)],
            "noise": [np.random.default_rng(100 + i) for i in range(64)]}
    d = obj.draw(rngs, (4, 2, 2, 2))
    assert d["t"].dtype == np.int32 and d["t"].min() >= 0 and d["t"].max() < 1000
    assert d["noise"].shape == (64, 4, 2, 2, 2)


def test_vlb_does_not_train_the_mean():
    """d loss / d eps is the MSE gradient alone: the VLB sees a detached mean."""
    x0, noise, t, out = _case(1)
    net = FixedOutput(out)
    cell = IDDPM().loss_cell(net)
    grad = ms.grad(lambda a, b, c: cell(batch(a, b, c)).sum(), None, [net.out])(Tensor(x0), Tensor(noise), Tensor(t))[0]
    g = grad.asnumpy()
    C = x0.shape[1]
    n = np.prod(x0.shape[1:])
    np.testing.assert_allclose(g[:, :C], -2 * (noise - out[:, :C]) / n, rtol=1e-4, atol=1e-7)
    assert np.abs(g[:, C:]).max() > 0  # the variance channels do learn from the VLB


def test_without_learned_sigma_loss_is_mse():
    x0, noise, t, out = _case(2)
    loss = IDDPM(learn_sigma=False).loss_cell(FixedOutput(out[:, :4]))(batch(x0, noise, t))
    np.testing.assert_allclose(loss.asnumpy(), ((noise - out[:, :4]) ** 2).reshape(4, -1).mean(1), rtol=1e-5)


def test_vb_at_t0_and_t1_in_the_tails():
    """At t = 0 the variance is ~1e-4, so the bins sit 2-10 standard deviations from the mean: the
    likelihood lives in the CDF's tails, where a tanh-based fp32 CDF rounds to 1 and every bin
    collapses onto the 1e-12 clamp. The vb term (loss - mse) against float64 numpy at t = 0 and 1."""
    rng = np.random.default_rng(3)
    shape = (4, 2, 4, 4)
    x0 = np.clip(rng.standard_normal((2, *shape)), -1, 1).astype(np.float32)  # ~30% exactly +-1: the edge bins
    noise = rng.standard_normal((2, *shape)).astype(np.float32)
    eps = noise + rng.normal(0, 3.0, noise.shape).astype(np.float32)  # means 0-10 std from x0
    var_v = rng.uniform(-1, 1, noise.shape).astype(np.float32)
    out = np.concatenate([eps, var_v], 1)
    t = np.array([0, 1], np.int32)
    got = IDDPM().loss_cell(FixedOutput(out))(batch(x0, noise, t)).asnumpy()
    want = reference_loss(x0, noise, t, out)
    mse = ((noise - eps).astype(np.float64) ** 2).reshape(2, -1).mean(1)
    assert want[0] - mse[0] < 27.0  # the t = 0 term did not collapse onto -log2(1e-12) = 39.9
    np.testing.assert_allclose(got - mse, want - mse, rtol=1e-4)
