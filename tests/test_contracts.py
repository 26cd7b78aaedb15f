"""The core contracts: child ledgers, judges that reserve before they call, budgeted
streams, model roles, and problems that every strategy sees (Sudoku on 4x4, 6x6, 9x9)."""

from __future__ import annotations

import pytest
from ttc.backends import BadInputError, ScriptedBackend
from ttc.backends.types import SamplingParams
from ttc.core import Budget, Ledger, Verdict
from ttc.core.contracts import ModelPool, SolveContext
from ttc.core.streaming import stream_model
from ttc.strategies import get_strategy
from ttc.tasks.countdown import COUNTDOWN
from ttc.tasks.sudoku import SUDOKU, reference_solution
from ttc.verifiers.sudoku import format_grid

PROBLEM = {"id": "p", "numbers": [3, 5, 7], "target": 22}
RIGHT = "3*5=15,15+7=22."


# ------------------------------------------------------------------ child ledgers


def test_child_charges_its_parent_and_neither_is_exceeded():
    parent = Ledger(Budget(tokens=100))
    child = parent.child(Budget(tokens=60))
    r = child.reserve(prompt_tokens=10, max_tokens=20, n=4)  # 90 asked; the child holds 60
    assert r is not None and r.tokens <= 60 and r.n == 2
    assert parent.remaining_tokens() == 100 - r.tokens  # held in the parent too
    from ttc.backends.types import Usage

    child.settle(r, Usage(prompt_tokens=10, completion_tokens=30, calls=1), samples=2)
    assert child.spent.tokens == parent.spent.tokens == 40
    assert child.remaining_tokens() == 20 and parent.remaining_tokens() == 60


def test_child_is_bounded_by_what_the_parent_has_left():
    parent = Ledger(Budget(tokens=50))
    child = parent.child()  # no limits of its own
    assert not child.unlimited
    r = child.reserve(prompt_tokens=10, max_tokens=16, n=8)
    assert r is not None and r.tokens <= 50 and r.n == 2
    child.release(r)
    assert parent.remaining_tokens() == 50 and child.remaining_tokens() == 50


def test_sibling_children_share_the_parent():
    parent = Ledger(Budget(tokens=40))
    a, b = parent.child(Budget(tokens=30)), parent.child(Budget(tokens=30))
    ra = a.reserve(prompt_tokens=0, max_tokens=30)
    assert ra is not None
    assert b.reserve(prompt_tokens=0, max_tokens=30) is None  # only 10 left upstairs
    assert b.reserve(prompt_tokens=0, max_tokens=10) is not None


def test_a_strategy_in_a_child_context_never_exceeds_the_stage_budget():
    backend = ScriptedBackend(["3+5=8,8+7=15."])
    root = SolveContext.of(COUNTDOWN, PROBLEM, backend, ledger=Ledger(Budget(tokens=1000)))
    stage = root.child(Budget(tokens=120))
    result = get_strategy("best_of_n")(stage)
    assert result.tokens <= 120 and stage.ledger.spent.tokens == root.ledger.spent.tokens == result.tokens


# ------------------------------------------------------------------ judges


class Judge:
    """A verifier that asks a model (the ``judge`` role) whether the answer is right."""

    def __init__(self):
        self.asked = 0

    def verify(self, problem, text, ctx=None):
        prompt = "You are a careful judge of arithmetic answers. " * 2 + f"Is {text!r} right? "
        call = ctx.call("judge", [prompt], SamplingParams(max_tokens=3, temperature=0.0))
        if not call.generations:
            return Verdict(correct=None, score=0.0, reason="no budget for the judge")
        self.asked += 1
        yes = call.generations[0].completions[0].text.startswith("Yes")
        return Verdict(correct=yes, score=float(yes), reason="judge", answer=text, usage=call.usage)

    def canonical(self, problem, text):
        return text.strip()


def test_judge_reserves_before_it_calls_and_is_charged_once():
    policy, judge_model = ScriptedBackend([RIGHT]), ScriptedBackend(["Yes"], name="judge")
    ctx = SolveContext(task=COUNTDOWN, problem=PROBLEM, verifier=Judge(), ledger=Ledger(Budget(tokens=2000)),
                       models=ModelPool({"policy": policy, "judge": judge_model}))
    result = get_strategy("best_of_n")(ctx, n=1)
    assert result.correct is True and len(judge_model.calls) == 1
    # Charged once: the ledger holds policy + judge, and the result's usage says the same.
    assert ctx.ledger.spent.tokens == result.tokens
    assert result.usage.calls == 2


