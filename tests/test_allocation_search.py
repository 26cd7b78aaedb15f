"""Allocation search (AgentTTS) on synthetic replay tables: accounting, methods, planner, tables.

The synthetic graph has 3 stages x 2 models x 4 budgets. Its regularities are those the
AgentTTS insights assume: stage ``plan`` prefers model A and ``solve`` model B at every
budget (insight 1); every stage's gain per budget doubling shrinks, and ``check``'s
reverses at the top (insight 2); a better ``plan`` closes part of ``solve``'s gap
(insight 3, the interaction term). Model B costs twice A per token; the budget filter
makes the stages compete.
"""

from __future__ import annotations

import itertools
import statistics

import pytest

from ttc.backends.errors import BadInputError
from ttc.orchestrator.graph.allocation import Allocation, SearchSpace, StageOption, TrialResult
from ttc.orchestrator.graph.replay import (
    CandidateRecord,
    ReplayMissError,
    ReplayObjective,
    ReplayTable,
    StageRecord,
    optimum_set,
)
from ttc.orchestrator.graph.search import Planner, RuleBasedPlanner, search, trials_to_optimum

STAGES = ["plan", "solve", "check"]
BUDGETS = [64, 128, 256, 512]
SIZE = {"A": 1.0, "B": 2.0}
QUALITY = {  # stage -> model -> quality at each budget
    "plan": {"A": [0.60, 0.75, 0.83, 0.84], "B": [0.50, 0.62, 0.70, 0.72]},
    "solve": {"A": [0.45, 0.58, 0.66, 0.68], "B": [0.55, 0.72, 0.82, 0.86]},
    "check": {"A": [0.80, 0.88, 0.91, 0.90], "B": [0.78, 0.85, 0.88, 0.87]},
}
N_PROBLEMS = 40
BUDGET = 20.0


def cost(stage: str, o: StageOption) -> float:
    return SIZE[o.model] * o.budget_tokens / 64


def make_space(budget: float | None = BUDGET, budgets=BUDGETS) -> SearchSpace:
    opts = {s: [StageOption(model=m, budget_tokens=b) for m in "AB" for b in budgets] for s in STAGES}
    return SearchSpace(opts, STAGES, cost, budget)


def quality(a: Allocation) -> float:
    q = {s: QUALITY[s][a.stages[s].model][BUDGETS.index(a.stages[s].budget_tokens)] for s in STAGES}
    solve = q["solve"] + 0.6 * (q["plan"] - 0.5) * (1 - q["solve"])  # the interaction term
    return q["plan"] * solve * q["check"]


def result(a: Allocation) -> TrialResult:
    scores = [quality(a) ** (0.5 + p / N_PROBLEMS) for p in range(N_PROBLEMS)]  # harder problems score lower
    return TrialResult(score=statistics.fmean(scores), scores=scores)


def make_table(budget: float | None = BUDGET, budgets=BUDGETS) -> ReplayTable:
    space = make_space(budget, budgets)
    table = ReplayTable("synthetic", "plan-solve-check", {"A": "d1", "B": "d2"}, space)
    for combo in itertools.product(*(space.options[s] for s in STAGES)):
        a = Allocation(stages=dict(zip(STAGES, combo)))
        table.add_trial(a, result(a))
    return table


def alloc(**stages: str) -> Allocation:
    """``alloc(plan="A@256", ...)``."""
    return Allocation(stages={s: StageOption(model=v.split("@")[0], budget_tokens=int(v.split("@")[1]))
                              for s, v in stages.items()})


class Counting:
    """An objective that fails on any infeasible or repeated evaluation."""

    def __init__(self, table: ReplayTable):
        self.table, self.calls, self.keys = table, 0, set()

    def __call__(self, a: Allocation) -> TrialResult:
        assert self.table.space.feasible(a), "an infeasible allocation was evaluated"
        assert a.key not in self.keys, "an allocation was evaluated twice"
        self.calls += 1
        self.keys.add(a.key)
        return self.table.get(a)


