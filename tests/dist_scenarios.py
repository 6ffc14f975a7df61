"""Runs training scenarios inside one msrun job (each worker runs them in order), so the
distributed tests pay msrun's start-up once. Usage (under msrun):

    dist_scenarios.py <root> '<json list of {"name", "overrides", "sp", "zero"}>'

Every scenario trains in <root>/<name>/ (rank 0 writes metrics.jsonl and checkpoints)."""
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
    for sc in scenarios:
        cfg = compose([*sc["overrides"], f"parallel.workers={size}", f"parallel.sp={sc.get('sp', 1)}",
                       f"parallel.zero_stage={sc.get('zero', 0)}"])
        run_dir = root / sc["name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        Trainer(cfg, run_dir, build_mesh(rank, size, cfg.parallel.sp)).setup().run()
        barrier()


if __name__ == "__main__":
    main()
