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