class Scripted:
    """A planner that proposes a fixed list of batches (the Planner protocol)."""

    def __init__(self, batches):
        self.batches, self.guidelines = list(batches), ["scripted"]

    def propose(self, history, space):
        return self.batches.pop(0) if self.batches else []


@pytest.fixture(scope="module")
def table() -> ReplayTable:
    return make_table()


def test_synthetic_table_has_the_regularities(table):
    for combo in itertools.product(*(make_space(None).options[s] for s in STAGES)):
        a = Allocation(stages=dict(zip(STAGES, combo)))
        for stage, preferred, other in (("plan", "A", "B"), ("solve", "B", "A")):
            o = a.stages[stage]
            if o.model == other:  # swapping to the preferred model at the same budget always helps
                assert quality(a.with_stage(stage, StageOption(model=preferred, budget_tokens=o.budget_tokens))) \
                    > quality(a)
    for stage in STAGES:
        for m in "AB":
            q = QUALITY[stage][m]
            gains = [y - x for x, y in itertools.pairwise(q)]
            assert all(g2 < g1 for g1, g2 in itertools.pairwise(gains))  # diminishing returns
    base = alloc(plan="A@128", solve="B@128", check="A@256")
    gain_low = quality(base.with_stage("solve", StageOption(model="B", budget_tokens=256))) - quality(base)
    rich = base.with_stage("plan", StageOption(model="A", budget_tokens=512))
    gain_rich = (quality(rich.with_stage("solve", StageOption(model="B", budget_tokens=256))) - quality(rich)) \
        / quality(rich)
    assert gain_rich < gain_low / quality(base)  # a better plan leaves solve less to gain
    assert len(optimum_set(table)) == 1


def test_distinct_trials_and_proposal_cap(table):
    a = alloc(plan="A@256", solve="B@128", check="A@256")
    b = alloc(plan="A@128", solve="B@128", check="A@256")
    obj = Counting(table)
    found = search(table.space, obj, method="planner", planner=Scripted([[a, a, b], [a]] + [[b]] * 50),
                   max_trials=10, max_proposals=12)
    assert (found.trials, obj.calls, found.proposals, found.stopped) == (2, 2, 12, "max_proposals")
    assert [t.allocation.key for t in found.history] == [a.key, b.key]
    assert found.guidelines == ["scripted"]
    default = search(table.space, Counting(table), method="planner", planner=Scripted([[a]] * 100), max_trials=3)
    assert (default.trials, default.proposals) == (1, 12)  # the default cap: 4 x max_trials
    for method in ("planner", "random", "grid", "tpe"):
        obj = Counting(table)
        seen = []
        found = search(table.space, obj, method=method, max_trials=15, seed=3, on_trial=seen.append)
        assert found.trials == obj.calls == len(found.history) == len(seen) == 15 == len(found.curve)
        assert found.stopped == "max_trials" and found.proposals >= found.trials
        assert [t.index for t in found.history] == list(range(1, 16))
        assert found.curve == [max(t.score for t in found.history[:i]) for i in range(1, 16)]
        assert found.best_score == found.curve[-1] and found.best.key == found.best_keys[-1]


def test_infeasible_and_foreign_proposals_are_counted_never_evaluated(table):
    over = alloc(plan="B@512", solve="B@512", check="B@512")
    foreign = alloc(plan="A@1000", solve="B@128", check="A@256")
    partial = alloc(plan="A@256", solve="B@128")
    ok = alloc(plan="A@256", solve="B@128", check="A@256")
    assert not table.space.feasible(over)
    obj = Counting(table)
    found = search(table.space, obj, method="planner", planner=Scripted([[over, foreign, partial, ok]]))
    assert (found.trials, found.proposals, found.infeasible, obj.calls) == (1, 4, 3, 1)
    assert found.best == ok and found.stopped == "exhausted"
    # tpe draws from the whole grid: its infeasible draws are pruned, never evaluated
    found = search(table.space, Counting(table), method="tpe", max_trials=40, seed=1)
    assert found.infeasible > 0 and found.trials == 40


