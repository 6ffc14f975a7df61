"""vgen-plan: the per-rank memory of a training config's model states (parameters, gradients,
optimizer state, ZeRO-3's gathered working set, the online encoders), from shapes alone, for any
model size and worker count; the device's compute dtype (`device=`, default: this machine's, or
Ascend where MindSpore finds no accelerator and the config asks for one with precision=bf16).

    vgen-plan model=hunyuan parallel=zero3 parallel.workers=8 precision=bf16
"""
import hydra
from omegaconf import DictConfig

from ..config.store import register_configs
from .common import CONF_PATH, prepare, setup_logging, user_errors


def planned_device(cfg) -> str:
    """The device a plan is for: the one asked for, else this machine's (bf16 means an accelerator)."""
    from ..runtime import resolve_device

    device = resolve_device(str(cfg.device))
    return "Ascend" if device == "CPU" and cfg.precision.dtype in ("bf16", "fp16") else device


@hydra.main(config_path=CONF_PATH, config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    setup_logging()
    with user_errors():
        plain = prepare(cfg)
        from ..train.memory_plan import plan_memory

        plan = plan_memory(plain, planned_device(plain))
        print("\n".join(plan.lines()))


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
