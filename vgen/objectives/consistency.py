"""Latent consistency distillation as T2V-Turbo trains it (train_t2v_turbo_v1_lora.py), on an
eps-prediction teacher with scaled-linear betas.

Per sample: a DDIM solver index n ~ U{0..N-1} (N = 50 solver steps at 19, 39, .., 999), its
timestep s = t_n and the end t = max(s - k, 0) (skip k = 20, the previous solver step), noise, and a
guidance scale w ~ U[w_min, w_max] that the student embeds (time_cond_proj).

    x_s      = sqrt(a_s) x0 + sqrt(1 - a_s) eps
    student  f(x_s, s) = c_skip(s) x_s + c_out(s) x0_hat(x_s, s; student eps)
    teacher  CFG in the LCM form on the frozen base (adapters off):
             x0_w = x0_c + w (x0_c - x0_u),  eps_w = eps_c + w (eps_c - eps_u)
             x_t  = sqrt(a_prev(n)) x0_w + sqrt(1 - a_prev(n)) eps_w   (DDIM, eta 0)
    target   f(x_t, t) with the target weights (the online adapters in the official LoRA script,
             or their EMA), under no gradient
    loss     pseudo-Huber: mean(sqrt((f_student - f_target)^2 + c^2) - c), c = 0.001

with the boundary scalings c_skip(t) = sd^2 / ((10 t)^2 + sd^2), c_out(t) = 10 t / sqrt((10 t)^2 +
sd^2), sd = 0.5, and x0_hat = (x - sqrt(1 - a) eps) / sqrt(a). The teacher step and the target
prediction need no gradient: they are forward-only cells run before the student's step (the
teacher compiled with the adapters off, the target with them on), and the student's loss reads
the target as a batch field."""
import numpy as np
from mindspore import Tensor, nn, ops

from .denoise import plain_denoise


class DDIMSolver:
    """T2V-Turbo's DDIMSolver tables: timesteps (arange(1, N + 1) * (T // N)) - 1, the alphas
    there and at each one's previous step (alphas_cumprod[0] before the first)."""

    def __init__(self, alphas_cumprod: np.ndarray, steps: int = 50):
        total = len(alphas_cumprod)
        self.step_ratio = total // steps
        self.timesteps = (np.arange(1, steps + 1) * self.step_ratio - 1).astype(np.int32)
        self.alphas = alphas_cumprod[self.timesteps]
        self.alphas_prev = np.concatenate([[alphas_cumprod[0]], alphas_cumprod[self.timesteps[:-1]]])


