"""vgen-inspect: a model's parameter layout and count without allocating its weights.

Prints `name [d0, d1, ...]` per state-dict entry (the format of the reference layouts), then
`total_params <N>` (buffers excluded) and `buffer_elements <M>`."""
import sys

import hydra
from omegaconf import DictConfig

from ..config.store import register_configs
from .common import CONF_PATH, setup_logging


@hydra.main(config_path=CONF_PATH, config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    setup_logging()
    from ..models.layers.init import count_params, named_params
    from ..models.registry import build_family

    family = build_family(cfg.model)  # declared only: no weights are allocated
    out = sys.stdout
    for name, p in named_params(family.net):
        out.write(f"{name} {list(p.shape)}\n")
    n_param, n_buf = count_params(family.net)
    out.write(f"total_params {n_param}\nbuffer_elements {n_buf}\n")


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
