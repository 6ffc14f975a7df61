"""The launch/ wrappers: multi-node settings reach vgen-train and msrun; a sweep runs one job per
point, each in its own run directory."""
import os
import subprocess
import sys

import yaml

from conftest import REPO, TINY, read_metrics
from vgen.parallel.launch import msrun_command

TRAIN = f"{sys.executable} -m vgen.cli.train"


def test_multinode_wrapper_sets_node_settings(tmp_path):
    r = subprocess.run(["bash", str(REPO / "launch/msrun_multinode.sh"), "--nodes", "4", "--node-rank", "1",
                        "--master-addr", "10.0.0.1", "--vgen-train", TRAIN, "--", "model=opensora_stdit_tiny",
                        "--cfg", "job"], capture_output=True, text=True, cwd=str(REPO), check=True)
    par = yaml.safe_load(r.stdout)["parallel"]
    assert (par["nodes"], par["node_rank"], par["workers"], par["master_addr"], par["master_port"]) == \
        (4, 1, 32, "10.0.0.1", 8118)
    cmd = msrun_command(type("P", (), par), tmp_path / "logs", "worker.py", "config.yaml")
    for arg in ("--worker_num=32", "--local_worker_num=8", "--node_rank=1", "--master_addr=10.0.0.1",
                "--master_port=8118", "--join=True"):
        assert arg in cmd
    assert cmd[-2:] == ["worker.py", "config.yaml"] and f"--log_dir={tmp_path / 'logs'}" in cmd


def test_multinode_wrapper_needs_its_options():
    r = subprocess.run(["bash", str(REPO / "launch/msrun_multinode.sh"), "--nodes", "2", "--", "seed=1"],
                       capture_output=True, text=True, cwd=str(REPO))
    assert r.returncode == 2 and "--node-rank" in r.stdout


def test_sweep_runs_each_point_in_its_own_run_dir(tmp_path):
    r = subprocess.run(["bash", str(REPO / "launch/sweep.sh"), *TINY, "schedule.max_steps=1",
                        f"runs_root={tmp_path}", "schedule.lr=1e-4,2e-4"],
                       capture_output=True, text=True, cwd=str(REPO), env={**os.environ, "VGEN_TRAIN": TRAIN})
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.rglob("config.yaml"))
    assert len(runs) == 2
    lrs = sorted(yaml.safe_load((d / "config.yaml").read_text())["schedule"]["lr"] for d in runs)
    assert lrs == [1e-4, 2e-4]
    assert all(read_metrics(d)[-1]["step"] == 1 for d in runs)
