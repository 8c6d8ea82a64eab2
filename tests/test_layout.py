"""The layout: the neutral package imports no backend, the product code has no import cycle, the
wheel installs packages only, and the installed commands run."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEUTRAL = "twinopt"
PACKAGES = ("twinopt", "twinopt_cli", "jax_opt", "torch_opt", "jax_train", "torch_train")
ENTRY_POINTS = ("train_jax.py", "train_torch.py", "bench.py", "compare.py")
# What the neutral package must never import, not even inside a function: the backends, our
# backend packages, and the libraries built on a backend.
BACKENDS = {"jax", "jaxlib", "optax", "flax", "orbax", "torch", "torchvision", "torch_optimizer", "pytorch_optimizer",
            "jax_opt", "torch_opt", "jax_train", "torch_train", "twinopt_cli"}
COMMANDS = {"twinopt-train-jax": "jax_train.train", "twinopt-train-torch": "torch_train.train",
            "twinopt-bench": "twinopt_cli.bench", "twinopt-compare": "twinopt_cli.compare"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files():
    files = [ROOT / name for name in ENTRY_POINTS]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth, relative imports resolved; ``from a import b``
    counts as ``a.b`` where ``a/b`` is a module of the repository, else as ``a``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").exists() or \
                    (ROOT / sub.replace(".", "/") / "__init__.py").exists()
                found.add(sub if is_module else base)
    return found


def test_the_neutral_package_imports_no_backend_anywhere():
    files = sorted((ROOT / NEUTRAL).rglob("*.py"))
    assert len(files) > 10
    bad = {module_name(f): sorted(m for m in imports(f) if m.split(".")[0] in BACKENDS) for f in files}
    assert {name: mods for name, mods in bad.items() if mods} == {}


def test_the_product_code_has_no_import_cycle():
    modules = {module_name(f): f for f in product_files()}
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
    assert graph["twinopt.comparison"] and graph["twinopt_cli.bench"]  # the walk sees imports


def test_twinopt_imports_without_any_backend():
    """Every module of the neutral package imports, and the registry and the command line work,
    in a Python where jax, torch, optax and flax cannot be imported."""
    code = f"""
import importlib, pkgutil, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(BACKENDS)!r}:
            raise ImportError(f"{{name}} is blocked")
sys.meta_path.insert(0, Blocked())
import twinopt
names = [m.name for m in pkgutil.walk_packages(twinopt.__path__, "twinopt.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
from twinopt import cli, registry
args = cli.parse_args(["-optimizer", "adabound", "--betas", "0.8,0.9"], "jax")
assert registry.to_jax_kwargs("adabound", args.optimizer_kwargs) == {{"b1": 0.8, "b2": 0.9}}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(BACKENDS)!r})
print(len(names), loaded)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) > 10 and loaded.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built from a copy of the sources (a build/ folder of an earlier build in the
    checkout could otherwise add files the sources no longer have)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    (path,) = out.glob("twinopt-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_packages_only(wheel):
    names = wheel.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == set(PACKAGES)
    assert all(name.count("/") >= 1 for name in names)  # no module at the top of site-packages
    assert "twinopt/data/sources.py" in names and "twinopt/registry.py" in names


def test_the_wheel_declares_the_commands(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for command, module in COMMANDS.items():
        assert f"{command} = {module}:main" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_the_installed_commands_and_module_forms_run(command):
    installed = Path(sys.executable).parent / command
    assert installed.exists(), f"{command} is not installed: pip install -e . installs it"
    for argv in ([str(installed), "-h"], [sys.executable, "-m", COMMANDS[command], "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout
