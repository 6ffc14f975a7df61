"""The msrun worker: trains (or samples) from the frozen <run_dir>/config.yaml (Hydra does not
compose here).

    msrun ... vgen/cli/worker.py <run_dir>/config.yaml [train|sample]
"""
import sys
from pathlib import Path

# run as a script, this file's directory heads sys.path: keep it from shadowing other modules
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    config_path = Path(argv[0])
    job = argv[1] if len(argv) > 1 else "train"
    from omegaconf import OmegaConf

    from vgen.cli.common import fail, setup_logging, user_errors
    from vgen.config.validate import ConfigError
    from vgen.parallel.comm import barrier, init_distributed
    from vgen.parallel.mesh import build_mesh
    from vgen.runtime import setup_device

    cfg = OmegaConf.load(config_path)
    setup_device(cfg.device)  # the device is chosen before communication starts
    rank, size = init_distributed()
    setup_logging(rank)
    if size != cfg.parallel.workers:
        fail(ConfigError(f"msrun started {size} workers but parallel.workers={cfg.parallel.workers}"))
    mesh = build_mesh(rank, size, cfg.parallel.sp)
    with user_errors():
        if job == "sample":
            from vgen.sample.run import sample

            sample(cfg, mesh)
        else:
            from vgen.train.trainer import train

            train(cfg, config_path.parent, mesh)
    barrier()  # no rank leaves while a peer is still in a collective
    return 0


if __name__ == "__main__":
    sys.exit(main())
