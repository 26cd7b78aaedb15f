"""Every example of the README runs as written (DESIGN: "Every README example runs in a test").

Shell blocks run with bash, block by block, from the repository root, with the test's venv
first on PATH; Python blocks run with this interpreter. A few substitutions keep them
fast and self-contained, and nothing else changes:

- the trace store is a temporary SQLite file (``TTC_DB``, and ``sqlite:///ttc.db`` in Python);
- ``--base-url http://localhost:8000/v1`` points at a loopback fake OpenAI-compatible server;
- training runs 2 steps instead of 10 minutes, ``models eval`` 3 problems instead of 200,
  and checkpoints, allocation files and the files batch and traces commands write go to a
  temporary directory;
- the install blocks (``python3 -m venv ...``) are what CI runs itself; benches (``--quick``)
  run only in the slow test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI, completion_reply

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall((ROOT / "README.md").read_text()) if lang == kind]


def _shell_blocks(benches: bool) -> list[str]:
    out = []
    for body in _blocks("bash"):
        if body.lstrip().startswith("python3 -m venv"):
            continue
        if ("ttc bench" in body) == benches:
            out.append(body)
    return out


def _prepare(body: str, tmp_path: Path, url: str) -> str:
    venv_bin = Path(sys.executable).parent
    body = body.replace("source .venv/bin/activate", f'export PATH="{venv_bin}:$PATH"')
    body = body.replace("http://localhost:8000/v1", url)
    body = body.replace("--minutes 10", "--steps 2").replace("--limit 200", "--limit 3")
    body = body.replace("plan-solve-allocation.json", str(tmp_path / "plan-solve-allocation.json"))
    for name in ("batch-out.jsonl", "run.otlp.json", "spans.csv", "accuracy.png"):
        body = body.replace(f" {name}", f" {tmp_path / name}")
    return body.replace("--out runs/small", f"--out {tmp_path / 'small'}")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TTC_DB": f"sqlite:///{tmp_path / 'readme.db'}", "OMP_NUM_THREADS": "1"}


def _run_shell(body: str, tmp_path: Path, url: str, timeout: int) -> None:
    script = "set -euo pipefail\n" + _prepare(body, tmp_path, url)
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"README block failed:\n{body}\n--- stderr:\n{proc.stderr[-3000:]}"


@pytest.fixture
def fake_server():
    with FakeOpenAI(lambda body: completion_reply(["4"] * body.get("n", 1), 4, 1)) as srv:
        yield srv


def test_readme_has_examples():
    assert len(_shell_blocks(False)) >= 3 and _shell_blocks(True) and len(_blocks("python")) >= 2


@pytest.mark.parametrize("index", range(len(_shell_blocks(False))))
def test_readme_shell_block(index, tmp_path, fake_server):
    _run_shell(_shell_blocks(False)[index], tmp_path, fake_server.url, timeout=900)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_block(index, tmp_path):
    code = _blocks("python")[index].replace('"sqlite:///ttc.db"', repr(f"sqlite:///{tmp_path / 'py.db'}"))
    code = code.replace('"plan-solve-allocation.json"', repr(str(tmp_path / "plan-solve-allocation.json")))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_shell_blocks(True))))
def test_readme_bench_block(index, tmp_path, fake_server):
    _run_shell(_shell_blocks(True)[index], tmp_path, fake_server.url, timeout=3000)


def test_readme_main_job_runs(tmp_path):
    """The first install line ends with the main job on the built-in defaults; run that part."""
    install = next(b for b in _blocks("bash") if b.lstrip().startswith("python3 -m venv"))
    main_job = install.strip().split("&&")[-1].strip()
    assert main_job == ".venv/bin/ttc demo"
    proc = subprocess.run([str(Path(sys.executable).parent / "ttc"), "demo"], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best_of_n" in proc.stdout and (tmp_path / "readme.db").exists()