def test_each_method_finds_the_optimum_on_a_small_table():
    small = make_table(budget=9.0, budgets=[64, 128, 256])
    n, best = small.space.size(), optimum_set(small)
    assert 20 < n < 6 ** 3
    for method in ("planner", "random", "grid", "tpe"):
        found = search(small.space, Counting(small), method=method, max_trials=n, seed=5,
                       max_proposals=50 * n)
        assert found.best.key in best, method
        assert found.trials == n and found.stopped == "exhausted"  # and every method covers it


def test_random_and_grid_cover_the_space_without_repeats(table):
    feasible = {a.key for a in table.space}
    for method in ("random", "grid"):
        found = search(table.space, Counting(table), method=method, max_trials=10_000, seed=2)
        keys = [t.allocation.key for t in found.history]
        assert len(keys) == len(set(keys)) == found.proposals == len(feasible)
        assert set(keys) == feasible and found.stopped == "exhausted" and found.infeasible == 0


def test_seeds_reproduce(table):
    def run(method, seed):
        return [t.allocation.key for t in search(table.space, ReplayObjective(table), method=method,
                                                  max_trials=20, seed=seed).history]

    for method in ("random", "grid", "tpe"):
        assert run(method, 7) == run(method, 7)
        assert run(method, 7) != run(method, 8)
    assert run("random", 7) != run("grid", 7)
    assert run("planner", 1) == run("planner", 2)  # the rules use no randomness


def test_planner_reaches_the_optimum_fast_and_beats_random(table):
    best = optimum_set(table)
    found = search(table.space, ReplayObjective(table), method="planner", max_trials=50)
    planner_trials = trials_to_optimum(found.best_keys, best, 50)
    assert planner_trials <= 10
    random_trials = [trials_to_optimum(search(table.space, ReplayObjective(table), method="random",
                                              max_trials=50, seed=s).best_keys, best, 50) for s in range(10)]
    assert planner_trials < statistics.median(random_trials)
    text = "\n".join(found.guidelines)
    assert "stage plan prefers A" in text and "stage solve prefers B" in text
    assert "insight 2" in text and "insight 3" in text
    # start-up (insight 1): one trial per stage and model, the other stages held
    first = [t.allocation for t in found.history[:4]]
    assert [a.stages["plan"].model for a in first] == ["A", "B", "A", "A"]
    assert [a.stages["solve"].model for a in first] == ["A", "A", "B", "B"]
    assert first[3].stages["check"].model == "B"
    # AgentTTS start budgets: each stage's equal cost share, so A gets twice B's tokens
    assert first[0].stages["plan"].budget_tokens == 2 * first[1].stages["plan"].budget_tokens


def test_planner_walks_budgets_up_until_returns_vanish():
    table = make_table(budget=None)
    found = search(table.space, ReplayObjective(table), method="planner", max_trials=30)
    text = "\n".join(found.guidelines)
    assert "stage plan 128 -> 256 tokens gains" in text and "returns vanish at 256" in text
    converged = int(text.split("rules converged after ")[1].split()[0])
    assert converged < found.trials == 30  # exploration goes on after the rules converge
    assert trials_to_optimum(found.best_keys, optimum_set(table), 30) <= 12


def test_planner_recovers_when_its_start_allocation_is_over_budget():
    opts = {"plan": [StageOption(model="A", budget_tokens=512)],
            "solve": [StageOption(model=m, budget_tokens=b) for m in "AB" for b in BUDGETS],
            "check": [StageOption(model="A", budget_tokens=b) for b in BUDGETS]}
    space = SearchSpace(opts, STAGES, cost, 10.0)
    start = alloc(plan="A@512", solve="A@128", check="A@128")  # each stage's equal share: 8 + 2 + 2 > 10
    assert not space.feasible(start)
    table = ReplayTable("tight", "g", space=space)
    for a in space:
        table.add_trial(a, result(a))
    found = search(space, Counting(table), method="planner", max_trials=len(table))
    assert found.trials == len(table) and found.best.key in optimum_set(table)
    assert "no arm of stage plan fits" in "\n".join(found.guidelines)


