"""The denoiser as the samplers call it: model(x, t) -> prediction (numpy), one compiled call per
step, with classifier-free guidance u + s (c - u) over a batch of both branches (as the official
pipelines run them). IDDPM models with a learned variance guide the eps channels only; the
variance comes from the conditional branch (OpenSora's forward_with_cfg)."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ..objectives.denoise import plain_denoise


class Denoiser(nn.Cell):
    def __init__(self, net, denoise=None):
        super().__init__()
        self.net = net
        self.denoise = denoise or plain_denoise

    def construct(self, x, t, inputs):
        return self.denoise(self.net, x, t, inputs).astype(ms.float32)


def _numpy(x):
    return x.asnumpy() if isinstance(x, Tensor) else np.asarray(x)


class GuidedModel:
    """Compiled once; `condition` sets the prompts' inputs of the next sampling loop. `runner`
    replaces the compiled denoiser call (x, t, inputs) -> prediction, e.g. a step cache with a
    reset() per loop (the family's TeaCache)."""

    def __init__(self, family, scale: float, guided_channels: int = None, jit: bool = True, runner=None):
        self.cell = Denoiser(family.net, family.denoise)
        self.scale, self.guided = float(scale), guided_channels
        self.inputs = None
        self.run = runner or (ms.jit(self._run) if jit else self._run)

    def condition(self, cond: dict, uncond: dict) -> "GuidedModel":
        both = cond if self.scale == 1.0 else {k: np.concatenate([cond[k], uncond[k]]) for k in cond}
        self.inputs = ms.mutable({k: Tensor(v) for k, v in both.items()})
        if hasattr(self.run, "reset"):
            self.run.reset()
        return self

    def _run(self, x, t, inputs):
        return self.cell(x, t, inputs)

    def __call__(self, x, t):
        x, t = _numpy(x).astype(np.float32), _numpy(t)
        if self.scale == 1.0:
            return self.run(Tensor(x), Tensor(t), self.inputs).asnumpy()
        b = len(x)
        out = self.run(Tensor(np.concatenate([x, x])), Tensor(np.concatenate([t, t])), self.inputs).asnumpy()
        c, u = out[:b], out[b:]
        g = self.guided or out.shape[1]
        c[:, :g] = u[:, :g] + self.scale * (c[:, :g] - u[:, :g])
        return c
