"""TeaCache on HunyuanVideo sampling: time per video, steps that ran the blocks, and how far the
latent lands from the uncached one, at thresholds 0 (off), 0.1 and 0.15 (the published pair).

Weights are drawn at random (no checkpoint can be downloaded here), with the output layers not
zeroed, so the velocity is not trivial. Each setting is run `--repeats` times after one warm-up
draw (which compiles); the median is printed with the ratio to the uncached median.

    .venv/bin/python benchmarks/teacache.py [--model hunyuan_mid] [--steps 50] [--repeats 3]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import compose  # noqa: E402


def random_family(model: str, seed: int = 0):
    from mindspore import Tensor

    from vgen.models.layers.init import named_params
    from vgen.models.registry import build_family
    from vgen.models.weights import fill_parameters

    family = build_family(compose([f"model={model}"]).model)
    fill_parameters(family.net, seed=seed)
    rng = np.random.default_rng(seed)
    for _, q in named_params(family.net):
        q.set_data(Tensor(q.asnumpy() + rng.normal(0, 0.02, q.shape).astype(np.float32)))
    return family


def text_inputs(family, n: int, seed: int = 1):
    t, rng = family.text, np.random.default_rng(seed)
    return {"text_emb": rng.standard_normal((n, t.length, t.dim)).astype(np.float32),
            "text_mask": np.ones((n, t.length), np.int32),
            "text_pooled": rng.standard_normal((n, t.pooled_dim)).astype(np.float32)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hunyuan_mid")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from vgen.runtime import setup_device
    from vgen.sample.conditioning import model_inputs
    from vgen.sample.sampler import Sampler

    setup_device("auto")
    family = random_family(args.model)
    rows, base = [], None
    for thr in (0.0, 0.1, 0.15):
        cfg = compose([f"model={args.model}", f"sample.teacache={thr}", f"sample.steps={args.steps}"])
        sampler = Sampler(family, cfg.model, cfg.sample)
        cond = model_inputs(family, text_inputs(family, 1), sampler.geometry, cfg.sample.fps)
        sampler.latents(cond, cond, [0])  # compiles
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = sampler.latents(cond, cond, [0])
            times.append(time.perf_counter() - t0)
        run = sampler.model.run
        computed = getattr(run, "computed", args.steps)
        if base is None:
            base = (statistics.median(times), out)
        diff = float(np.abs(out - base[1]).mean() / np.abs(base[1]).mean())
        rows.append((thr, statistics.median(times), computed, diff))
    print(f"{args.model}, {args.steps} steps, latent {list(sampler.geometry.latent)}, median of {args.repeats}")
    print(f"{'threshold':>9} {'s/video':>8} {'speed-up':>8} {'blocks run':>10} {'rel. L1 vs off':>14}")
    for thr, t, computed, diff in rows:
        print(f"{thr:>9.2f} {t:>8.2f} {base[0] / t:>8.2f} {computed:>7}/{args.steps:<3} {diff:>14.4f}")


if __name__ == "__main__":
    main()