def test_planner_protocol_accepts_the_rule_based_planner():
    assert isinstance(RuleBasedPlanner(), Planner) and isinstance(Scripted([]), Planner)


def test_bad_method_and_caps_are_bad_input(table):
    for kwargs in ({"method": "bayes"}, {"method": "grid", "max_trials": 0},
                   {"method": "grid", "max_proposals": 0}):
        with pytest.raises(BadInputError):
            search(table.space, ReplayObjective(table), **kwargs)


def test_table_file_round_trip(tmp_path, table):
    table.add_stage(StageRecord(stage="plan", model="A", strategy="best_of_n", input_key="p1", seed=0,
                                budget_tokens=512, prompt_tokens=20,
                                candidates=[CandidateRecord(answer=i, correct=i == 2, tokens=100) for i in range(5)]))
    path = tmp_path / "t.jsonl"
    table.write(path)
    back = ReplayTable.read(path)
    assert (back.name, back.graph, back.checkpoint_digests) == (table.name, table.graph, table.checkpoint_digests)
    assert [(a.key, r) for a, r in back.trials()] == [(a.key, r) for a, r in table.trials()]
    assert back.space.order == STAGES and back.space.budget == BUDGET
    assert [a.key for a in back.space] == [a.key for a in table.space]
    a = alloc(plan="B@512", solve="A@64", check="B@128")
    assert back.space.cost(a) == table.space.cost(a) == 16 + 1 + 4
    assert list(back.stage_records()) == list(table.stage_records())
    back.check("plan-solve-check", {"A": "d1", "B": "d2"})
    with pytest.raises(BadInputError, match="other checkpoints of B"):
        back.check("plan-solve-check", {"A": "d1", "B": "changed"})
    with pytest.raises(BadInputError, match="not 'other'"):
        back.check("other", {"A": "d1", "B": "d2"})
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + ['{"kind": "trial", "allocation": 3}']) + "\n")
    with pytest.raises(BadInputError, match="line 4"):
        ReplayTable.read(path)
    path.write_text('{"format": "other/9"}\n')
    with pytest.raises(BadInputError, match="line 1"):
        ReplayTable.read(path)
    with pytest.raises(BadInputError):
        ReplayTable.read(tmp_path / "missing.jsonl")


def test_stage_records_serve_smaller_budgets_from_their_prefix():
    t = ReplayTable("s", "g")
    cands = [CandidateRecord(answer=i, correct=i == 3, tokens=100) for i in range(6)]
    t.add_stage(StageRecord(stage="solve", model="A", strategy="best_of_n", input_key="p1", seed=0,
                            budget_tokens=640, prompt_tokens=30, candidates=cands))
    opt = StageOption(model="A", budget_tokens=330)
    assert [c.answer for c in t.stage("solve", opt, "p1")] == [0, 1, 2]  # 30 + 3 x 100 fits 330
    assert t.stage("solve", opt.model_copy(update={"budget_tokens": 640}), "p1") == cands
    assert t.stage("solve", opt.model_copy(update={"budget_tokens": 1000}), "p1") is None  # never drawn
    assert t.stage("solve", opt, "p2") is None and t.stage("solve", opt, "p1", seed=1) is None
    with_n = StageOption(model="A", params={"n": 4}, budget_tokens=640)
    assert [c.answer for c in t.stage("solve", with_n, "p1")] == [0, 1, 2, 3]
    assert t.stage("solve", with_n.model_copy(update={"params": {"n": 7}}), "p1") is None
    # a smaller record covered by the larger one adds nothing; a non-prefix one serves only itself
    t.add_stage(StageRecord(stage="solve", model="A", strategy="best_of_n", input_key="p1", seed=0,
                            budget_tokens=230, prompt_tokens=30, candidates=cands[:2]))
    assert len(list(t.stage_records())) == 1
    t.add_stage(StageRecord(stage="plan", model="A", strategy="tree", input_key="p1", budget_tokens=500,
                            prefix_ok=False, candidates=cands[:1]))
    assert t.stage("plan", StageOption(model="A", strategy="tree", budget_tokens=500), "p1") == cands[:1]
    assert t.stage("plan", StageOption(model="A", strategy="tree", budget_tokens=400), "p1") is None


