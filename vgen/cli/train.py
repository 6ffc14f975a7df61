"""vgen-train: compose the config, freeze it into the run directory, then train here or start
msrun workers that read only the frozen config."""
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..config.preflight import preflight
from ..config.store import register_configs
from .common import CONF_PATH, freeze, launch_workers, prepare, setup_logging, user_errors

log = logging.getLogger("vgen")


@hydra.main(config_path=CONF_PATH, config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    setup_logging()
    with user_errors():
        plain = prepare(cfg)
        # before any worker starts or any weight is allocated: every input set and readable, and the
        # memory plan (from the declared model's shapes) printed and, on CPU, fitting the node
        from ..train.memory_plan import plan_memory
        from .plan import planned_device

        device = planned_device(plain)
        plan = plan_memory(plain, device)
        preflight(plain, plan, device)
        for line in plan.lines():
            log.info("%s", line)
        run_dir = Path(plain.run_dir)
        config = freeze(plain, run_dir)
        from ..parallel.launch import in_msrun

        if plain.parallel.workers > 1 and not in_msrun():
            launch_workers(plain.parallel, run_dir / "logs", config)
            return
        from ..train.trainer import train

        train(plain, run_dir)


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
