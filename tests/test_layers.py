"""The layer contract of DESIGN.md "The layers", as tests.

``lint-imports`` (import-linter) checks ``.importlinter``: imports only point down the
layers, the store stands beside them, no import circles (imports inside functions
count). import-linter cannot follow setuptools' package-dir mapping (one folder per layer
mapped under ``ttc.``), so the check runs on a copy laid out as the installed package,
built from pyproject's own mapping. And no module imports a layer by its old top-level
name (``strategies``, ``tasks`` ...) instead of ``ttc.<layer>``.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
# The layer folders' own names, which must never be imported as top-level modules.
OLD_NAMES = {name.split(".", 1)[1] for name in PACKAGE_DIRS if name != "ttc"} | {
    "orchestrator", "strategies", "tasks", "verifiers", "core", "backends", "store"}


def _stage(dest: Path) -> Path:
    """A copy of the Python sources laid out as installed (``ttc/core/...``); returns its root."""
    for name, folder in sorted(PACKAGE_DIRS.items(), key=lambda item: item[0].count(".")):
        target = dest.joinpath(*name.split("."))
        if name == "ttc":
            target.mkdir(parents=True)
            for f in (ROOT / folder).glob("*.py"):
                shutil.copy2(f, target / f.name)
        else:
            shutil.copytree(ROOT / folder, target,
                            ignore=shutil.ignore_patterns("__pycache__", "checkpoints", "*.pyc", "*.safetensors"))
    return dest


def _lint(staged: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.is_file(), f"import-linter is not installed beside {sys.executable} (pip install import-linter)"
    # lint-imports puts its working directory first on sys.path, so `ttc` is the staged copy.
    env = {**os.environ, "PYTHONPATH": str(staged)}
    return subprocess.run([str(exe), "--no-cache", "--no-logo", str(ROOT / ".importlinter")], cwd=staged,
                          env=env, capture_output=True, text=True, timeout=300)


def _package_modules(staged: Path) -> int:
    """How many modules grimp should see: .py files in folders that are packages."""
    count = 0
    for dirpath, _, files in os.walk(staged / "ttc"):
        parts = Path(dirpath).relative_to(staged).parts
        if all((staged.joinpath(*parts[:i + 1]) / "__init__.py").is_file() for i in range(len(parts))):
            count += sum(f.endswith(".py") for f in files)
    return count


def test_import_contracts_hold(tmp_path):
    staged = _stage(tmp_path / "src")
    out = _lint(staged)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    # Every module of every layer was analysed, so the contracts were not kept vacuously.
    analysed = re.search(r"Analyzed (\d+) files", report)
    assert analysed and int(analysed.group(1)) == _package_modules(staged), report
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    n_contracts = sum(section.startswith("importlinter:contract:") for section in config.sections())
    assert n_contracts >= 4 and f"Contracts: {n_contracts} kept, 0 broken." in report, report


@pytest.mark.parametrize("probe, broken", [
    # A lower layer importing a higher one, from inside a function.
    ("core/_probe.py", "def f():\n    from ttc.orchestrator import api\n"),
    # A circle between two modules of one package, one side inside a function.
    ("tasks/countdown/_probe.py", "from ttc.tasks.countdown import _probe2\n"),
    # The store reaching for the vocabulary of the layers.
    ("store/_probe.py", "from ttc.core.types import Verdict\n"),
])
def test_the_contracts_catch_a_violation(tmp_path, probe, broken):
    staged = _stage(tmp_path / "src")
    (staged / "ttc" / probe).write_text(broken)
    if "_probe2" in broken:
        (staged / "ttc" / "tasks" / "countdown" / "_probe2.py").write_text(
            "def g():\n    from ttc.tasks.countdown import _probe\n")
    out = _lint(staged)
    assert out.returncode == 1 and "BROKEN" in out.stdout, out.stdout + out.stderr


def _sources() -> list[Path]:
    folders = [ROOT / folder for folder in PACKAGE_DIRS.values()] + [ROOT / "tests"]
    return sorted(p for folder in folders for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _old_imports(path: Path) -> list[str]:
    """``line: name`` of every absolute import of a layer by its old top-level name,
    including ``importlib.import_module("...")`` with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] in OLD_NAMES]
    return found


def test_no_module_imports_a_layer_by_its_old_top_level_name():
    sources = _sources()
    assert len(sources) > 50 and ROOT / "tests" / "test_layers.py" in sources
    offenders = {str(p.relative_to(ROOT)): hits for p in sources if (hits := _old_imports(p))}
    assert offenders == {}


def test_the_old_name_check_sees_every_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import strategies.best_of_n\nfrom tasks import COUNTDOWN\nfrom ttc.core import Budget\n"
                     "def f():\n    import importlib\n    importlib.import_module('store.writer')\n"
                     "    from . import backends\n")
    assert _old_imports(probe) == ["1: strategies.best_of_n", "2: tasks", "6: store.writer"]


def test_every_package_directory_is_installed():
    """pyproject lists packages explicitly (package-dir maps each layer under ttc.): a
    subpackage missing there would import in an editable install and be absent from a wheel."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(config["packages"]), config["package-dir"]
    found = set()
    for package, folder in dirs.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"
