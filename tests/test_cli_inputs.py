"""The `ttc` CLI at its boundary: bad values are one line and exit 2 before any work, and
under --json every failure is one {"error": {...}} object on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc.backends.errors import BadInputError
from ttc.orchestrator import api
from ttc.orchestrator._cli_bench import bench_out_dir
from ttc.orchestrator.cli import main

PROBLEM = '{"numbers": [3, 5, 7], "target": 22}'
SOLVE = ["solve", "--task", "countdown", "--problem", PROBLEM]
NOT_UTF8 = b'\xff\xfe{"numbers": [3, 5, 7], "target": 22}\n'


def ttc(capsys, *args: str) -> tuple[int, str, str]:
    """Runs the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_failure(capsys, args: list[str], needle: str, code: int = 2) -> dict:
    """``args`` fail with ``code`` and one line naming ``needle``, in human and in --json form."""
    got, out, err = ttc(capsys, *args)
    assert got == code, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err

    got, out, err = ttc(capsys, *args, "--json")
    assert got == code, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got {out!r}"
    obj = json.loads(lines[0])
    assert set(obj) == {"error"} and set(obj["error"]) == {"type", "message"}
    assert needle in obj["error"]["message"] and "\n" not in obj["error"]["message"]
    assert len(err.strip().splitlines()) == 1 and needle in err
    return obj["error"]


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/t.db"


@pytest.fixture
def problems_file(tmp_path) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text(PROBLEM + "\n")
    return path


@pytest.fixture
def not_utf8(tmp_path) -> Path:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(NOT_UTF8)
    return path


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["-n", "0"], "--n must be at least 1, got 0"),
        (["-n", "-5"], "--n must be at least 1, got -5"),
        (["-P", "n=-3"], "-P n must be at least 1, got -3"),
        (["-P", "n=abc"], "-P n must be an integer, got 'abc'"),
        (["-P", "n=2.5"], "-P n must be an integer"),
        (["-P", "n=true"], "-P n must be an integer"),
        (["-P", "k=0"], "-P k must be at least 1"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1, got 0"),
        (["-P", "max_tokens=0"], "-P max_tokens must be at least 1"),
        (["--temperature", "nan"], "--temperature must be a finite number"),
        (["--temperature", "inf"], "--temperature must be a finite number"),
        (["--temperature", "-0.5"], "--temperature must be >= 0"),
        (["-P", "temperature=NaN"], "-P temperature must be a finite number"),
        (["--seed", str(2**63)], "--seed must be an integer from 0 to 2**63-1"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**63-1"),
        (["-P", f"seed={2**64}"], "-P seed must be an integer from 0 to 2**63-1"),
        (["--budget-tokens", "0"], "--budget-tokens must be at least 1, got 0"),
        (["--budget-tokens", "-3"], "--budget-tokens must be at least 1, got -3"),
        (["--param", "novalue"], "--param expects KEY=VALUE"),
        (["--role", "search"], "--role expects ROLE=MODEL"),
        (["--role", "=countdown-search"], "--role expects ROLE=MODEL"),
        (["--role", "search="], "--role expects ROLE=MODEL"),
        (["--role", "search=a", "--role", "search=b"], "--role search is given twice"),
        (["--timeout", "0"], "--timeout must be a finite number of seconds > 0"),
        (["--connect-timeout", "nan"], "--connect-timeout must be a finite number of seconds > 0"),
        (["--max-retries", "-1"], "--max-retries must be at least 0"),
        (["--tokenizer", " "], "--tokenizer must not be empty"),
        (["-n", "abc"], "Invalid value for '-n' / '--n'"),  # the parser's own error
        (["--bogus-flag"], "No such option: --bogus-flag"),
    ],
)
def test_solve_bad_values_exit_2(capsys, db, extra, needle):
    assert_failure(capsys, [*SOLVE, *extra, "--db", db], needle)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["-n", "0"], "--n must be at least 1, got 0"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1, got 0"),
        (["--temperature", "nan"], "--temperature must be a finite number"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--seed", str(2**63)], "--seed must be an integer from 0 to 2**63-1"),
        (["--budget-tokens", "0"], "--budget-tokens must be at least 1"),
    ],
)
def test_generate_bad_values_exit_2(capsys, db, extra, needle):
    assert_failure(capsys, ["generate", "--model", "countdown-direct", "--prompt", "x", *extra, "--db", db], needle)


