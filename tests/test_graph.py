"""Task graphs: declaration (Python and file), compilation to LangGraph, budgets across
stages, run-time reallocation, resume after an interruption; driven by plain callables and
scripted models, plus one real-model run of the built-in pipeline."""

from __future__ import annotations

import json

import pytest

from ttc.backends import BadInputError, ScriptedBackend
from ttc.orchestrator import Orchestrator
from ttc.orchestrator.graph import (
    Allocation,
    GraphSpec,
    StageChoice,
    StageOption,
    StageSpec,
    load_graph,
    resume_graph,
    solve_graph,
)

CALLS: list[str] = []
FAIL_ONCE: dict[str, bool] = {}
CD = {"numbers": [3, 5, 7], "target": 22}
RIGHT = "3*5=15,15+7=22."


def first(problem, upstream):
    return problem["cd"]


def with_hint(problem, upstream):
    CALLS.append("hint")
    return {**problem["cd"], "hint": "3*5=15"}


def report(ctx, inputs):
    """A user-callable stage: reads upstream answers; fails once when asked to."""
    CALLS.append("report")
    if FAIL_ONCE.pop("report", False):
        raise RuntimeError("report failed")
    return f"plan={inputs['plan']} solve={inputs['solve']}"


def _graph(**extra) -> GraphSpec:
    opts = [StageChoice(model="scripted-a", strategy="best_of_n", budgets=[40, 80])]
    return GraphSpec(name="toy", score=["solve"], stages=[
        StageSpec(name="plan", task="countdown", input=first, options=opts),
        StageSpec(name="solve", task="countdown", input=with_hint, after=["plan"], options=opts),
        StageSpec(name="report", run=report, after=["plan", "solve"]),
    ], **extra)


def _alloc(plan=80, solve=80) -> Allocation:
    return Allocation(stages={"plan": StageOption(model="scripted-a", budget_tokens=plan),
                              "solve": StageOption(model="scripted-a", budget_tokens=solve)})


@pytest.fixture
def orc(tmp_path):
    o = Orchestrator(db=f"sqlite:///{tmp_path / 'g.db'}")
    # Scripted models stand in for real ones: wrong twice, then right, for every stage.
    o._backends[("scripted-a", None)] = ScriptedBackend(["3+5=8,8+7=15.", "7-5=2,3*2=6.", RIGHT], name="scripted-a")
    CALLS.clear()
    FAIL_ONCE.clear()
    yield o
    o.close()


def test_graph_runs_stages_in_order_and_scores_the_sinks(orc):
    result = solve_graph(orc, _graph(), {"cd": CD}, _alloc())
    assert set(result.outputs) == {"plan", "solve", "report"}
    assert CALLS.count("report") == 1  # a stage with two parents runs once, after both
    assert result.outputs["solve"].problem["hint"] == "3*5=15"
    assert result.outputs["report"].answer.startswith("plan=")
    assert result.score == float(bool(result.outputs["solve"].correct))
    spans = orc.get_run(result.trace_id).spans
    assert [s.name for s in spans if s.kind == "stage"] == ["plan", "solve", "report"]


def test_stage_budgets_and_the_total_are_never_exceeded(orc):
    result = solve_graph(orc, _graph(), {"cd": CD}, _alloc(plan=80, solve=120))
    for name, budget in (("plan", 80), ("solve", 120)):
        assert 0 < result.outputs[name].tokens <= budget
    assert result.tokens <= 200 == result.budget_tokens
    tight = solve_graph(orc, _graph(), {"cd": CD}, _alloc(plan=40, solve=80))
    assert tight.outputs["plan"].stop_reason == "no_budget" and tight.outputs["plan"].tokens == 0


def test_carry_hands_what_a_stage_left_to_the_stages_still_to_run(orc):
    orc._backends[("scripted-a", None)] = ScriptedBackend([RIGHT], name="scripted-a")  # verified at once
    static = solve_graph(orc, _graph(), {"cd": CD}, _alloc(), policy="static")
    carry = solve_graph(orc, _graph(), {"cd": CD}, _alloc(), policy="carry")
    assert static.outputs["solve"].granted == 80
    left = 80 - carry.outputs["plan"].tokens
    assert left > 0 and carry.outputs["solve"].granted == 80 + left  # the only stage still to run
    assert carry.tokens <= carry.budget_tokens


