"""The `ttc` CLI end to end: JSON on stdout, exit codes, one-line errors, the store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ttc.orchestrator.cli import main


def ttc(capsys, *args: str) -> tuple[int, str, str]:
    """Runs the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def one_json(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got {out!r}"
    return json.loads(lines[0])


def test_models_list_json_shape(capsys):
    code, out, _ = ttc(capsys, "models", "list", "--json")
    assert code == 0
    data = one_json(out)
    assert isinstance(data["models"], list)
    for m in data["models"]:
        assert set(m) >= {"name", "path", "task", "kind", "params"}


def test_generate_is_traced_and_queryable(capsys, tiny_checkpoint, sqlite_url):
    code, out, _ = ttc(capsys, "generate", "--model", tiny_checkpoint, "--prompt", "hello", "-n", "3",
                       "--max-tokens", "7", "--temperature", "0.8", "--seed", "1", "--db", sqlite_url, "--json")
    assert code == 0
    g = one_json(out)
    assert len(g["completions"]) == 3
    assert all(c["completion_tokens"] <= 7 and c["finish_reason"] in ("stop", "length") for c in g["completions"])
    # "hello" is 5 characters plus BOS, prefilled once for the 3 samples.
    assert g["usage"]["prompt_tokens"] == 6
    assert g["usage"]["completion_tokens"] == sum(c["completion_tokens"] for c in g["completions"])
    assert g["flops"] > 0 and g["eflops"] > g["flops"]

    code, out, _ = ttc(capsys, "traces", "list", "--db", sqlite_url, "--json")
    runs = one_json(out)["runs"]
    assert [r["id"] for r in runs] == [g["trace_id"]]
    assert runs[0]["status"] == "ok" and runs[0]["output_tokens"] == g["usage"]["completion_tokens"]

    code, out, _ = ttc(capsys, "traces", "show", g["trace_id"][:8], "--db", sqlite_url, "--json")
    detail = one_json(out)
    kinds = {s["kind"] for s in detail["spans"]}
    assert kinds == {"run", "llm"}
    llm = next(s for s in detail["spans"] if s["kind"] == "llm")
    assert llm["model"] == "tiny-llama" and llm["input_tokens"] == 6
    assert llm["attributes"]["gen_ai.request.choice.count"] == 3

    code, out, _ = ttc(capsys, "traces", "stats", "--db", sqlite_url, "--json")
    stats = one_json(out)
    assert stats["runs"] == 1 and stats["models"][0]["calls"] == 1

    code, out, _ = ttc(capsys, "traces", "show", g["trace_id"], "--db", sqlite_url)
    assert code == 0 and "llm:generate" in out


def test_generate_on_postgres(capsys, tiny_checkpoint, pg_url):
    code, out, _ = ttc(capsys, "generate", "--model", tiny_checkpoint, "--prompt", "hi", "--max-tokens", "3",
                       "--db", pg_url, "--json")
    assert code == 0
    trace_id = one_json(out)["trace_id"]
    code, out, _ = ttc(capsys, "traces", "show", trace_id, "--db", pg_url, "--json")
    assert code == 0 and one_json(out)["run"]["id"] == trace_id


def test_budget_shrinks_generate(capsys, tiny_checkpoint, sqlite_url):
    # 6 prompt tokens + 4 samples x 5 tokens = 26 > 20: only 2 samples fit.
    code, out, _ = ttc(capsys, "generate", "--model", tiny_checkpoint, "--prompt", "hello", "-n", "4",
                       "--max-tokens", "5", "--budget-tokens", "20", "--db", sqlite_url, "--json")
    assert code == 0
    g = one_json(out)
    assert len(g["completions"]) == 2 and g["usage"]["total_tokens"] <= 20


def test_solve_countdown_json(capsys, tiny_checkpoint, sqlite_url):
    code, out, _ = ttc(capsys, "solve", "--task", "countdown", "--problem", '{"numbers": [3, 5, 7], "target": 22}',
                       "--model", tiny_checkpoint, "--db", sqlite_url, "--json")
    assert code == 0
    r = one_json(out)
    assert {"answer", "correct", "usage", "trace_id"} <= set(r)
    assert r["correct"] in (True, False)  # an exact verifier always decides
    assert r["usage"]["total_tokens"] > 0
    code, out, _ = ttc(capsys, "traces", "show", r["trace_id"], "--db", sqlite_url, "--json")
    detail = one_json(out)
    assert {s["kind"] for s in detail["spans"]} == {"run", "strategy", "llm", "verifier"}
    assert len(detail["candidates"]) == 1
    assert detail["run"]["attributes"]["correct"] == r["correct"]


def test_solve_budget_too_small_returns_no_answer(capsys, tiny_checkpoint, sqlite_url):
    code, out, _ = ttc(capsys, "solve", "--task", "countdown", "--problem", '{"numbers": [3, 5, 7], "target": 22}',
                       "--model", tiny_checkpoint, "--budget-tokens", "5", "--db", sqlite_url, "--json")
    assert code == 0
    r = one_json(out)
    assert r["answer"] is None and r["stop_reason"] == "no_budget" and r["usage"]["total_tokens"] == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "--model", "/no/such/dir", "--prompt", "x"], "unknown model"),
        (["generate", "--model", "{tmp}", "--prompt", "x"], "not a checkpoint directory"),
        (["generate", "--model", "{ckpt}", "--prompt", "x", "-n", "0"], "n must be at least 1"),
        (["generate", "--model", "{ckpt}", "--prompt", "x", "--budget-tokens", "-3"], "--budget-tokens must be at least 1"),
        (["generate", "--model", "{ckpt}", "--prompt", "x", "--temperature", "-1"], "temperature"),
        (["generate", "--model", "{ckpt}", "--prompt", "@/no/such/file"], "cannot read prompt file"),
        (["traces", "list", "--db", "ttc.db"], "sqlite:///"),
        (["traces", "list", "--db", "mysql://u@h/d"], "unsupported database"),
        (["traces", "show", "nosuchrun", "--db", "{sqlite}"], "no run"),
        (["solve", "--task", "chess", "--problem", "{{}}"], "valid tasks: countdown"),
        (["solve", "--task", "countdown", "--problem", "{{oops"], "not valid JSON"),
        (["solve", "--task", "countdown", "--problem", '{{"numbers": [1, 2], "target": -4}}'], "target"),
        (["solve", "--task", "countdown", "--problem", '{{"numbers": [1, 2], "target": 3}}', "--strategy", "magic"],
         "valid strategies"),
        (["generate", "--model", "{ckpt}", "--prompt", "x", "--bogus-flag"], "No such option"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, tiny_checkpoint, sqlite_url, args, needle):
    args = [a.format(tmp=tmp_path, ckpt=tiny_checkpoint, sqlite=sqlite_url) for a in args]
    code, out, err = ttc(capsys, *args)
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert out == ""


