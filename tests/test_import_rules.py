"""The layering the code keeps: model files never import the parallel package (parallelism is
applied onto models from their declarations), the parallel package imports neither the trainer
nor the command line, and family declarations load without MindSpore (configs are checked
before any heavy import)."""
import ast
import subprocess
import sys

import pytest

from conftest import REPO

RULES = [  # (package whose files are checked, packages they must not import)
    ("vgen.models", ("vgen.parallel", "vgen.train", "vgen.cli")),
    ("vgen.parallel", ("vgen.train", "vgen.cli")),
    ("vgen.objectives", ("vgen.parallel", "vgen.train", "vgen.cli")),
    ("vgen.data", ("vgen.parallel", "vgen.train", "vgen.cli")),
    ("vgen.config", ("vgen.parallel", "vgen.train", "vgen.cli", "mindspore")),
]


def module_name(path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported(path):
    """Every module a file imports (relative imports resolved), with the line."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module
            yield name, node.lineno
            for alias in node.names:  # `from .. import parallel` imports a package too
                yield f"{name}.{alias.name}", node.lineno


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("package,forbidden", RULES)
def test_import_rules(package, forbidden):
    folder = REPO.joinpath(*package.split("."))
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for name, line in imported(path):
            hit = [f for f in forbidden if under(name, f)]
            if hit:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not bad, f"{package} must not import {forbidden}:\n  " + "\n  ".join(bad)


def test_the_resolver_sees_relative_imports():
    names = {n for n, _ in imported(REPO / "vgen" / "parallel" / "plan.py")}
    assert "vgen.parallel.sequence" in names and "vgen.models.layers.seams" in names


def test_family_declarations_and_config_checks_load_without_mindspore():
    code = ("import sys; from vgen.models.registry import family_specs; from vgen.config.store import "
            "register_configs; register_configs(); specs = family_specs(); "
            "assert 'mindspore' not in sys.modules, 'mindspore was imported'; print(sorted(specs))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "hunyuan" in r.stdout and "opensora_stdit" in r.stdout