def boundary_scalings(t, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """(c_skip, c_out) of LCM's consistency parametrisation at timesteps t (numpy or tensors)."""
    scaled = timestep_scaling * t
    c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
    c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


def _at(table, index, ndim: int):
    return ops.gather(table, index, 0).reshape((-1,) + (1,) * (ndim - 1))


class _Tables(nn.Cell):
    """sqrt(a) and sqrt(1 - a) per diffusion timestep, and the consistency output of an eps."""

    def __init__(self, net, alphas_cumprod: np.ndarray, denoise):
        super().__init__()
        self.net, self.denoise = net, denoise
        self.sqrt_a = Tensor(np.sqrt(alphas_cumprod).astype(np.float32))
        self.sqrt_1ma = Tensor(np.sqrt(1.0 - alphas_cumprod).astype(np.float32))

    def x0_hat(self, x, eps, t):
        return (x - _at(self.sqrt_1ma, t, x.ndim) * eps) / _at(self.sqrt_a, t, x.ndim)

    def eps_of(self, x, t, batch):
        return self.denoise(self.net, x, t, batch)[:, :x.shape[1]]

    def consistency(self, x, t, batch, c_skip, c_out):
        """f(x, t) = c_skip x + c_out x0_hat(x, t), c_skip / c_out [B] of the batch."""
        shape = (-1,) + (1,) * (x.ndim - 1)
        return c_skip.reshape(shape) * x + c_out.reshape(shape) * self.x0_hat(x, self.eps_of(x, t, batch), t)


class TeacherStep(_Tables):
    """x_t [B, ...] from the batch's latent, noise, t_start, solver_index, cfg_w, text_emb and
    text_emb_uncond: the teacher's CFG (LCM form) DDIM step. Run it with the adapters off."""

    def __init__(self, net, alphas_cumprod, solver: DDIMSolver, denoise=plain_denoise, uncond_fields=("text_emb",),
                 fields=("text_emb",)):
        """`fields`: what `denoise` reads of a batch; `uncond_fields`: those of them that have an
        unconditional version (`<field>_uncond`)."""
        super().__init__(net, alphas_cumprod, denoise)
        self.sqrt_a_prev = Tensor(np.sqrt(solver.alphas_prev).astype(np.float32))
        self.sqrt_1ma_prev = Tensor(np.sqrt(1.0 - solver.alphas_prev).astype(np.float32))
        self.uncond_fields, self.fields = tuple(uncond_fields), tuple(fields)

    def construct(self, batch):
        x0, noise, s, n = batch["latent"], batch["noise"], batch["t_start"], batch["solver_index"]
        nd = x0.ndim
        x_s = _at(self.sqrt_a, s, nd) * x0 + _at(self.sqrt_1ma, s, nd) * noise
        # new dicts of the denoiser's fields (a copy of the whole batch loses its shapes in a graph)
        cond = {k: batch[k] for k in self.fields}
        uncond = {k: batch[k + "_uncond"] if k in self.uncond_fields else batch[k] for k in self.fields}
        eps_c = self.eps_of(x_s, s, cond)
        eps_u = self.eps_of(x_s, s, uncond)
        w = batch["cfg_w"].reshape((-1,) + (1,) * (nd - 1))
        x0_c, x0_u = self.x0_hat(x_s, eps_c, s), self.x0_hat(x_s, eps_u, s)
        x0_w = x0_c + w * (x0_c - x0_u)
        eps_w = eps_c + w * (eps_c - eps_u)
        return _at(self.sqrt_a_prev, n, nd) * x0_w + _at(self.sqrt_1ma_prev, n, nd) * eps_w


class TargetPrediction(_Tables):
    """f(x_t, t) of the target weights on the teacher's x_t (batch `x_prev`, `t_end`, c_skip_end, c_out_end)."""

    def construct(self, batch):
        return self.consistency(batch["x_prev"], batch["t_end"], batch, batch["c_skip_end"], batch["c_out_end"])


class ConsistencyLoss(_Tables):
    """Per-sample pseudo-Huber distance [B] of the student's f(x_s, s) to the batch's `target`
    (times `distill_weight`: 0 on ranks that only score rewards), plus the reward terms of f
    (objectives/rewards.py; each a scalar, added to every sample's loss)."""

    def __init__(self, net, alphas_cumprod, denoise=plain_denoise, huber_c: float = 0.001, terms=(),
                 distill_weight: float = 1.0):
        super().__init__(net, alphas_cumprod, denoise)
        self.huber_c, self.distill_weight = float(huber_c), float(distill_weight)
        self.terms = nn.CellList(list(terms))

    def construct(self, batch):
        x0, noise, s = batch["latent"], batch["noise"], batch["t_start"]
        x_s = _at(self.sqrt_a, s, x0.ndim) * x0 + _at(self.sqrt_1ma, s, x0.ndim) * noise
        pred = self.consistency(x_s, s, batch, batch["c_skip_start"], batch["c_out_start"])
        d = pred - batch["target"]
        loss = ops.sqrt(d * d + self.huber_c ** 2) - self.huber_c
        loss = loss.reshape(loss.shape[0], -1).mean(-1) * self.distill_weight
        for term in self.terms:
            loss = loss + term(pred, batch)
        return loss


class ConsistencyDistillation:
    """The objective's host side: the draws and the per-sample scalings, keyed per sample. The
    student's loss cell reads `target`, the teacher's step and the target's prediction computed
    before it (vgen/train/distill.py); `fields` are what those three read of a batch, and the
    unconditional text (`<field>_uncond`, the empty prompt's) of each of `text_fields`."""

    uncond_text = True  # the batches carry the empty prompt's text for the teacher's CFG

    def __init__(self, alphas_cumprod: np.ndarray, solver_steps: int = 50, skip: int = None, w_min: float = 5.0,
                 w_max: float = 15.0, huber_c: float = 0.001, timestep_scaling: float = 10.0,
                 text_fields=("text_emb",), base=None, rewards=(), decoder=None, distill_weight: float = 1.0):
        """`rewards`: FrameReward terms on the student's prediction, decoded by `decoder`;
        `distill_weight`: of the consistency term (0 where a rank only scores rewards)."""
        if not 0 < w_min <= w_max:
            raise ValueError(f"guidance range [{w_min}, {w_max}]: need 0 < w_min <= w_max")
        self.alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
        self.solver = DDIMSolver(self.alphas_cumprod, solver_steps)
        self.skip = self.solver.step_ratio if skip is None else int(skip)  # official: T // N
        self.w_min, self.w_max = float(w_min), float(w_max)
        self.huber_c, self.timestep_scaling = float(huber_c), float(timestep_scaling)
        self.text_fields = tuple(text_fields)
        self.base = base  # the diffusion objective distilled: its sampler draws the student's videos (lcm)
        self.rewards, self.decoder, self.distill_weight = list(rewards), decoder, float(distill_weight)
        # drawn besides the timestep and noise streams
        self.streams = tuple(dict.fromkeys(("guidance", *(s for r in self.rewards for s in r.streams))))
        self.fields = ("latent", "noise", "solver_index", "t_start", "t_end", "cfg_w", "c_skip_start", "c_out_start",
                       "c_skip_end", "c_out_end", *(f + "_uncond" for f in self.text_fields),
                       *(f for r in self.rewards for f in r.fields))

    def draw(self, rngs, latent_shape, step: int = 0) -> dict:
        """Per sample (its own generators): the solver index, its start and end timesteps, the
        noise, w (cfg_w for the teacher; `guidance`, what the student embeds) and the scalings."""
        n = np.array([r.integers(0, len(self.solver.timesteps)) for r in rngs["timestep"]], np.int32)
        start = self.solver.timesteps[n]
        end = np.maximum(start - self.skip, 0).astype(np.int32)
        w = np.array([r.uniform(self.w_min, self.w_max) for r in rngs["guidance"]], np.float32)
        noise = np.stack([r.standard_normal(latent_shape, dtype=np.float32) for r in rngs["noise"]])
        out = {"solver_index": n, "t_start": start, "t_end": end, "noise": noise, "cfg_w": w, "guidance": w}
        for key, t in (("start", start), ("end", end)):
            c_skip, c_out = boundary_scalings(t.astype(np.float64), timestep_scaling=self.timestep_scaling)
            out[f"c_skip_{key}"], out[f"c_out_{key}"] = c_skip.astype(np.float32), c_out.astype(np.float32)
        for reward in self.rewards:
            out.update(reward.draw(rngs, latent_shape))
        return out

    def prepare(self, batch) -> dict:
        """Host-side fields after encoding: the rewards' text features of the captions."""
        out = {}
        for reward in self.rewards:
            out.update(reward.prepare(batch))
        return out

    def teacher_step(self, net, denoise=plain_denoise, fields=("text_emb",)) -> TeacherStep:
        """The teacher's step on `net` called by `denoise`, which reads `fields` of a batch."""
        return TeacherStep(net, self.alphas_cumprod, self.solver, denoise, self.text_fields, fields)

    def target_cell(self, net, denoise=plain_denoise) -> TargetPrediction:
        return TargetPrediction(net, self.alphas_cumprod, denoise)

    def loss_cell(self, net, denoise=plain_denoise, frame_masked: bool = False) -> ConsistencyLoss:
        if frame_masked:
            raise ValueError("consistency distillation trains every frame: the family's frame masks have no place in it")
        return ConsistencyLoss(net, self.alphas_cumprod, denoise, self.huber_c,
                               [r.term(self.decoder) for r in self.rewards], self.distill_weight)


def consistency_timesteps(steps: int, origin_steps: int = 50, total: int = 1000) -> np.ndarray:
    """T2V-Turbo's inference schedule (its scheduler's set_timesteps): every (origin // steps)-th
    solver timestep from the top, e.g. 4 steps: 999, 759, 519, 279; 8 steps: 999, 879, .., 159."""
    origin = np.arange(1, origin_steps + 1) * (total // origin_steps) - 1
    skipping = len(origin) // steps
    if skipping < 1:
        raise ValueError(f"{steps} consistency steps exceed the {origin_steps} solver steps")
    return origin[::-skipping][:steps].astype(np.int32)


def consistency_sample(alphas_cumprod: np.ndarray, model, noise: np.ndarray, rngs, steps: int = 4,
                       origin_steps: int = 50, timestep_scaling: float = 10.0) -> np.ndarray:
    """Multistep consistency sampling (T2V-Turbo's scheduler step, eta 0): at each timestep the
    student's f(x, t) = c_skip x + c_out x0_hat; before the next one it is noised again to that
    timestep with fresh noise from each sample's generator in `rngs`; the last f is the result.
    `model(x, t)` -> eps (numpy), the guidance embedded by the model itself."""
    ac = np.asarray(alphas_cumprod, np.float64)
    timesteps = consistency_timesteps(steps, origin_steps, len(ac))
    x = noise.astype(np.float64)
    c = noise.shape[1]
    denoised = x
    for i, t in enumerate(timesteps):
        eps = np.asarray(model(x.astype(np.float32), np.full(len(x), t, np.int32)), np.float64)[:, :c]
        c_skip, c_out = boundary_scalings(float(t), timestep_scaling=timestep_scaling)
        denoised = c_skip * x + c_out * (x - np.sqrt(1.0 - ac[t]) * eps) / np.sqrt(ac[t])
        if i + 1 < len(timesteps):
            a_next = ac[timesteps[i + 1]]
            fresh = np.stack([r.standard_normal(x.shape[1:]) for r in rngs])
            x = np.sqrt(a_next) * denoised + np.sqrt(1.0 - a_next) * fresh
    return denoised.astype(np.float32)


def ema_update(target: np.ndarray, online: np.ndarray, decay: float) -> np.ndarray:
    """The target network's EMA step (LCM's update_ema): decay * target + (1 - decay) * online."""
    return decay * target + (1.0 - decay) * online


__all__ = ["DDIMSolver", "boundary_scalings", "ConsistencyDistillation", "TeacherStep", "TargetPrediction",
           "ConsistencyLoss", "consistency_timesteps", "consistency_sample", "ema_update"]