def test_eval_bad_values_exit_2(capsys, db, problems_file, not_utf8):
    base = ["eval", "--task", "countdown", "--db", db]
    assert_failure(capsys, [*base, "--problems", str(problems_file), "-P", "n=-3"], "-P n must be at least 1")
    assert_failure(capsys, [*base, "--problems", str(problems_file), "--role", "x"], "--role expects ROLE=MODEL")
    assert_failure(capsys, [*base, "--problems", str(not_utf8)], "is not UTF-8 text")


def test_files_that_are_not_utf8_exit_2(capsys, db, tmp_path, not_utf8):
    assert_failure(capsys, ["solve", "--task", "countdown", "--problem", f"@{not_utf8}", "--db", db],
                   "is not UTF-8 text")
    assert_failure(capsys, ["generate", "--model", "countdown-direct", "--prompt", f"@{not_utf8}", "--db", db],
                   "is not UTF-8 text")


def test_models_eval_checks_its_inputs(capsys, tiny_checkpoint, not_utf8):
    assert_failure(capsys, ["models", "eval", tiny_checkpoint, "--problems", str(not_utf8)], "is not UTF-8 text")
    assert_failure(capsys, ["models", "eval", tiny_checkpoint, "--temperature", "nan"], "--temperature")
    assert_failure(capsys, ["models", "eval", tiny_checkpoint, "--seed", str(2**63)], "--seed must be an integer")
    assert_failure(capsys, ["models", "train", "countdown-direct-small", "--seed", "-1"], "--seed must be")


@pytest.mark.parametrize(("value", "needle"), [("0", "greater than or equal to 1"),
                                               ("10001", "less than or equal to 10000"), ("x", "valid integer")])
def test_traces_list_limit_is_bounded(capsys, db, value, needle):
    error = assert_failure(capsys, ["traces", "list", "--limit", value, "--db", db], needle)
    assert "--limit" in error["message"]


def test_env_values_are_checked_too(capsys, db, monkeypatch):
    monkeypatch.setenv("TTC_TIMEOUT", "soon")
    assert_failure(capsys, [*SOLVE, "--db", db], "TTC_TIMEOUT")
    monkeypatch.setenv("TTC_TIMEOUT", "-2")
    assert_failure(capsys, [*SOLVE, "--db", db], "--timeout must be a finite number of seconds > 0")


