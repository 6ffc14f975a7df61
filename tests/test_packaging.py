"""The wheel carries every package and the conf/ tree; the README and CI agree on the test command."""
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vgen").rglob("__init__.py")}
    assert found | {"vgen.conf"} == listed


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert command in readme


@pytest.mark.slow
def test_wheel_ships_the_config_tree(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("vgen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "vgen/conf/train.yaml" in names
    assert "vgen/conf/model/opensora_stdit.yaml" in names
    yamls = {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    assert {n[len("vgen/conf/"):] for n in names if n.startswith("vgen/conf/") and n.endswith(".yaml")} == yamls
