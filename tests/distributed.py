"""Helpers for tests that start msrun workers on loopback."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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