def test_runtime_failure_under_json_is_one_error_object(capsys):
    error = assert_failure(capsys, ["traces", "list", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/test"],
                           "127.0.0.1:1", code=1)
    assert error["type"]


def test_bad_db_url_under_json(capsys):
    error = assert_failure(capsys, ["traces", "stats", "--db", "ttc.db"], "sqlite:///")
    assert error["type"]


# ---------------------------------------------------------------------- bench output files


@pytest.mark.parametrize(
    ("args", "file_name"),
    [
        (["throughput", "--quick"], "throughput.json"),
        (["overhead", "--quick"], "overhead.json"),
        (["backtrack-vs-parallel", "--task", "countdown", "--quick"], "backtrack-vs-parallel-countdown.json"),
        (["auto", "--task", "sudoku", "--quick"], "auto-sudoku.json"),
    ],
)
def test_bench_refuses_to_overwrite_an_explicit_out(capsys, tmp_path, args, file_name):
    (tmp_path / file_name).write_text('{"kept": true}\n')
    assert_failure(capsys, ["bench", *args, "--out", str(tmp_path)], "already exists")
    assert json.loads((tmp_path / file_name).read_text()) == {"kept": True}


def test_bench_out_must_be_a_directory(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    assert_failure(capsys, ["bench", "overhead", "--quick", "--out", str(tmp_path / "f")], "is a file")


def test_bench_task_is_checked_before_it_names_a_file(capsys, tmp_path):
    assert_failure(capsys, ["bench", "auto", "--task", "../x", "--quick", "--out", str(tmp_path)], "unknown task")


def test_bench_output_directories(tmp_path):
    assert bench_out_dir(None, quick=True, name="overhead") == Path("bench/results/quick")
    assert bench_out_dir(None, quick=False, name="overhead") == Path("bench/results")
    (tmp_path / "overhead.json").write_text("{}")
    with pytest.raises(BadInputError, match="already exists"):
        bench_out_dir(tmp_path, quick=True, name="overhead")
    assert bench_out_dir(tmp_path, quick=True, name="overhead", force=True) == tmp_path
    assert bench_out_dir(tmp_path, quick=True, name="throughput") == tmp_path


def test_quick_results_are_git_ignored():
    ignore = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert "bench/results/quick/" in ignore


# ---------------------------------------------------------------------- remote options and roles


class _RecordingOrchestrator:
    """Stands in for Orchestrator: records what the CLI passes, then stops the command."""

    seen: dict = {}
    db_url = "sqlite:///recorded.db"

    def __init__(self, **kwargs):
        type(self).seen = {"init": kwargs}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def solve(self, task, problem, **kwargs):
        self.seen["solve"] = kwargs
        raise BadInputError("recorded")

    def evaluate(self, task, problems, **kwargs):
        self.seen["evaluate"] = kwargs
        raise BadInputError("recorded")

    def generate(self, model, prompts, **kwargs):
        self.seen["generate"] = kwargs
        raise BadInputError("recorded")


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(api, "Orchestrator", _RecordingOrchestrator)
    return _RecordingOrchestrator


def test_remote_options_and_roles_reach_the_orchestrator(capsys, db, recording):
    code, _, err = ttc(capsys, *SOLVE, "--db", db, "--trust-remote-code", "--connect-timeout", "3",
                       "--timeout", "7.5", "--max-retries", "2", "--tokenizer", "tok",
                       "--role", "search=countdown-search", "--role", "judge=j")
    assert code == 2 and "recorded" in err
    assert recording.seen["init"] == {"db": db, "device": "auto", "trust_remote_code": True, "connect_timeout": 3.0,
                                      "timeout": 7.5, "max_retries": 2, "tokenizer": "tok"}
    assert recording.seen["solve"]["models"] == {"search": "countdown-search", "judge": "j"}


def test_remote_options_from_the_environment(capsys, db, recording, monkeypatch, problems_file):
    monkeypatch.setenv("TTC_TRUST_REMOTE_CODE", "1")
    monkeypatch.setenv("TTC_TIMEOUT", "9")
    monkeypatch.setenv("TTC_MAX_RETRIES", "0")
    monkeypatch.setenv("TTC_TOKENIZER", "t")
    monkeypatch.setenv("TTC_CONNECT_TIMEOUT", "1.5")
    code, _, _ = ttc(capsys, "eval", "--task", "countdown", "--problems", str(problems_file), "--db", db)
    assert code == 2
    assert recording.seen["init"] == {"db": db, "device": "auto", "trust_remote_code": True, "connect_timeout": 1.5,
                                      "timeout": 9.0, "max_retries": 0, "tokenizer": "t"}
    assert "models" not in recording.seen["evaluate"]


def test_defaults_pass_no_remote_keywords(capsys, db, recording):
    code, _, _ = ttc(capsys, *SOLVE, "--db", db, "--device", "cpu")
    assert code == 2
    assert recording.seen["init"] == {"db": db, "device": "cpu"}
    assert "models" not in recording.seen["solve"]


def test_demo_and_generate_take_the_remote_options(capsys, db, recording):
    code, _, err = ttc(capsys, "demo", "--db", db, "--timeout", "4")
    assert code == 2 and "recorded" in err
    assert recording.seen["init"] == {"db": db, "device": "auto", "timeout": 4.0}
    code, _, err = ttc(capsys, "generate", "--model", "m", "--prompt", "p", "--db", db, "--trust-remote-code")
    assert code == 2 and "recorded" in err
    assert recording.seen["init"] == {"db": db, "device": "auto", "trust_remote_code": True}