def test_interrupted_graph_resumes_without_rerunning_finished_stages(orc):
    FAIL_ONCE["report"] = True
    with pytest.raises(RuntimeError, match="report failed"):
        solve_graph(orc, _graph(), {"cd": CD}, _alloc())
    run = orc.list_runs(kind="graph")[0]
    assert run.status == "error"
    spent_before = sum(s.input_tokens + s.output_tokens for s in orc.get_run(run.id).spans if s.kind == "llm")
    hints = CALLS.count("hint")
    result = resume_graph(orc, run.id)
    assert sorted(result.resumed_stages) == ["plan", "solve"]
    assert CALLS.count("hint") == hints and CALLS.count("report") == 2  # only the failed stage ran again
    assert result.tokens == spent_before  # the ledger was rebuilt from the store
    assert orc.get_run(run.id).run.status == "ok"


def test_graph_file_round_trip_and_bad_files(tmp_path):
    g = _graph()
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(g.model_dump(mode="json")))
    loaded = load_graph(path)
    assert loaded.order() == ["plan", "solve", "report"] and loaded.stage("report").run_fn() is report
    yaml_path = tmp_path / "toy.yaml"
    yaml_path.write_text("name: y\nstages:\n  - name: a\n    task: countdown\n    options:\n"
                         "      - {model: countdown-direct, budgets: [64]}\n")
    assert load_graph(yaml_path).default_allocation().stages["a"].budget_tokens == 64
    cyclic = {"name": "c", "stages": [{"name": "a", "run": "x:y", "after": ["b"]},
                                      {"name": "b", "run": "x:y", "after": ["a"]}]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cyclic))
    with pytest.raises(BadInputError, match="cycle"):
        load_graph(bad)
    bad.write_text("{not json")
    with pytest.raises(BadInputError, match="not valid"):
        load_graph(bad)


def test_allocation_must_cover_every_task_stage(orc):
    with pytest.raises(BadInputError, match="missing stages"):
        solve_graph(orc, _graph(), {"cd": CD}, Allocation(stages={"plan": _alloc().stages["plan"]}))


@pytest.mark.slow
def test_builtin_pipeline_on_real_models(tmp_path):
    from ttc.orchestrator.graph.builtin import PLAN_SOLVE, make_problems

    alloc = Allocation(stages={
        "sudoku": StageOption(model="sudoku-search", strategy="sequential", budget_tokens=1024),
        "plan": StageOption(model="countdown-direct", strategy="best_of_n", budget_tokens=192),
        "solve": StageOption(model="countdown-direct", strategy="best_of_n", budget_tokens=192),
    })
    with Orchestrator(db=f"sqlite:///{tmp_path / 'p.db'}") as o:
        results = [solve_graph(o, PLAN_SOLVE, p, alloc) for p in make_problems(3, seed=0)]
    for r in results:
        assert r.tokens <= r.budget_tokens == 1408
        assert all(r.outputs[s].tokens <= alloc.stages[s].budget_tokens for s in alloc.stages)
        hint = r.outputs["solve"].problem.get("hint")
        assert hint is None or hint == r.outputs["plan"].answer.split(":")[0].split(",")[0]


def count_items(ctx, inputs):
    CALLS.append("report")
    return len(inputs["many"])


def several(problem, upstream):
    """A fan-out stage's input: one CountDown problem per item."""
    return [problem["cd"], {**problem["cd"], "target": 8}, {**problem["cd"], "target": 15}]


def test_fan_out_sends_each_item_with_a_share_of_the_stage_budget(orc):
    orc._backends[("scripted-a", None)] = ScriptedBackend([RIGHT], name="scripted-a")
    opts = [StageChoice(model="scripted-a", strategy="best_of_n", budgets=[120, 300])]
    graph = GraphSpec(name="fan", score=["many"], stages=[
        StageSpec(name="plan", task="countdown", input=first, options=opts),
        StageSpec(name="many", task="countdown", input=several, after=["plan"], options=opts, fan_out=True),
        StageSpec(name="report", run=count_items, after=["plan", "many"]),
    ])
    alloc = Allocation(stages={"plan": StageOption(model="scripted-a", budget_tokens=120),
                               "many": StageOption(model="scripted-a", budget_tokens=300)})
    result = solve_graph(orc, graph, {"cd": CD}, alloc)
    many = result.outputs["many"]
    assert len(many.answer) == 3 and [p["target"] for p in many.problem["items"]] == [22, 8, 15]
    assert many.correct is False and many.answer[0] == RIGHT.rstrip(".")  # RIGHT reaches 22 only
    assert 0 < many.tokens <= 300 and result.tokens <= result.budget_tokens
    spans = [s for s in orc.get_run(result.trace_id).spans if s.kind == "stage"]
    item_budgets = [s.attributes.get("ttc.stage.budget") for s in spans if s.name == "many"]
    assert item_budgets == [100, 100, 100]  # one Send per item, each with a third of the stage budget
    assert CALLS.count("report") == 1 and result.outputs["report"].answer == 3  # joined once, after every item
    with pytest.raises(ValueError, match="fan_out needs a task stage"):
        StageSpec(name="x", run=report, fan_out=True)
