"""Median train-step time of vgen against a bare, jit-compiled MindSpore loop of the same model.

For each model (the tiny and a mid-size STDiT), both loops train on the same synthetic batches:
- vgen: the full trainer (keyed data and draws prepared by the prefetch thread, the compiled step,
  flat-bucket AdamW, metrics to metrics.jsonl / TensorBoard / tqdm), step time end to end;
- bare: one ms.jit function doing loss -> grads -> global-norm clip -> nn.AdamWeightDecay on
  tensors prepared beforehand.
Each loop runs in its own process (MindSpore's memory pool keeps a process's peak), so the
figures include that loop's peak RSS. Prints medians over the measured steps (the compile step
excluded) and the overhead ratio.

    .venv/bin/python benchmarks/train_step.py [--steps 12] [--models opensora_stdit_tiny,opensora_stdit_mid]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import compose, peak_rss_gb  # noqa: E402


def trainer_for(model, steps, batch_size, run_dir):
    from vgen.train.trainer import Trainer

    cfg = compose([f"model={model}", "data=synthetic", "data.num_samples=64", f"schedule.max_steps={steps}",
                   f"schedule.batch_size={batch_size}", "schedule.log_every=1", "schedule.ckpt_every=100000",
                   "schedule.warmup_steps=0", "progress=true"])
    return Trainer(cfg, run_dir).setup()


def vgen_steps(trainer, run_dir):
    trainer.run()
    return [json.loads(line)["step_time_s"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def bare_steps(trainer, steps):
    """The same net, loss and batches in the plainest jit loop MindSpore offers."""
    import mindspore as ms
    from mindspore import nn, ops

    net = trainer.family.net
    loss_cell = trainer.family.make_loss_cell()
    params = [p for p in net.trainable_params()]
    opt = nn.AdamWeightDecay(params, learning_rate=1e-4, weight_decay=0.0)

    def forward(batch):
        return loss_cell(batch).mean()

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    @ms.jit
    def step(batch):
        loss, grads = grad_fn(batch)
        grads = ops.clip_by_global_norm(grads, 1.0)
        opt(grads)
        return loss

    batches = [trainer.data.inputs(trainer.data.batches.build(i).micro[0]) for i in range(steps)]
    times = []
    for b in batches:
        t0 = time.perf_counter()
        float(step(ms.mutable(b)))
        times.append(time.perf_counter() - t0)
    return times


def measure(loop, model, steps, batch_size):
    """In a child process: one loop's step times, the parameter count and the peak RSS, as JSON."""
    from vgen.models.layers.init import count_params

    with tempfile.TemporaryDirectory() as d:
        trainer = trainer_for(model, steps, batch_size, d)
        times = vgen_steps(trainer, d) if loop == "vgen" else bare_steps(trainer, steps)
    print(json.dumps({"times": times, "params": count_params(trainer.family.net)[0], "rss": peak_rss_gb()}))


def run_child(loop, model, args) -> dict:
    r = subprocess.run([sys.executable, __file__, "--measure", loop, model, "--steps", str(args.steps),
                        "--batch-size", str(args.batch_size)], stdout=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"{loop} loop of {model} failed ({r.returncode}; -9 is the OOM killer)")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--models", default="opensora_stdit_tiny,opensora_stdit_mid")
    ap.add_argument("--measure", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(*args.measure, args.steps, args.batch_size)
    rows = []
    for model in args.models.split(","):
        vg, bare = run_child("vgen", model, args), run_child("bare", model, args)
        vt, bt = vg["times"], bare["times"]
        v, b = statistics.median(vt[1:]), statistics.median(bt[1:])
        rows.append((model, vg["params"], vt[0], bt[0], v, b, v / b, vg["rss"], bare["rss"]))
        print(f"{model}: vgen steps {[round(x, 3) for x in vt]}\n{model}: bare steps {[round(x, 3) for x in bt]}",
              flush=True)
    print(f"\n{'model':24s} {'params':>12s} {'compile vgen':>13s} {'compile bare':>13s} {'vgen s/step':>12s} "
          f"{'bare s/step':>12s} {'ratio':>7s} {'RSS vgen GB':>12s} {'RSS bare GB':>12s}")
    for m, n, cv, cb, v, b, r, rv, rb in rows:
        print(f"{m:24s} {n:12,d} {cv:13.1f} {cb:13.1f} {v:12.3f} {b:12.3f} {r:7.3f} {rv:12.2f} {rb:12.2f}")
    print(f"medians over steps 2..{args.steps} (step 1 compiles); target ratio <= 1.03")


if __name__ == "__main__":
    main()
