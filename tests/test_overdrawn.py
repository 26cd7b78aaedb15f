"""A server that spends more than it was allowed is charged as reported, and every JSON
result says so (``overdrawn``); usage it reports that is not a count is an error for that
call, never a crash that leaves the run open."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeOpenAI, completion_reply
from recording import run_cli

RIGHT = "3*5=15,15+7=22"
PROBLEM = '{"numbers": [3, 5, 7], "target": 22}'




@pytest.fixture
def greedy_server():
    # Ignores max_tokens: reports 500 completion tokens whatever it was asked.
    with FakeOpenAI(lambda body: completion_reply([RIGHT] * body.get("n", 1), 10, 500)) as srv:
        yield srv


def test_generate_solve_and_eval_show_overdrawn(greedy_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'o.db'}"
    remote = ["--base-url", greedy_server.url, "--tokenizer", "countdown-direct", "--max-retries", "0", "--db", db]
    code, out, err = run_cli(["generate", "--model", "fake", "--prompt", "3 5 7>22:", "--max-tokens", "20",
                            "--budget-tokens", "100", "--json", *remote])
    assert code == 0, err
    got = json.loads(out)
    assert got["overdrawn"] is True and got["usage"]["completion_tokens"] == 500

    code, out, err = run_cli(["solve", "--task", "countdown", "--model", "fake", "--problem", PROBLEM,
                            "--strategy", "sample", "--budget-tokens", "100", "--json", *remote])
    assert code == 0, err
    got = json.loads(out)
    assert got["overdrawn"] is True and got["tokens"] > 100 and got["correct"] is True

    problems = tmp_path / "p.jsonl"
    problems.write_text(PROBLEM + "\n" + PROBLEM.replace("22", "29") + "\n")
    code, out, err = run_cli(["eval", "--task", "countdown", "--model", "fake", "--problems", str(problems),
                            "--strategy", "sample", "--budget-tokens", "100", "--json", *remote])
    assert code == 0, err
    got = json.loads(out)
    assert got["overdrawn"] == 2 and all(row["overdrawn"] for row in got["problems"])


def test_within_budget_is_not_overdrawn(tmp_path):
    with FakeOpenAI(lambda body: completion_reply([RIGHT], 10, 14)) as srv:
        code, out, err = run_cli(["solve", "--task", "countdown", "--model", "fake", "--problem", PROBLEM,
                                "--base-url", srv.url, "--tokenizer", "countdown-direct", "--budget-tokens", "200",
                                "--json", "--db", f"sqlite:///{tmp_path / 'o.db'}"])
    assert code == 0, err
    assert json.loads(out)["overdrawn"] is False


@pytest.mark.parametrize("bad", [-3, 10**20, 2.5, "many"])
def test_invalid_usage_is_an_error_and_the_run_is_closed(tmp_path, bad):
    db = f"sqlite:///{tmp_path / 'o.db'}"
    reply = completion_reply([RIGHT], 10, 5)
    reply["usage"]["completion_tokens"] = bad
    with FakeOpenAI(lambda body: reply) as srv:
        code, out, err = run_cli(["solve", "--task", "countdown", "--model", "fake", "--problem", PROBLEM,
                                "--base-url", srv.url, "--max-retries", "0", "--json", "--db", db])
    assert code == 1 and "invalid usage" in json.loads(out)["error"]["message"]
    code, out, _ = run_cli(["traces", "list", "--json", "--db", db])
    runs = json.loads(out)["runs"]
    assert runs and all(r["status"] == "error" for r in runs)
