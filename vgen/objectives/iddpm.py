"""IDDPM (improved DDPM) as OpenSora 1.0/1.1 train it: linear betas over 1000 steps, epsilon
prediction, learned-range variance trained by the variational bound with the mean detached;
loss = MSE(eps) + VLB (in bits), t ~ U{0..T-1}. Tables are computed in float64 and used in fp32
(Open-Sora 1.1 computes its training tables in fp32: ours differ from its tables by fp32 rounding).
"""
import math

import numpy as np
from mindspore import Tensor, nn, ops

from ..config.models import DDIM_TIMESTEPS, IDDPM_SAMPLERS
from .denoise import plain_denoise

LOG2 = math.log(2.0)


def linear_betas(steps: int) -> np.ndarray:
    scale = 1000.0 / steps
    return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)


def scaled_linear_betas(steps: int, start: float = 0.00085, end: float = 0.012) -> np.ndarray:
    """Latent diffusion's schedule (lvdm "linear", diffusers "scaled_linear"): linear in sqrt(beta)."""
    return np.linspace(start ** 0.5, end ** 0.5, steps, dtype=np.float64) ** 2


def cosine_betas(steps: int, max_beta: float = 0.999) -> np.ndarray:
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - f((i + 1) / steps) / f(i / steps), max_beta) for i in range(steps)], np.float64)


NOISE_SCHEDULES = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "squaredcos_cap_v2": cosine_betas}


class DiffusionTables:
    """Per-timestep coefficients of q(x_t | x_0) and of the posterior q(x_{t-1} | x_t, x_0)."""

    def __init__(self, betas: np.ndarray):
        self.betas = betas = np.asarray(betas, np.float64)
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1)
        self.posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        # the posterior variance is 0 at t=0: its log is clipped to the t=1 value
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)
        self.log_betas = np.log(betas)

    def tensor(self, name: str) -> Tensor:
        return Tensor(getattr(self, name).astype(np.float32))


def cdf_logit(x):
    """The official tanh approximation of the normal CDF, 0.5 (1 + tanh(u)), is sigmoid(2 u): this
    returns 2 u. The sigmoid form is the same function, computed accurately (MindSpore's CPU tanh
    is off by ~1e-4 from |u| = 4 and rounds to exactly 1 near 5, which collapsed the t = 0
    likelihood onto its clamp) and with each tail available as sigmoid(-2u) without cancellation."""
    return (2.0 * math.sqrt(2.0 / math.pi)) * (x + 0.044715 * x * x * x)


