"""Per-rank peak host memory of trainer start-up (weights from a pretrained file, ZeRO-3) at 1, 2
and 4 workers: no rank should hold the whole model, only its segments plus one parameter read or
initialised at a time.

A mid-size Step-Video DiT (hidden 1024, 8 blocks by default) is written once as a random
pretrained safetensors file; each run builds the trainer (declared model -> weights filled by
slices -> plans -> flat buckets: master weights, AdamW moments) and stops before the first step.
Each rank reports the growth of its peak RSS over the RSS after imports, and the bytes of model
state it holds; the ratios are to one process.

    .venv/bin/python benchmarks/startup_memory.py [--workers 1,2,4] [--hidden 1024 --depth 8]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _util import peak_rss_gb, run_ranks  # noqa: E402  (beside this script)
from vgen.runtime import memory_gb  # noqa: E402


def overrides(args, pretrained: str, workers: int) -> list:
    heads = args.hidden // 64
    return ["model=stepvideo_tiny", f"model.num_heads={heads}", "model.head_dim=64", f"model.depth={args.depth}",
            "model.rope_split=[32,16,16]", "model.caption_channels=1024", "model.clip_channels=1024",
            "model.in_channels=64", f"model.pretrained={pretrained}", "data=synthetic", "data.num_samples=8",
            "schedule.ema_decay=0", "progress=false", f"parallel.workers={workers}",
            f"parallel.zero_stage={3 if workers > 1 else 0}", "parallel.recompute=all"]


def run_worker(out: Path, cfg_overrides: list):
    """Inside msrun (or alone): set the trainer up, write <out>/rank<r>.json."""
    from vgen.runtime import setup_device

    setup_device("auto")
    from _util import compose
    from vgen.models.layers.init import named_params
    from vgen.parallel.comm import barrier, in_distributed_job, init_distributed
    from vgen.parallel.mesh import build_mesh
    from vgen.train.trainer import Trainer

    rank, size = init_distributed() if in_distributed_job() else (0, 1)
    cfg = compose(cfg_overrides)
    base = memory_gb() * 1024
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, Path(run), build_mesh(rank, size, 1)).setup()
        peak = peak_rss_gb() * 1024
        held = sum(p.nbytes for _, p in named_params(trainer.family.net)) + \
            sum(b.master.nbytes + b.m.nbytes + b.v.nbytes for b in trainer.buckets)
        (out / f"rank{rank}.json").write_text(json.dumps({"growth_mb": peak - base, "held_mb": held / 2 ** 20}))
        if size > 1:
            barrier()


def write_pretrained(args, path: Path) -> int:
    """A random checkpoint in the model's layout, written tensor by tensor; returns its elements."""
    import numpy as np
    from safetensors.numpy import save_file

    from _util import compose
    from vgen.models.layers.init import is_derived, named_params
    from vgen.models.registry import build_family

    net = build_family(compose(overrides(args, "none", 1)).model).net  # declared only
    rng = np.random.default_rng(0)
    arrays = {n: (0.02 * rng.standard_normal(p.shape)).astype(np.float32) for n, p in named_params(net)
              if not is_derived(p)}
    save_file(arrays, str(path))
    return sum(a.size for a in arrays.values())


def launch(args, workers: int, pretrained: Path, root: Path) -> list:
    out = root / f"w{workers}"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, VGEN_BENCH_OVERRIDES=json.dumps(overrides(args, str(pretrained), workers)))
    return run_ranks([str(Path(__file__).resolve()), "--bench-out", str(out)], workers, out, env, f"{workers} workers")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--bench-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bench_out:
        return run_worker(Path(args.bench_out), json.loads(os.environ["VGEN_BENCH_OVERRIDES"]))
    with tempfile.TemporaryDirectory() as d:
        pretrained = Path(d) / "pretrained.safetensors"
        elements = write_pretrained(args, pretrained)
        print(f"model: Step-Video DiT hidden {args.hidden}, {args.depth} blocks, {elements:,} parameters "
              f"({elements * 4 / 2 ** 20:.0f} MB fp32)")
        results = {}
        for workers in (int(w) for w in args.workers.split(",")):
            results[workers] = launch(args, workers, pretrained, Path(d))
    first = min(results)
    base_growth = statistics.median(r["growth_mb"] for r in results[first])
    base_held = statistics.median(r["held_mb"] for r in results[first])
    print(f"{'workers':>8} {'peak growth MB (median rank)':>30} {'ratio':>7} {'held MB':>9} {'ratio':>7}")
    for workers, ranks in results.items():
        growth = statistics.median(r["growth_mb"] for r in ranks)
        held = statistics.median(r["held_mb"] for r in ranks)
        print(f"{workers:>8} {growth:>30.0f} {growth / base_growth:>7.3f} {held:>9.0f} {held / base_held:>7.3f}")


if __name__ == "__main__":
    main()