def test_replay_objective_falls_back_on_a_miss(table):
    part = ReplayTable("part", "plan-solve-check", space=table.space)
    a, b = list(table.space)[:2]
    part.add_trial(a, table.get(a))
    with pytest.raises(ReplayMissError, match="holds no trial") as exc:
        ReplayObjective(part)(b)
    assert isinstance(exc.value, BadInputError)
    called = []

    def fallback(x):
        called.append(x.key)
        return table.get(x)

    obj = ReplayObjective(part, fallback=fallback)
    assert obj(a) == table.get(a) and obj(b) == table.get(b) and obj(b) == table.get(b)
    assert called == [b.key] and (obj.hits, obj.misses) == (2, 1) and b in part
    no_record = ReplayObjective(ReplayTable("e", "g"), fallback=fallback, record=False)
    no_record(a), no_record(a)
    assert no_record.misses == 2


def test_optimum_set_uses_paired_standard_errors():
    t = ReplayTable("o", "g")
    best = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3]
    shifted = [x - 0.02 for x in best]  # loses by 0.02 on every problem: paired SE 0
    noisy = [x + d for x, d in zip(best, [0.05, -0.06, 0.04, -0.05, 0.03, -0.03])]  # mean 0.003 lower, paired SE 0.019
    far = [x - 0.5 for x in best]
    rows = {"A@64": best, "A@128": shifted, "A@256": noisy, "A@512": far}
    for k, scores in rows.items():
        t.add_trial(alloc(plan=k), TrialResult(score=statistics.fmean(scores), scores=scores))
    key = {k: alloc(plan=k).key for k in rows}
    assert optimum_set(t) == {key["A@64"], key["A@256"]}
    assert optimum_set(t, paired_se=False) == {key["A@64"], key["A@128"], key["A@256"]}
    curve = [key["A@512"], key["A@512"], key["A@256"], key["A@64"]]
    assert trials_to_optimum(curve, optimum_set(t), 50) == 3
    assert trials_to_optimum(curve[:2], optimum_set(t), 50) == 50
    t.add_trial(alloc(plan="B@64"), TrialResult(score=0.1, scores=[0.1]))
    with pytest.raises(BadInputError, match="cannot pair"):
        optimum_set(t)
    with pytest.raises(BadInputError):
        optimum_set(ReplayTable("empty", "g"))


def test_planner_gives_an_arm_that_solved_nothing_one_rung_more_before_comparing():
    # Stage "a": a direct arm x, and a search arm y whose trace does not fit 128 tokens
    # (stage score 0) but wins at 256. Compared at the start budget alone, x would win.
    opts = {"a": [StageOption(model="x", budget_tokens=b) for b in (64, 128)]
            + [StageOption(model="y", strategy="sequential", budget_tokens=b) for b in (128, 256)],
            "b": [StageOption(model="z", budget_tokens=b) for b in (64, 128)]}
    space = SearchSpace(opts, ["a", "b"], lambda s, o: o.budget_tokens / 64, 6.0)
    a_score = {("x", 64): 0.3, ("x", 128): 0.4, ("y", 128): 0.0, ("y", 256): 0.9}
    table = ReplayTable("viability", "toy", space=space)
    for alloc in space:
        sa = a_score[(alloc.stages["a"].model, alloc.stages["a"].budget_tokens)]
        sb = {64: 0.5, 128: 0.6}[alloc.stages["b"].budget_tokens]
        table.add_trial(alloc, TrialResult(score=(sa + sb) / 2, stage_scores={"a": sa, "b": sb}))
    found = search(space, ReplayObjective(table), method="planner", max_trials=4)
    assert found.best.stages["a"] == StageOption(model="y", strategy="sequential", budget_tokens=256)
    assert any("solved nothing" in g for g in found.guidelines)