def test_unreachable_database_exits_1(capsys):
    code, _, err = ttc(capsys, "traces", "list", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert code == 1 and "127.0.0.1:1" in err and "Traceback" not in err


def test_console_script_runs_without_traceback(tmp_path):
    """The installed entry point, as a user runs it: bad input, exit 2, one line."""
    proc = subprocess.run([sys.executable, "-m", "ttc", "traces", "list", "--db", "nope"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_models_train_then_eval(capsys, tmp_path):
    """A few real training steps through the CLI, then the card measurement on a problem file."""
    out_dir = tmp_path / "ckpt"
    code, out, _ = ttc(capsys, "models", "train", "countdown-direct-small", "--steps", "2", "--out", str(out_dir),
                       "--json")
    assert code == 0
    state = one_json(out)
    assert state["steps"] == 2 and (out_dir / "model.safetensors").is_file()
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"numbers": [3, 5, 7], "target": 22}\n\n{"id": "b", "numbers": [10, 2, 5, 1], "target": 50}\n')
    code, out, _ = ttc(capsys, "models", "eval", str(out_dir), "--problems", str(problems), "--quick", "--json")
    assert code == 0
    res = one_json(out)
    assert res["n_problems"] == 2 and 0.0 <= res["pass_at_1"] <= 1.0 and set(res["pass_at_k"]) == {"1", "4"}


def test_models_eval_names_the_bad_line(capsys, tmp_path, tiny_checkpoint):
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"numbers": [3, 5, 7], "target": 22}\n{"numbers": [3, 5], "target": "x"}\n')
    code, _, err = ttc(capsys, "models", "eval", tiny_checkpoint, "--problems", str(problems))
    assert code == 2 and f"{problems}:2:" in err
    code, _, err = ttc(capsys, "models", "train", "no-such-recipe")
    assert code == 2 and "valid recipes" in err


def test_eval_reports_accuracy_with_ci_and_traces_each_problem(capsys, tmp_path, tiny_checkpoint, sqlite_url):
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": "a", "numbers": [3, 5, 7], "target": 22}\n{"id": "b", "numbers": [2, 4], "target": 8}\n')
    code, out, _ = ttc(capsys, "eval", "--task", "countdown", "--problems", str(problems), "--strategy", "best_of_n",
                       "-n", "2", "--max-tokens", "12", "--budget-tokens", "200", "--model", tiny_checkpoint,
                       "--db", sqlite_url, "--json")
    assert code == 0
    rep = one_json(out)
    assert rep["n_problems"] == 2 and 0.0 <= rep["accuracy"] <= 1.0
    lo, hi = rep["ci95"]
    assert 0.0 <= lo <= rep["accuracy"] <= hi <= 1.0
    assert rep["usage"]["prompt_tokens"] > 0 and rep["tokens"] <= 2 * 200
    assert [p["id"] for p in rep["problems"]] == ["a", "b"]
    code, out, _ = ttc(capsys, "traces", "show", rep["trace_id"], "--db", sqlite_url, "--json")
    spans = one_json(out)["spans"]
    assert [s["name"] for s in spans if s["kind"] == "problem"] == ["a", "b"]


def test_eval_bad_param_is_bad_input(capsys, tmp_path, tiny_checkpoint):
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"numbers": [3, 5, 7], "target": 22}\n')
    code, _, err = ttc(capsys, "eval", "--task", "countdown", "--problems", str(problems), "-P", "beam=3",
                       "--model", tiny_checkpoint)
    assert code == 2 and "takes no parameter beam" in err
