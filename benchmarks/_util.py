"""Shared by the benchmark scripts: config composition and memory readings."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def compose(overrides):
    from hydra import compose as hy_compose
    from hydra import initialize_config_module

    from vgen.cli.common import plain_config
    from vgen.config.store import register_configs

    register_configs()
    with initialize_config_module("vgen.conf", version_base=None):
        return plain_config(hy_compose("train", overrides=list(overrides)))


def peak_rss_gb() -> float:
    """Peak resident memory of this process (VmHWM)."""
    from vgen.runtime import memory_gb

    return memory_gb("VmHWM")


def run_ranks(script: list, workers: int, out: Path, env: dict, what: str) -> list:
    """Runs a benchmark script alone (1 worker) or under msrun on this node; each rank writes
    <out>/rank<r>.json, returned in rank order. Its flags must not abbreviate msrun's own (msrun
    would read --worker as --worker_num)."""
    env = dict(env)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if workers == 1:
        cmd = [sys.executable, *script]
    else:
        from vgen.parallel.launch import msrun_command

        one_node = SimpleNamespace(workers=workers, nodes=1, node_rank=0, master_addr="127.0.0.1", master_port=0)
        cmd = msrun_command(one_node, out / "logs", *script)
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        logs = "".join(p.read_text()[-3000:] for p in sorted((out / "logs").glob("worker_*.log")))
        raise SystemExit(f"{what} failed ({r.returncode}):\n{r.stderr[-3000:]}\n{logs}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(workers)]
