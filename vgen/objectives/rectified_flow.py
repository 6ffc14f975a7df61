"""Rectified flow / flow matching: x_s = (1 - s) x0 + s eps for a noise level s in (0, 1), loss =
mean squared error of the predicted velocity. Two conventions of the same path:
  HunyuanVideo: the model sees t = 1000 s and predicts v = eps - x0;
  Step-Video (data_at_one): t = 1 - s runs from noise 0 to data 1, the model sees t (its adaLN
  multiplies by 1000 itself) and predicts v = x0 - eps; its sampler integrates t from 0 to 1.

Training timesteps are not published. We draw s logit-normally (s = sigmoid(n), n ~ N(mean, std),
as SD3 found best for rectified flow) and optionally shift them towards noise,
s' = shift s / (1 + (shift - 1) s), the same map the official sampler applies to its schedule
(shift 7 at 720p; a shift > 1 spends more training on the noisier half, which higher resolutions
need). `timestep_sampling: uniform` draws s ~ U(0, 1) instead.

The sampler is Euler on sigma = linspace(1, 0, N + 1) shifted by `sample_shift`."""
import numpy as np
from mindspore import Tensor, nn

from .denoise import plain_denoise


def shift_sigma(s, shift: float):
    return shift * s / (1.0 + (shift - 1.0) * s)


class RectifiedFlowLoss(nn.Cell):
    """Per-sample MSE between the predicted and the true velocity: the batch's named fields
    `latent` (x0), `noise`, `t` (the noise level s in (0, 1)); the denoiser is called as
    denoise(net, x_s, its timestep, batch). Conventions (`data_at_one`):
      False (HunyuanVideo): timestep 1000 s, velocity noise - x0;
      True (Step-Video): timestep (1 - s) * timestep_scale (t runs from noise 0 to data 1; the
      model scales it itself), velocity x0 - noise."""

    def __init__(self, net: nn.Cell, denoise=plain_denoise, data_at_one: bool = False, timestep_scale: float = 1000.0):
        super().__init__()
        self.net = net
        self.denoise = denoise
        self.data_at_one = data_at_one
        self.timestep_scale = timestep_scale

    def error(self, x0, noise, s, batch):
        """Per-sample MSE [B] of the velocity predicted at the path point of (x0, noise, s)."""
        sb = s.reshape((-1,) + (1,) * (x0.ndim - 1))
        x_s = (1.0 - sb) * x0 + sb * noise
        if self.data_at_one:
            v = self.denoise(self.net, x_s, (1.0 - s) * self.timestep_scale, batch)
            target = x0 - noise
        else:
            v = self.denoise(self.net, x_s, s * self.timestep_scale, batch)
            target = noise - x0
        return ((v - target) ** 2).reshape(x0.shape[0], -1).mean(-1)

    def construct(self, batch):
        return self.error(batch["latent"], batch["noise"], batch["t"], batch)


class RectifiedFlow:
    fields = ("latent", "noise", "t")  # what its loss cell reads of a batch (besides the denoiser's)

    def __init__(self, timestep_sampling: str = "logit_normal", logit_mean: float = 0.0, logit_std: float = 1.0,
                 shift: float = 1.0, sample_shift: float = 7.0, sampling_steps: int = 50, data_at_one: bool = False,
                 timestep_scale: float = 1000.0, cfg_scale: float = 1.0):
        if timestep_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"timestep_sampling={timestep_sampling!r}: expected logit_normal or uniform")
        self.timestep_sampling = timestep_sampling
        self.logit_mean, self.logit_std, self.shift = logit_mean, logit_std, shift
        self.sample_shift, self.sampling_steps = sample_shift, sampling_steps
        self.data_at_one, self.timestep_scale, self.cfg_scale = data_at_one, float(timestep_scale), cfg_scale

    @classmethod
    def from_config(cls, o) -> "RectifiedFlow":
        """From a model's `objective` group (vgen.config.models.RectifiedFlowConfig)."""
        return cls(o.timestep_sampling, o.logit_mean, o.logit_std, o.shift, o.sample_shift, o.sampling_steps,
                   o.data_at_one, o.timestep_scale, o.cfg_scale)

    def draw_s(self, rng: np.random.Generator) -> float:
        if self.timestep_sampling == "uniform":
            s = rng.random()
        else:
            s = 1.0 / (1.0 + np.exp(-(self.logit_mean + self.logit_std * rng.standard_normal())))
        return float(shift_sigma(s, self.shift))

    def draw(self, rngs, latent_shape, step: int = 0):
        """Keyed draws per sample: s in (0, 1) (passed as `t`) and the noise."""
        s = np.array([self.draw_s(r) for r in rngs["timestep"]], np.float32)
        noise = np.stack([r.standard_normal(latent_shape, dtype=np.float32) for r in rngs["noise"]])
        return {"t": s, "noise": noise}

    def timesteps_at(self, levels) -> np.ndarray:
        """The `t` field of noise levels in [0, 1] (0 data, 1 noise): the noise level itself."""
        return np.asarray(levels, np.float32)

    def loss_cell(self, net: nn.Cell, denoise=plain_denoise, frame_masked: bool = False) -> nn.Cell:
        return RectifiedFlowLoss(net, denoise, self.data_at_one, self.timestep_scale)

    def sigmas(self, steps: int = None, shift: float = None) -> np.ndarray:
        steps = steps or self.sampling_steps
        return shift_sigma(np.linspace(1.0, 0.0, steps + 1), self.sample_shift if shift is None else shift)

    def sample(self, velocity, noise, steps: int = None, shift: float = None):
        """Euler integration from noise (sigma 1) to data (sigma 0); velocity(x, timestep [B]) -> v in
        the model's convention (Step-Video's official sampler: timesteps 1 - sigma, x += v dt)."""
        x = noise
        sig = self.sigmas(steps, shift)
        b = noise.shape[0]
        for i in range(len(sig) - 1):
            level = (1.0 - sig[i]) if self.data_at_one else sig[i]
            t = Tensor(np.full(b, level * self.timestep_scale, np.float32))
            d = float(sig[i + 1] - sig[i])
            x = x + (-d if self.data_at_one else d) * velocity(x, t)
        return x
