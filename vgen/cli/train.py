"""vgen-train: compose the config, freeze it into the run directory, then train here or start
msrun workers that read only the frozen config."""
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..config.preflight import preflight
from ..config.store import register_configs
from .common import CONF_PATH, freeze, launch_workers, prepare, setup_logging, user_errors


@hydra.main(config_path=CONF_PATH, config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    setup_logging()
    with user_errors():
        plain = prepare(cfg)
        preflight(plain)  # every input set and readable, before any worker starts or any model is built
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
