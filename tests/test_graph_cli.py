"""`ttc allocate` and `ttc graph solve|resume` as a user runs them, on the shipped models."""

from __future__ import annotations

import json

import pytest

from recording import run_cli
from ttc.orchestrator.graph.builtin import make_problems


def _ttc(*args):
    return run_cli(args)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alloc")
    db, path = f"sqlite:///{tmp / 'a.db'}", tmp / "alloc.json"
    code, out, err = _ttc("allocate", "plan-solve", "--train-size", "2", "--trials", "3", "--method", "random",
                          "--out", str(path), "--db", db, "--json")
    assert code == 0, err
    return json.loads(out), path, db


def test_allocate_writes_an_allocation_file_naming_graph_and_digests(searched):
    body, path, _ = searched
    assert body["trials"] == 3 and body["graph"] == "plan-solve" and set(body["allocation"]["stages"]) == {
        "sudoku", "plan", "solve"}
    assert 0.0 <= body["score"] <= 1.0 and body["cost"] > 0 and len(body["score_ci95"]) == 2
    on_disk = json.loads(path.read_text())
    assert on_disk["checkpoint_digests"]["countdown-direct"] and on_disk["allocation"] == body["allocation"]


def test_graph_solve_runs_the_allocation_file(searched, tmp_path):
    _, path, db = searched
    problem = json.dumps(make_problems(1, split="test")[0])
    code, out, err = _ttc("graph", "solve", "plan-solve", "--problem", problem, "--allocation", str(path),
                          "--db", db, "--json")
    assert code == 0, err
    result = json.loads(out)
    alloc = json.loads(path.read_text())["allocation"]["stages"]
    assert {s: o["model"] for s, o in result["outputs"].items()} == {s: o["model"] for s, o in alloc.items()}
    assert result["tokens"] <= result["budget_tokens"] == sum(o["budget_tokens"] for o in alloc.values())


def test_allocation_file_for_other_checkpoints_or_graph_is_bad_input(searched, tmp_path):
    _, path, db = searched
    body = json.loads(path.read_text())
    body["checkpoint_digests"]["countdown-direct"] = "0" * 64
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(body))
    problem = json.dumps(make_problems(1)[0])
    code, out, err = _ttc("graph", "solve", "plan-solve", "--problem", problem, "--allocation", str(stale),
                          "--db", db, "--json")
    assert code == 2 and "other checkpoints of countdown-direct" in json.loads(out)["error"]["message"]
    body["graph"] = "another"
    stale.write_text(json.dumps(body))
    code, out, _ = _ttc("graph", "solve", "plan-solve", "--problem", problem, "--allocation", str(stale), "--json")
    assert code == 2 and "for graph 'another'" in json.loads(out)["error"]["message"]


def test_unknown_graph_and_method_are_bad_input():
    assert _ttc("allocate", "nope", "--json")[0] == 2
    assert _ttc("allocate", "plan-solve", "--method", "annealing", "--json")[0] == 2


def test_ttc_solve_takes_an_allocation_file_for_a_graph(searched):
    _, path, db = searched
    problem = json.dumps(make_problems(1, split="test")[0])
    code, out, err = _ttc("solve", "--graph", "plan-solve", "--allocation", str(path), "--problem", problem,
                          "--db", db, "--json")
    assert code == 0, err
    assert set(json.loads(out)["outputs"]) == {"sudoku", "plan", "solve"}
    code, out, _ = _ttc("solve", "--task", "countdown", "--allocation", str(path), "--problem", problem, "--json")
    assert code == 2 and "--allocation goes with --graph" in json.loads(out)["error"]["message"]


def test_python_api_allocates_and_solves_a_graph_with_the_file(tmp_path):
    from ttc import Orchestrator
    from ttc.orchestrator.graph.builtin import PLAN_SOLVE

    path = tmp_path / "alloc.json"
    with Orchestrator(db=f"sqlite:///{tmp_path / 'p.db'}", device="cpu") as orc:
        found = orc.allocate(PLAN_SOLVE, make_problems(2, split="train"), method="grid", trials=2, out=path)
        assert found["trials"] == 2 and found["space"] > 2 and path.is_file()
        assert orc.get_run(found["trace_id"]).run.kind == "allocate"
        assert [s.kind for s in orc.get_run(found["trace_id"]).spans].count("trial") == 2
        result = orc.solve(PLAN_SOLVE, make_problems(1, split="test")[0], allocation=path)
        assert {s: o.model for s, o in result.outputs.items()} == {
            s: o.model for s, o in found["allocation"].stages.items()}
        assert result.tokens <= result.budget_tokens == found["allocation"].budget_tokens