def test_judge_that_would_overshoot_is_refused_before_it_calls():
    policy, judge_model = ScriptedBackend([RIGHT]), ScriptedBackend(["Yes"], name="judge")
    prompt_tokens = len(COUNTDOWN.prompt(PROBLEM))
    # Room for the answer (max_tokens 64) but not for the judge's ~120-token prompt afterwards.
    budget = Budget(tokens=prompt_tokens + 64 + 5)
    judge = Judge()
    ctx = SolveContext(task=COUNTDOWN, problem=PROBLEM, verifier=judge, ledger=Ledger(budget),
                       models=ModelPool({"policy": policy, "judge": judge_model}))
    result = get_strategy("sample")(ctx)
    assert judge_model.calls == [] and judge.asked == 0  # never called
    assert result.correct is None and ctx.ledger.spent.tokens <= budget.tokens and not ctx.ledger.overdrawn


# ------------------------------------------------------------------ streams


def test_budgeted_stream_is_cut_at_its_cap_and_charged_what_it_spent():
    backend = ScriptedBackend(["abcdefghijklmnopqrstuvwxyz"])
    ledger = Ledger(Budget(tokens=15))
    stream = stream_model(backend, "hello", SamplingParams(max_tokens=100), ledger)
    assert stream is not None and stream.params.max_tokens == 10  # 15 - 5 prompt tokens
    text = "".join(stream)
    assert text == "abcdefghij" and stream.generation.completions[0].finish_reason == "length"
    assert ledger.spent.tokens == 15 and ledger.remaining_tokens() == 0


def test_budgeted_stream_closed_early_charges_only_what_was_generated():
    backend = ScriptedBackend(["abcdefghijklmnopqrstuvwxyz"])
    ledger = Ledger(Budget(tokens=100))
    with stream_model(backend, "hello", SamplingParams(max_tokens=50), ledger) as stream:
        for i, _ in enumerate(stream):
            if i == 3:
                stream.close()
    assert stream.finished and stream.usage.completion_tokens == 4
    assert ledger.spent.tokens == 5 + 4 and ledger.remaining_tokens() == 91


def test_stream_refused_when_nothing_fits():
    ledger = Ledger(Budget(tokens=4))
    assert stream_model(ScriptedBackend(["x"]), "hello", SamplingParams(max_tokens=5), ledger) is None
    assert ledger.spent.tokens == 0


# ------------------------------------------------------------------ roles


def test_sequential_uses_the_search_role_and_falls_back_to_the_policy():
    policy, search = ScriptedBackend(["not a trace"]), ScriptedBackend([RIGHT], name="search")
    ctx = SolveContext.of(COUNTDOWN, PROBLEM, policy, search=search)
    assert get_strategy("sequential")(ctx).correct is True and policy.calls == [] and len(search.calls) == 1
    alone = SolveContext.of(COUNTDOWN, PROBLEM, ScriptedBackend([RIGHT]))
    assert get_strategy("sequential")(alone).correct is True


def test_a_missing_required_role_is_bad_input():
    from ttc.strategies.registry import StrategySpec

    spec = StrategySpec(name="needs_judge", fn=lambda ctx: None, roles={"policy": "required", "judge": "required"})
    with pytest.raises(BadInputError, match="--role judge=MODEL"):
        spec.check_models(ModelPool({"policy": ScriptedBackend(["x"])}))
    with pytest.raises(BadInputError, match="no model for role 'judge'"):
        ModelPool({"policy": ScriptedBackend(["x"])})["judge"]


# ------------------------------------------------------------------ problems seen by everything


def _puzzle(size: int) -> dict:
    return SUDOKU.make_problems(1, seed=3, split="test", size=size)[0]


@pytest.mark.parametrize("size", [4, 6, 9])
@pytest.mark.parametrize("name", ["sample", "best_of_n", "majority_vote", "weighted_vote", "tree_search"])
def test_every_strategy_returns_the_right_grid_on_every_board(size, name):
    problem = _puzzle(size)
    solution = format_grid(reference_solution(problem), size)
    rows = solution.split("/")

    def handler(prompt, i, params):
        if name != "tree_search":
            return solution
        # Step-level search: the next row after the rows already in the prompt.
        done = prompt.split(":", 1)[1].count("/") if ":" in prompt else 0
        return rows[done]

    backend = ScriptedBackend(handler)
    ctx = SolveContext.of(SUDOKU, problem, backend)
    result = get_strategy(name)(ctx)
    assert result.correct is True and result.answer == solution
    assert all(p.max_tokens >= size * (size + 1) for _, p in backend.calls) or name == "tree_search"


def test_sudoku_limits_and_canonical_forms_see_the_board():
    p9 = _puzzle(9)
    assert SUDOKU.max_tokens(p9, "direct") >= 90
    solution = format_grid(reference_solution(p9), 9)
    assert SUDOKU.verifier.canonical(p9, solution) == solution
    assert SUDOKU.verifier.canonical(_puzzle(4), solution) is None  # not a 4x4 answer
