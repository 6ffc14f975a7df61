"""Precision policy: the compute dtype of the model's parameters, fp32 master weights for low
precision, and dynamic loss scaling for fp16 (overflow: step skipped, scale lowered)."""
import fnmatch
from dataclasses import dataclass

import mindspore as ms

from ..config.validate import ConfigError

DTYPES = {"fp32": ms.float32, "bf16": ms.bfloat16, "fp16": ms.float16}


@dataclass
class PrecisionPolicy:
    name: str
    compute_dtype: object
    exempt: tuple = ()  # parameter-name patterns kept in fp32

    @property
    def master_weights(self) -> bool:
        return self.name != "fp32"

    @property
    def loss_scaling(self) -> bool:
        return self.name == "fp16"

    def keep_fp32(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in self.exempt)


def resolve_precision(requested: str, device: str, exempt=()) -> PrecisionPolicy:
    name = requested
    if name == "auto":
        name = "bf16" if device in ("Ascend", "GPU") else "fp32"
    if name == "bf16" and device == "CPU":
        raise ConfigError("precision.dtype=bf16: MindSpore's CPU backend has no bf16 compute (MatMul, Softmax, "
                          "LayerNorm, Conv all fail in bf16). Train bf16 on Ascend or GPU; on CPU use "
                          "precision=fp32 (or precision=auto, which picks fp32 on CPU).")
    if name not in DTYPES:
        raise ConfigError(f"precision.dtype={requested!r}: expected auto, fp32, bf16 or fp16")
    return PrecisionPolicy(name, DTYPES[name], tuple(exempt))


def cast_model(net, policy: PrecisionPolicy) -> None:
    """Parameters (trained or frozen, e.g. a LoRA base) in the compute dtype; buffers and the
    exempt names stay fp32."""
    from ..models.layers.init import is_buffer, named_params

    if policy.compute_dtype == ms.float32:
        return
    for name, q in named_params(net):
        if not is_buffer(q) and not policy.keep_fp32(name):
            q.set_dtype(policy.compute_dtype)


class LossScaler:
    """Host-side dynamic loss scale; the step reports whether its gradients were finite."""

    def __init__(self, enabled: bool, init_scale: float, dynamic: bool, window: int, factor: float, min_scale: float):
        self.enabled, self.dynamic = enabled, dynamic
        self.scale = float(init_scale) if enabled else 1.0
        self.window, self.factor, self.min_scale = window, factor, min_scale
        self.good_steps = 0
        self.overflows = 0

    def update(self, finite: bool) -> None:
        if not self.enabled:
            return
        if not finite:
            self.overflows += 1
            self.good_steps = 0
            if self.dynamic:
                self.scale = max(self.min_scale, self.scale / self.factor)
            return
        self.good_steps += 1
        if self.dynamic and self.good_steps >= self.window:
            self.scale *= self.factor
            self.good_steps = 0

    def state_dict(self):
        return {"scale": self.scale, "good_steps": self.good_steps, "overflows": self.overflows}

    def load_state_dict(self, d):
        self.scale, self.good_steps, self.overflows = float(d["scale"]), int(d["good_steps"]), int(d["overflows"])