def approx_standard_normal_cdf(x):
    return ops.sigmoid(cdf_logit(x))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of data in [-1, 1] discretised to 256 bins under N(means, exp(log_scales)^2),
    as the official (same approximation, same 1e-12 clamps) without fp32 cancellation: the upper
    tail 1 - cdf is sigmoid(-z), and a bin above the mean is the difference of upper tails."""
    centered = x - means
    inv_stdv = ops.exp(-log_scales)
    z_plus = cdf_logit(inv_stdv * (centered + 1.0 / 255.0))
    z_min = cdf_logit(inv_stdv * (centered - 1.0 / 255.0))
    cdf_plus = ops.sigmoid(z_plus)
    one_minus_cdf_min = ops.sigmoid(-z_min)
    delta = ops.where(z_min > 0, one_minus_cdf_min - ops.sigmoid(-z_plus), cdf_plus - ops.sigmoid(z_min))
    log_cdf_plus = ops.log(ops.clamp(cdf_plus, min=1e-12))
    log_one_minus_cdf_min = ops.log(ops.clamp(one_minus_cdf_min, min=1e-12))
    log_delta = ops.log(ops.clamp(delta, min=1e-12))
    return ops.where(x < -0.999, log_cdf_plus, ops.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + ops.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * ops.exp(-logvar2))


def mean_flat(x, frame_mask=None):
    """Mean over all but the batch dim; with a frame mask [B, T] of a [B, C, T, H, W] tensor, the
    mean over the masked-in frames only (OpenSora 1.1)."""
    if frame_mask is None:
        return x.reshape(x.shape[0], -1).mean(-1)
    m = frame_mask.astype(x.dtype)
    per_frame = x.sum(axis=(1, 3, 4))  # [B, T]
    return (per_frame * m).sum(-1) / (m.sum(-1) * (x.shape[1] * x.shape[3] * x.shape[4]))


class IDDPMLoss(nn.Cell):
    """Per-sample IDDPM loss of a batch's named fields: `latent` (x0), `noise`, `t`, and whatever
    the denoiser reads through `denoise(net, x_t, t, batch)`.

    With `frame_masked`, the batch's `frame_mask` [B, T] (True = trained frame, as OpenSora 1.1
    passes x_mask to its model) gives masked-out frames clean (x_t at t = 0) and the loss averages
    over the trained frames only."""

    def __init__(self, net: nn.Cell, tables: DiffusionTables, learn_sigma: bool = True, denoise=plain_denoise,
                 frame_masked: bool = False):
        super().__init__()
        self.net = net
        self.denoise = denoise
        self.learn_sigma = learn_sigma
        self.frame_masked = frame_masked
        for name in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                     "sqrt_recipm1_alphas_cumprod", "posterior_log_variance_clipped", "posterior_mean_coef1",
                     "posterior_mean_coef2", "log_betas"):
            setattr(self, name, tables.tensor(name))

    @staticmethod
    def _at(table, t, ndim: int):
        return ops.gather(table, t, 0).reshape((-1,) + (1,) * (ndim - 1))

    def construct(self, batch):
        x0, noise, t = batch["latent"], batch["noise"], batch["t"]
        nd = x0.ndim
        x_t = self._at(self.sqrt_alphas_cumprod, t, nd) * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t, nd) * noise
        fm = None
        if self.frame_masked:
            fm = batch["frame_mask"]
            t0 = ops.zeros_like(t)
            x_t0 = self._at(self.sqrt_alphas_cumprod, t0, nd) * x0 + \
                self._at(self.sqrt_one_minus_alphas_cumprod, t0, nd) * noise
            x_t = ops.where(fm[:, None, :, None, None], x_t, x_t0)
        out = self.denoise(self.net, x_t, t, batch)
        c = x0.shape[1]
        eps = out[:, :c]
        mse = mean_flat((noise - eps) ** 2, fm)
        if not self.learn_sigma:
            return mse
        # variational bound on the variance only: the mean prediction is detached
        var_values = out[:, c:]
        eps_frozen = ops.stop_gradient(eps)
        coef1, coef2 = self._at(self.posterior_mean_coef1, t, nd), self._at(self.posterior_mean_coef2, t, nd)
        pred_x0 = self._at(self.sqrt_recip_alphas_cumprod, t, nd) * x_t - self._at(self.sqrt_recipm1_alphas_cumprod, t, nd) * eps_frozen
        model_mean = coef1 * pred_x0 + coef2 * x_t
        min_log = self._at(self.posterior_log_variance_clipped, t, nd)
        max_log = self._at(self.log_betas, t, nd)
        frac = (var_values + 1.0) / 2.0
        model_log_var = frac * max_log + (1.0 - frac) * min_log
        true_mean = coef1 * x0 + coef2 * x_t
        kl = mean_flat(normal_kl(true_mean, min_log, model_mean, model_log_var), fm) / LOG2
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var), fm) / LOG2
        vb = ops.where(t == 0, nll, kl)
        return mse + vb


class IDDPM:
    """The objective: host-side draws (timesteps, noise) and the in-graph loss."""

    fields = ("latent", "noise", "t")  # what its loss cell reads of a batch (besides the denoiser's)

    def __init__(self, diffusion_steps: int = 1000, noise_schedule: str = "linear", learn_sigma: bool = True,
                 sampling_steps: int = 100, cfg_scale: float = 7.0, ddim_timesteps: str = "respaced"):
        if noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"model.objective.noise_schedule={noise_schedule!r}: expected one of "
                             f"{sorted(NOISE_SCHEDULES)}")
        if ddim_timesteps not in DDIM_TIMESTEPS:
            raise ValueError(f"model.objective.ddim_timesteps={ddim_timesteps!r}: expected one of {DDIM_TIMESTEPS}")
        self.ddim_timesteps = ddim_timesteps
        betas = NOISE_SCHEDULES[noise_schedule](diffusion_steps)
        self.tables = DiffusionTables(betas)
        self.num_timesteps = diffusion_steps
        self.learn_sigma = learn_sigma
        self.sampling_steps = sampling_steps
        self.cfg_scale = cfg_scale

    def draw(self, rngs, latent_shape, step: int = 0):
        """One generator per sample (keyed by seed, step, global sample index) -> timesteps, noise."""
        t = np.array([r.integers(0, self.num_timesteps) for r in rngs["timestep"]], np.int32)
        noise = np.stack([r.standard_normal(latent_shape, dtype=np.float32) for r in rngs["noise"]])
        return {"t": t, "noise": noise}

    def timesteps_at(self, levels) -> np.ndarray:
        """The `t` field of noise levels in [0, 1] (0 data, 1 noise): timestep round(level x (T - 1))."""
        return np.rint(np.asarray(levels, np.float64) * (self.num_timesteps - 1)).astype(np.int32)

    def loss_cell(self, net: nn.Cell, denoise=plain_denoise, frame_masked: bool = False) -> nn.Cell:
        return IDDPMLoss(net, self.tables, self.learn_sigma, denoise, frame_masked)

    # ---- sampling (host-side float64 arithmetic around the model calls) ----------------------------

    def respaced(self, steps: int):
        """(tables, timestep map) of `steps` evenly strided timesteps, as the official
        space_timesteps(T, str(steps)): betas recomputed from alphas_cumprod at the kept steps; the
        model is called with the original timestep index."""
        kept = sorted({round(i * (self.num_timesteps - 1) / max(steps - 1, 1)) for i in range(steps)})
        ac, last, betas = self.tables.alphas_cumprod, 1.0, []
        for i in kept:
            betas.append(1.0 - ac[i] / last)
            last = ac[i]
        return DiffusionTables(np.array(betas)), np.array(kept, np.int32)

    def ddim_schedule(self, steps: int):
        """(timesteps, alphas_cumprod at each, at the step it moves to), last step first-called.
        respaced: the IDDPM respacing (OpenSora's DDIM), the chain ends at alpha 1; leading: lvdm's
        make_ddim_timesteps (uniform) = diffusers' DDIMScheduler "leading" with steps_offset 1,
        t = 1, 1 + c, .., c = T // steps (50 steps: 1, 21, .., 981), ending at alphas_cumprod[0]
        (lvdm's ddim_alphas_prev[0]; diffusers' set_alpha_to_one=False)."""
        ac = self.tables.alphas_cumprod
        if self.ddim_timesteps == "leading":
            stride = self.num_timesteps // steps
            if stride < 1:
                raise ValueError(f"{steps} DDIM steps exceed the {self.num_timesteps} diffusion steps")
            timesteps, final = np.arange(steps) * stride + 1, ac[0]
        else:
            timesteps, final = self.respaced(steps)[1], 1.0
        alphas = ac[timesteps]
        return timesteps.astype(np.int32), alphas, np.concatenate([[final], alphas[:-1]])

    def sample(self, model, noise: np.ndarray, rngs, steps: int = None, method: str = "iddpm"):
        """x_0 from noise. `model(x, t)` -> its output (eps, and the variance channels when
        learn_sigma) as numpy, t the original timesteps [B]. iddpm: ancestral sampling with the
        learned-range variance (fixed posterior variance without learn_sigma), fresh noise from
        each sample's generator in `rngs` every step, no clipping of x0 (OpenSora); ddim:
        deterministic (eta 0) on `ddim_schedule`; lcm: multistep consistency sampling of a
        distilled student (objectives/consistency.py)."""
        if method not in IDDPM_SAMPLERS:
            raise ValueError(f"sample.method={method!r}: expected one of {IDDPM_SAMPLERS}")
        if method == "lcm":  # a consistency-distilled student (T2V-Turbo): 4 steps unless told
            from .consistency import consistency_sample

            return consistency_sample(self.tables.alphas_cumprod, model, noise, rngs, steps or 4)
        x = noise.astype(np.float64)
        c = noise.shape[1]
        if method == "ddim":
            timesteps, alphas, alphas_prev = self.ddim_schedule(steps or self.sampling_steps)
            for t, a, a_prev in reversed(list(zip(timesteps, alphas, alphas_prev))):
                eps = np.asarray(model(x.astype(np.float32), np.full(len(x), t, np.int32)), np.float64)[:, :c]
                x0 = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
                x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
            return x.astype(np.float32)
        tab, timestep = self.respaced(steps or self.sampling_steps)
        for i in reversed(range(tab.num_timesteps)):
            out = np.asarray(model(x.astype(np.float32), np.full(len(x), timestep[i], np.int32)), np.float64)
            eps = out[:, :c]
            x0 = tab.sqrt_recip_alphas_cumprod[i] * x - tab.sqrt_recipm1_alphas_cumprod[i] * eps
            mean = tab.posterior_mean_coef1[i] * x0 + tab.posterior_mean_coef2[i] * x
            log_var = tab.posterior_log_variance_clipped[i]
            if self.learn_sigma:
                frac = (out[:, c:] + 1.0) / 2.0
                log_var = frac * tab.log_betas[i] + (1.0 - frac) * log_var
            if i > 0:
                fresh = np.stack([r.standard_normal(x.shape[1:]) for r in rngs])
                x = mean + np.exp(0.5 * log_var) * fresh
            else:
                x = mean
        return x.astype(np.float32)
