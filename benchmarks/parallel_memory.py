"""Per-rank memory of model states and activations, and step time, across parallel settings.

Model states (parameters, gradients, optimizer) are counted exactly from the tensors a rank holds:
the model's parameters as they are after the plans (ZeRO-3 keeps only segments), the flat fp32
buckets (master weights, AdamW moments, EMA, gradient accumulators), and the gradients one step
produces (full-size for ZeRO 0-2, segments for ZeRO-3) with their flat reduced copies. Activation
memory is the growth of the process's peak RSS over a few steps (MindSpore's CPU pool keeps what it
took), on a mid-size STDiT. Ratios are to the single-process figure (for SP: to sp1, same samples).

    .venv/bin/python benchmarks/parallel_memory.py [--steps 3] [--configs single,dp2,zero1_2,...]
    .venv/bin/python benchmarks/parallel_memory.py --model hunyuan_mid --configs single,sp2,zero3_2

Targets: ZeRO-3 model states at N workers within 1.15 x (single / N); SP2 activations within
0.6 x SP1.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _util import run_ranks  # noqa: E402  (beside this script)

COMMON = ["data=synthetic", "data.num_samples=16", "schedule.batch_size=1", "schedule.log_every=1",
          "schedule.ckpt_every=100000", "schedule.ema_decay=0.9999", "progress=false"]
# name: (workers, zero stage, sp)
CONFIGS = {
    "single": (1, 0, 1), "dp2": (2, 0, 1), "zero1_2": (2, 1, 1), "zero2_2": (2, 2, 1), "zero3_2": (2, 3, 1),
    "zero1_4": (4, 1, 1), "zero2_4": (4, 2, 1), "zero3_4": (4, 3, 1), "sp2": (2, 0, 2), "sp2_zero3": (2, 3, 2),
}


def model_state_bytes(trainer) -> dict:
    """Bytes of what this rank holds for the model, by kind."""
    import numpy as np

    from vgen.models.layers.init import named_params

    def nbytes(shape, itemsize):
        return int(np.prod(shape)) * itemsize if len(shape) else itemsize

    params = sum(nbytes(p.shape, p.itemsize) for _, p in named_params(trainer.family.net))
    master = sum(b.master.nbytes for b in trainer.buckets)
    optim = sum(b.m.nbytes + b.v.nbytes for b in trainer.buckets)
    ema = sum(b.ema.nbytes for b in trainer.buckets if b.ema is not None)
    acc = sum(b.grad_acc.nbytes for b in trainer.buckets if b.grad_acc is not None)
    # one step's gradients: as the backward produces them, plus their flat reduced copies
    grads = sum(nbytes(p.shape, p.itemsize) for b in trainer.buckets for p in b.params)
    flat = sum(b.local_size * 4 for b in trainer.buckets)
    return {"params": params, "grads": grads + flat + acc, "optimizer": master + optim + ema,
            "total": params + grads + flat + acc + master + optim + ema}


def run_worker(out: Path, steps: int):
    """Inside msrun (or alone): build the trainer, measure, write <out>/rank<r>.json."""
    from vgen.runtime import setup_device

    setup_device("auto")
    from _util import compose, peak_rss_gb
    from vgen.parallel.comm import barrier, in_distributed_job, init_distributed
    from vgen.parallel.mesh import build_mesh

    rank, size = init_distributed() if in_distributed_job() else (0, 1)
    workers, zero, sp, model, extra = json.loads(os.environ["VGEN_BENCH_CONFIG"])
    cfg = compose([f"model={model}", *COMMON, *extra, f"schedule.max_steps={steps}", f"parallel.workers={workers}", f"parallel.sp={sp}",
                   f"parallel.zero_stage={zero}"])
    from vgen.train.trainer import Trainer

    run = out / "run"
    run.mkdir(parents=True, exist_ok=True)
    from vgen.train.memory_plan import plan_memory

    planned = plan_memory(cfg, "CPU").model_states  # from shapes, before anything is allocated
    trainer = Trainer(cfg, run, build_mesh(rank, size, sp) if size > 1 else None).setup()
    states = model_state_bytes(trainer)
    states["planned"] = planned
    rss_before = peak_rss_gb()
    trainer.run()
    rss_after = peak_rss_gb()
    times = [json.loads(line)["step_time_s"] for line in (run / "metrics.jsonl").read_text().splitlines()] \
        if rank == 0 else []
    (out / f"rank{rank}.json").write_text(json.dumps({
        "states": states, "activation_gb": rss_after - rss_before, "peak_rss_gb": rss_after, "step_times": times}))
    if size > 1:
        barrier()


def launch(name: str, model: str, extra: list, steps: int, root: Path) -> dict:
    workers, zero, sp = CONFIGS[name]
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, VGEN_BENCH_CONFIG=json.dumps([workers, zero, sp, model, extra]))
    script = [str(Path(__file__).resolve()), "--bench-out", str(out), "--bench-steps", str(steps)]
    ranks = run_ranks(script, workers, out, env, name)
    return {"workers": workers, "ranks": ranks}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--model", default="opensora_stdit_mid")
    ap.add_argument("--overrides", default="", help="extra config overrides, space-separated "
                    "(e.g. model.input_size=[8,16,16] to fit 4 workers in memory)")
    ap.add_argument("--bench-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bench-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bench_out:
        return run_worker(Path(args.bench_out), args.bench_steps)
    import statistics

    results = {}
    with tempfile.TemporaryDirectory() as d:
        for name in args.configs.split(","):
            print(f"running {name} ...", flush=True)
            results[name] = launch(name, args.model, args.overrides.split(), args.steps, Path(d))
    gb = 2.0 ** 30
    print(f"\nmodel {args.model} {args.overrides}, {args.steps} steps per config")
    single = results.get("single")
    base_states = single["ranks"][0]["states"]["total"] if single else None
    base_act = single["ranks"][0]["activation_gb"] if single else None
    base_time = statistics.median(single["ranks"][0]["step_times"][1:]) if single else None
    print(f"\n{'config':10s} {'workers':>7s} {'states GB/rank':>15s} {'params':>8s} {'grads':>8s} {'optim':>8s} "
          f"{'ratio':>7s} {'target':>7s} {'plan/held':>9s} {'act GB':>7s} {'act ratio':>9s} {'s/step':>7s} "
          f"{'time ratio':>10s}")
    for name, r in results.items():
        st = max((x["states"] for x in r["ranks"]), key=lambda s: s["total"])
        act = max(x["activation_gb"] for x in r["ranks"])
        t = statistics.median(r["ranks"][0]["step_times"][1:])
        ratio = st["total"] / base_states if base_states else float("nan")
        target = ""
        if name.startswith("zero3"):
            target = f"{1.15 / r['workers']:.3f}"
        if name == "sp2":
            target = "act<=0.6"
        print(f"{name:10s} {r['workers']:7d} {st['total'] / gb:15.3f} {st['params'] / gb:8.3f} {st['grads'] / gb:8.3f} "
              f"{st['optimizer'] / gb:8.3f} {ratio:7.3f} {target:>7s} {st['planned'] / st['total']:9.4f} {act:7.3f} "
              f"{act / base_act if base_act else float('nan'):9.3f} {t:7.2f} "
              f"{t / base_time if base_time else float('nan'):10.2f}")
    print("states: per-rank bytes of parameters, gradients (one step's, with their flat copies) and optimizer "
          "(fp32 masters, AdamW moments, EMA); plan/held: vgen-plan's model states over those held; act: peak-RSS "
          "growth over the steps; medians of step 2..n")


if __name__ == "__main__":
    main()
