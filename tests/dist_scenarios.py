"""Runs training scenarios inside one msrun job (each worker runs them in order), so the
distributed tests pay msrun's start-up once. Usage (under msrun):

    dist_scenarios.py <root> '<json list of {"name", "overrides", "sp", "zero", "data"}>'

Every scenario trains in <root>/<name>/ (rank 0 writes metrics.jsonl and checkpoints). "sp" and
"zero" default to what the overrides (e.g. a recipe) set; "data" replaces the composed data
group (scaled-down recipes train on synthetic latents)."""
import json
import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).resolve().parent))


def main():
    root, scenarios = Path(sys.argv[1]), json.loads(sys.argv[2])
    from vgen.runtime import setup_device

    setup_device("auto")
    from vgen.parallel.comm import barrier, init_distributed
    from vgen.parallel.mesh import build_mesh

    rank, size = init_distributed()
    from conftest import compose
    from vgen.cli.common import setup_logging
    from vgen.train.trainer import Trainer

    setup_logging(rank)
    from omegaconf import OmegaConf

    for sc in scenarios:
        extra = [f"parallel.workers={size}"] + [f"parallel.{k}={sc[key]}" for key, k in (("sp", "sp"), ("zero", "zero_stage"))
                                              if key in sc]
        cfg = compose([*sc["overrides"], *extra])
        if "data" in sc:
            cfg.data = OmegaConf.create(sc["data"])
        run_dir = root / sc["name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        Trainer(cfg, run_dir, build_mesh(rank, size, cfg.parallel.sp)).setup().run()
        barrier()


if __name__ == "__main__":
    main()
