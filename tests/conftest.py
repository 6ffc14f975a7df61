import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_v", "3")
REPO = Path(__file__).resolve().parents[1]
# the official parameter names and shapes of every full-size model (one "name [shape]" a line)
LAYOUTS = REPO / "tests" / "layouts"


def compose(overrides=()):
    """The plain, validated-shape config vgen-train would freeze (no run dir derivation)."""
    from hydra import compose as hy_compose
    from hydra import initialize_config_module

    from vgen.cli.common import plain_config
    from vgen.config.store import register_configs

    register_configs()
    with initialize_config_module("vgen.conf", version_base=None):
        return plain_config(hy_compose("train", overrides=list(overrides)))


def cli(*args, env=None, timeout=600, check=False):
    """Runs a vgen console script (by module) in a fresh process."""
    module = {"vgen-train": "vgen.cli.train", "vgen-inspect": "vgen.cli.inspect_model",
              "vgen-cache": "vgen.cli.cache", "vgen-sample": "vgen.cli.sample", "vgen-plan": "vgen.cli.plan"}[args[0]]
    full_env = {**os.environ, **(env or {})}
    r = subprocess.run([sys.executable, "-m", module, *args[1:]], capture_output=True, text=True, timeout=timeout,
                       env=full_env, cwd=str(REPO))
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def read_metrics(run_dir, name="metrics.jsonl"):
    return [json.loads(line) for line in Path(run_dir, name).read_text().splitlines()]


def layout_lines(name):
    return [line for line in (LAYOUTS / name).read_text().splitlines() if line.strip()]


# depth 2 of the tiny STDiT: the same code paths (more than one block), half the compile time
TINY_MODEL = ["model=opensora_stdit_tiny", "model.depth=2", "progress=false", "schedule.log_every=1",
              "schedule.warmup_steps=2"]
TINY = [*TINY_MODEL, "data=synthetic", "data.num_samples=16"]


@pytest.fixture
def tiny_overrides():
    return list(TINY)


def tool_module(name: str):
    """tools/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cw():
    """tools/convert_weights.py as a module."""
    return tool_module("convert_weights")
