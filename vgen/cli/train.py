"""vgen-train: compose the config, freeze it into the run directory, then train here or start
msrun workers that read only the frozen config."""
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..config.store import register_configs
from ..config.validate import ConfigError
from .common import CONF_PATH, fail, freeze, prepare, setup_logging


@hydra.main(config_path=CONF_PATH, config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    setup_logging()
    from ..data.errors import DataError
    from ..models.weights import WeightsError

    try:
        plain = prepare(cfg)
        run_dir = Path(plain.run_dir)
        freeze(plain, run_dir)
        if plain.parallel.workers > 1:
            from ..parallel.launch import in_msrun, msrun_command, run_msrun
            from . import worker

            if not in_msrun():  # the workers read only <run_dir>/config.yaml: Hydra composed once
                code = run_msrun(msrun_command(plain.parallel, run_dir / "logs", worker.__file__,
                                               str(run_dir / "config.yaml")))
                if code:  # a clean return lets a --multirun sweep go on to its next point
                    raise SystemExit(code)
                return
        from ..train.trainer import train

        train(plain, run_dir)
    except (ConfigError, DataError, WeightsError) as e:
        fail(e)


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
