"""What the `ttc` CLI prints from data: escaped for Rich, folded not cut, and its help and version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import ttc as ttc_pkg
from ttc.core.types import Candidate, Result, Verdict
from ttc.orchestrator import api
from ttc.orchestrator.cli import main
from ttc.store.records import CandidateRecord

EVIL = "[/evil]"
LONG_NAME = "long-" + "y" * 90


def ttc(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def one_json(out: str) -> dict:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


@pytest.fixture
def evil_db(tmp_path) -> tuple[str, str]:
    """A store with a run named ``[/evil]`` (markup-like spans, candidate and error), and a long-named run."""
    url = f"sqlite:///{tmp_path}/t.db"
    with api.Orchestrator(db=url) as orc:
        with orc.run("solve", EVIL, note="[bold]x[/]") as tracer:
            with tracer.span("llm", "[/span]", model="[red]m"):
                pass
            run_id = tracer.trace_id
            orc.store.add_candidates([CandidateRecord(run_id=run_id, idx=0, text="[/text]", answer="[/answer]",
                                                      correct=True, score=1.0, reason="[/why]", tokens=3)])
        with pytest.raises(ValueError):
            with orc.run("solve", "[b]failing"):
                raise ValueError("[/boom] went wrong")
        with orc.run("solve", LONG_NAME):
            pass
    return url, run_id


def test_evil_names_through_every_traces_command(capsys, evil_db):
    url, run_id = evil_db
    code, out, err = ttc(capsys, "traces", "list", "--db", url)
    assert code == 0, err
    assert EVIL in out and "[b]failing" in out

    code, out, err = ttc(capsys, "traces", "show", run_id, "--db", url)
    assert code == 0, err
    for text in (EVIL, "[/span]", "[/answer]", "[/text]", run_id):
        assert text in out

    failing = next(r for r in one_json(ttc(capsys, "traces", "list", "--db", url, "--json")[1])["runs"]
                   if r["name"] == "[b]failing")
    code, out, err = ttc(capsys, "traces", "show", failing["id"], "--db", url)
    assert code == 0, err
    assert "[/boom] went wrong" in out

    code, out, err = ttc(capsys, "traces", "stats", "--db", url)
    assert code == 0, err
    assert "runs: 3" in out


def test_evil_names_in_json(capsys, evil_db):
    url, run_id = evil_db
    code, out, _ = ttc(capsys, "traces", "list", "--db", url, "--json")
    assert code == 0 and EVIL in [r["name"] for r in one_json(out)["runs"]]
    code, out, _ = ttc(capsys, "traces", "show", run_id[:8], "--db", url, "--json")
    detail = one_json(out)
    assert code == 0 and detail["run"]["name"] == EVIL and detail["run"]["attributes"]["note"] == "[bold]x[/]"
    assert detail["candidates"][0]["answer"] == "[/answer]"
    code, out, _ = ttc(capsys, "traces", "stats", "--db", url, "--json")
    assert code == 0 and one_json(out)["runs"] == 3


def _column(text: str, index: int) -> str:
    """Cells of column ``index`` of a Rich table, joined across the lines a fold made."""
    parts = []
    for line in text.splitlines():
        cells = line.split("│")
        if len(cells) > index + 1:
            parts.append(cells[index + 1].strip())
    return "".join(parts)


def test_tables_fold_ids_and_names_at_80_columns(evil_db):
    url, _ = evil_db
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm"}
    proc = subprocess.run([sys.executable, "-m", "ttc", "traces", "list", "--db", url], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())
    ids = json.loads(subprocess.run([sys.executable, "-m", "ttc", "traces", "list", "--db", url, "--json"],
                                    capture_output=True, text=True, timeout=120).stdout)["runs"]
    # Each run's full id and name appear, folded over consecutive lines of their column.
    for r in ids:
        assert r["id"] not in proc.stdout  # 80 columns cannot hold every id on one line ...
    assert "".join(r["id"] for r in ids) == _column(proc.stdout, 0)  # ... but no character is cut
    assert LONG_NAME in _column(proc.stdout, 2)


def test_solve_output_escapes_answers_and_reasons(capsys, tmp_path, monkeypatch):
    class Fake:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def solve(self, task, problem, **kwargs):
            verdict = Verdict(correct=False, score=0.0, reason="[/why] not")
            return Result(strategy="[/strategy]", answer="[/answer]", correct=False, stop_reason="done",
                          candidates=[Candidate(text="[/t]", answer="[/answer]", verdict=verdict)],
                          trace_id="[/trace]")

    monkeypatch.setattr(api, "Orchestrator", Fake)
    code, out, err = ttc(capsys, "solve", "--task", "countdown", "--problem", '{"numbers": [1, 2], "target": 3}',
                         "--db", f"sqlite:///{tmp_path}/t.db")
    assert code == 0, err
    assert "'[/answer]'" in out and "([/why] not)" in out and "trace: [/trace]" in out


def test_version(capsys):
    code, out, _ = ttc(capsys, "--version")
    assert code == 0 and out.strip() == f"ttc {ttc_pkg.__version__}" == "ttc 0.1.0"


@pytest.mark.parametrize("command", [["solve"], ["eval"], ["generate"], ["demo"], ["traces", "list"],
                                     ["models", "eval"], ["bench", "throughput"]])
def test_help_shows_flags_as_flags(capsys, command):
    code, out, _ = ttc(capsys, *command, "--help")
    assert code == 0
    flags = [line.split()[0] for line in out.splitlines() if line.strip().startswith("--json")]
    assert flags == ["--json"]
    json_line = next(line for line in out.splitlines() if line.strip().startswith("--json"))
    assert "<bool>" not in out and "BOOLEAN" not in out and json_line.split()[1] != "<bool>"


@pytest.mark.parametrize("command", [["solve"], ["eval"], ["generate"], ["demo"]])
def test_model_commands_have_the_remote_flags(capsys, command):
    code, out, _ = ttc(capsys, *command, "--help")
    assert code == 0
    for flag, env in [("--trust-remote-code", "TTC_TRUST_REMOTE_CODE"), ("--connect-timeout", "TTC_CONNECT_TIMEOUT"),
                      ("--timeout", "TTC_TIMEOUT"), ("--max-retries", "TTC_MAX_RETRIES"),
                      ("--tokenizer", "TTC_TOKENIZER")]:
        assert flag in out and env in out
    trust = next(line for line in out.splitlines() if line.strip().startswith("--trust-remote-code"))
    assert trust.split()[1] == "Allow"  # a flag: its help text follows, not a value
