"""``ttc bench allocation``'s parts: worker-process evaluation, the shared stage cache, the
default allocation, marginal-gain weights, regularities, and the CLI's bad input."""

from __future__ import annotations

import json

import pytest

from ttc import Orchestrator
from ttc.core.tracing import NullTracer
from ttc.orchestrator.bench.allocation import _default_allocation, _marginal_weights, regularities
from ttc.orchestrator.cli import main
from ttc.orchestrator.graph import Allocation, SearchSpace, StageOption, TrialResult
from ttc.orchestrator.graph.builtin import PLAN_SOLVE, SUDOKU_COUNTDOWN, make_problems
from ttc.orchestrator.graph.replay import ReplayTable
from ttc.orchestrator.graph.run import run_graph
from ttc.orchestrator.bench.graph_tables import Job, evaluate_jobs

@pytest.fixture
def orc(tmp_path):
    with Orchestrator(db=f"sqlite:///{tmp_path / 'b.db'}", device="cpu") as o:
        yield o


CHEAP = Allocation(stages={
    "sudoku": StageOption(model="sudoku-direct", strategy="best_of_n", budget_tokens=128),
    "plan": StageOption(model="countdown-direct", strategy="best_of_n", budget_tokens=96),
    "solve": StageOption(model="countdown-direct", strategy="best_of_n", budget_tokens=96),
})


def test_worker_processes_give_what_one_process_gives(tmp_path):
    problems = make_problems(3, seed=5, split="train")
    other = CHEAP.with_stage("solve", StageOption(model="countdown-direct", strategy="best_of_n", budget_tokens=192))
    jobs = [Job(graph="plan-solve", allocations=[CHEAP, other])]
    one = evaluate_jobs(jobs, problems, workers=1, db_dir=str(tmp_path))
    two = evaluate_jobs(jobs, problems, workers=2, db_dir=str(tmp_path))
    for a, b in zip(one[0], two[0]):
        assert a.allocation == b.allocation
        assert (a.scores, a.tokens, a.stage_correct, a.stage_tokens) == (b.scores, b.tokens, b.stage_correct,
                                                                         b.stage_tokens)
        assert len(a.scores) == 3 and all(t > 0 for t in a.tokens)
        assert a.result().stage_spend["solve"] <= a.allocation.stages["solve"].budget_tokens


def test_stage_cache_is_shared_across_graphs_by_task_and_input(orc):
    problem = make_problems(1, seed=9, split="train")[0]
    cache: dict = {}
    first = run_graph(orc, PLAN_SOLVE, problem, CHEAP, tracer=NullTracer(), cache=cache)
    runs = len(cache)
    pair = Allocation(stages={"sudoku": CHEAP.stages["sudoku"], "countdown": CHEAP.stages["plan"]})
    second = run_graph(orc, SUDOKU_COUNTDOWN, problem, pair, tracer=NullTracer(), cache=cache)
    assert len(cache) == runs  # both stages were served: same task, option and input as in plan-solve
    assert second.outputs["countdown"].stage == "countdown"
    assert second.outputs["countdown"].answer == first.outputs["plan"].answer
    assert second.outputs["sudoku"].answer == first.outputs["sudoku"].answer


def _space(budget=None) -> SearchSpace:
    opts = {
        "plan": [StageOption(model="small", budget_tokens=b) for b in (64, 128)]
        + [StageOption(model="big", strategy="sequential", budget_tokens=b) for b in (64, 128)],
        "solve": [StageOption(model="small", budget_tokens=b) for b in (64, 128, 256)],
    }
    return SearchSpace(opts, ["plan", "solve"], lambda s, o: o.budget_tokens * (2 if o.model == "big" else 1) / 64,
                       budget)


def test_default_allocation_is_one_pass_of_the_largest_model():
    d = _default_allocation(PLAN_SOLVE, _space())
    assert d.stages["plan"] == StageOption(model="big", strategy="sequential", budget_tokens=128)
    assert d.stages["solve"] == StageOption(model="small", params={"n": 1}, budget_tokens=256)


def _table() -> ReplayTable:
    space = _space()
    table = ReplayTable("t", "plan-solve", space=space)
    for a in space:
        p, s = a.stages["plan"], a.stages["solve"]
        plan_q = {64: 0.5, 128: 0.6}[p.budget_tokens] + (0.2 if p.model == "big" else 0.0)
        solve_q = {64: 0.3, 128: 0.5, 256: 0.55}[s.budget_tokens] + 0.3 * plan_q
        table.add_trial(a, TrialResult(score=(plan_q + solve_q) / 2, stage_scores={"plan": plan_q, "solve": solve_q}))
    return table


def test_marginal_weights_follow_the_next_budget_up():
    table = _table()
    pick = Allocation(stages={"plan": StageOption(model="small", budget_tokens=64),
                              "solve": StageOption(model="small", budget_tokens=128)})
    w = _marginal_weights(table, pick)
    # plan 64 -> 128: +0.1 plan, +0.03 solve, /2 for the mean, over 64 tokens.
    assert abs(w["plan"] - (0.1 + 0.03) / 2 / 64) < 1e-9
    assert abs(w["solve"] - 0.05 / 2 / 128) < 1e-9
    top = pick.with_stage("solve", StageOption(model="small", budget_tokens=256))
    assert _marginal_weights(table, top)["solve"] == 0.0  # no budget above the top


def test_regularities_read_models_budgets_and_interaction():
    r = regularities(_table())
    assert r["models"]["plan"]["big"] > r["models"]["plan"]["small"]
    curve = r["budget_curves"]["solve"]["small/best_of_n()"]
    assert list(curve) == [64, 128, 256] and curve[128] - curve[64] > curve[256] - curve[128]
    inter = r["interdependence"]["small/best_of_n()@128"]
    assert inter["big/sequential()@128"] > inter["small/best_of_n()@64"]


def test_bench_allocation_bad_table_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"format": "nope"}) + "\n")
    for table, needle in ((tmp_path / "missing.jsonl", "no such file"), (bad, "bad.jsonl")):
        with pytest.raises(SystemExit) as exc:
            main(["bench", "allocation", "--table", str(table), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and needle in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1


def test_solve_with_a_graph_checks_its_arguments_and_leaves_strategy_params_alone(orc, monkeypatch):
    from ttc.backends.errors import BadInputError
    from ttc.core.budget import Budget

    problem = make_problems(1, seed=3, split="test")[0]
    with pytest.raises(BadInputError, match="reallocation policy"):
        orc.solve(PLAN_SOLVE, problem, allocation=CHEAP, policy="carry-weighted")
    with pytest.raises(BadInputError, match="unexpected"):
        orc.solve(PLAN_SOLVE, problem, allocation=CHEAP, model="countdown-direct")
    with pytest.raises(BadInputError, match="JSON object"):
        orc.solve(PLAN_SOLVE, "[1]", allocation=CHEAP)
    result = orc.solve(PLAN_SOLVE, problem, allocation=CHEAP, budget=Budget(tokens=200))
    assert result.budget_tokens == 200 and result.tokens <= 200
    # A task's strategy still gets its own "policy" parameter (auto's calibrated policy).
    seen = {}
    monkeypatch.setattr(type(orc), "_run_strategy",
                        lambda self, tracer, task, spec, pool, prob, budget, params, **kw: seen.update(params) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        orc.solve("countdown", problem["countdown"], strategy="auto", policy={"bins": []})
    assert seen == {"policy": {"bins": []}}
