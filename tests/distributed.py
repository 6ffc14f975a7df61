"""Helpers for tests that start msrun workers on loopback."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from conftest import read_metrics
from vgen.parallel.launch import msrun_command

HERE = Path(__file__).resolve().parent


def run_scenarios(root: Path, workers: int, scenarios, timeout=1500):
    """Runs dist_scenarios.py under msrun; raises with the worker logs on failure."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log_dir = root / "logs"
    one_node = SimpleNamespace(workers=workers, nodes=1, node_rank=0, master_addr="127.0.0.1", master_port=0)
    cmd = msrun_command(one_node, log_dir, str(HERE / "dist_scenarios.py"), str(root), json.dumps(scenarios))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        logs = "\n".join(f"--- {p.name}\n" + p.read_text()[-4000:] for p in sorted(log_dir.glob("worker_*.log")))
        raise AssertionError(f"msrun failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n{logs}")
    return r


def assert_same_run(run, ref, steps=range(1, 6), rtol=1e-5):
    """Losses (rtol) and gradient norms (1e-4) per step equal those of the reference run."""
    got = {m["step"]: m for m in read_metrics(run)}
    want = {m["step"]: m for m in read_metrics(ref)}
    for s in steps:
        np.testing.assert_allclose(got[s]["loss"], want[s]["loss"], rtol=rtol, err_msg=f"loss at step {s}")
        np.testing.assert_allclose(got[s]["grad_norm"], want[s]["grad_norm"], rtol=1e-4, err_msg=f"norm at {s}")


def assert_same_weights(run, ref, atol=1e-6):
    """The newest checkpoints hold the same model, EMA and AdamW moments (merged from shards)."""
    from vgen.train.checkpoint import CheckpointReader, find_latest

    a = CheckpointReader(find_latest(run / "checkpoints"))
    b = CheckpointReader(find_latest(ref / "checkpoints"))
    for kind in ("model", "ema", "adam_m", "adam_v"):
        want = b.arrays(kind)
        got = a.arrays(kind)
        assert set(got) == set(want), kind
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=atol, err_msg=f"{kind} {name}")


def assert_same_weights_but_rare_elements(run, ref, rare=1e-4, lr=1e-3):
    """assert_same_weights for UNets trained a few steps: all but a fraction `rare` of the elements
    to 1e-6, every element within one Adam step (lr). Adam divides an element's tiny gradient by
    its own sqrt(v), so the summation order of a sharded reduction moves the odd element (measured
    on the tiny UNets: 1 in 4,000-37,000 per tensor) by 5-12% of a step."""
    from vgen.train.checkpoint import CheckpointReader, find_latest

    a = CheckpointReader(find_latest(run / "checkpoints"))
    b = CheckpointReader(find_latest(ref / "checkpoints"))
    for kind in ("model", "ema", "adam_m", "adam_v"):
        got, want = a.arrays(kind), b.arrays(kind)
        assert set(got) == set(want), kind
        off = sum(int((~np.isclose(got[n], want[n], rtol=1e-4, atol=1e-6)).sum()) for n in want)
        assert off <= rare * sum(v.size for v in want.values()), (kind, off)
        for n in want:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-4, atol=lr if kind in ("model", "ema") else 1e-4,
                                       err_msg=f"{kind} {n}")


def drawn_pretrained(overrides, path, adapters=None):
    """A 'pretrained' file of the family whose zero-initialised weights are drawn too: from a zero
    start only the last conv has a gradient at step 1, and Adam would turn the others' summation
    noise into steps of its own. With `adapters` (a path), model.lora's adapters are drawn into
    that file too (a model.lora.pretrained)."""
    from safetensors.numpy import save_file

    from vgen.models.layers.init import materialize, named_params
    from vgen.models.lora import adapt_family, adapter_names
    from vgen.models.registry import build_family

    from conftest import compose

    cfg = compose(overrides)
    family = build_family(cfg.model)
    if adapters is not None:
        adapt_family(family, cfg.model.lora, seed=0)
    net = materialize(family.net, 0)
    rng = np.random.default_rng(0)
    arrays = {n: q.asnumpy() if q.asnumpy().any() else (rng.standard_normal(q.shape) * 0.05).astype(np.float32)
              for n, q in named_params(net)}
    lora = set(adapter_names(net))
    save_file({n: a for n, a in arrays.items() if n not in lora}, str(path))
    if adapters is not None:
        save_file({n: arrays[n] for n in lora}, str(adapters))
    return path
