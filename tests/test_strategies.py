"""Control flow of the strategies, driven by a scripted backend (no model), plus one real-model run each."""

from __future__ import annotations

import pytest

from ttc.backends import BadInputError, ScriptedBackend
from ttc.orchestrator import Orchestrator
from ttc.core import Budget, Ledger
from ttc.core.contracts import SolveContext
from ttc.strategies import STRATEGIES, get_strategy
from ttc.tasks.countdown import COUNTDOWN

PROBLEM = {"id": "p", "numbers": [3, 5, 7], "target": 22}
RIGHT = "3*5=15,15+7=22."
RIGHT_OTHER = "5*3=15,7+15=22."  # the same steps in another order
WRONG_A = "3+5=8,8+7=15."
WRONG_B = "7-5=2,3*2=6."


def run(name, texts, budget=None, **params):
    backend = ScriptedBackend(texts)
    ledger = Ledger(budget)
    result = get_strategy(name)(SolveContext.of(COUNTDOWN, PROBLEM, backend, ledger=ledger), **params)
    return result, ledger, backend


def test_registry_lists_valid_names():
    assert {"sample", "best_of_n", "majority_vote", "weighted_vote", "sequential"} <= set(STRATEGIES)
    with pytest.raises(BadInputError, match="valid strategies: .*best_of_n"):
        get_strategy("beam_me_up")


def test_sample_verifies_one_answer():
    result, ledger, _ = run("sample", [RIGHT])
    assert result.correct is True and result.answer is not None
    assert len(result.candidates) == 1 and result.stop_reason == "done"
    assert result.tokens == ledger.spent.tokens == len(COUNTDOWN.prompt(PROBLEM)) + len(RIGHT) - 1  # "." is the stop


def test_best_of_n_stops_at_first_verified_round():
    result, _, backend = run("best_of_n", [WRONG_A, WRONG_B, WRONG_A, RIGHT, WRONG_B, WRONG_B], round_size=2, n=6)
    assert result.correct is True and result.stop_reason == "verified"
    assert len(result.candidates) == 4 and len(backend.calls) == 2
    assert [p.seed for _, p in backend.calls] == [0, 1]  # rounds differ by seed


def test_best_of_n_without_early_stop_draws_all_n_in_one_call():
    result, _, backend = run("best_of_n", [RIGHT, WRONG_A], n=6, early_stop=False)
    assert len(result.candidates) == 6 and len(backend.calls) == 1 and backend.calls[0][1].n == 6
    assert result.correct is True and result.stop_reason == "done"


def test_best_of_n_spends_the_budget_and_keeps_the_best_so_far():
    budget = Budget(tokens=200)
    result, ledger, _ = run("best_of_n", [WRONG_A], budget=budget, round_size=2)
    assert result.stop_reason == "budget" and ledger.spent.tokens <= 200
    assert result.correct is False and len(result.candidates) >= 2
    assert not ledger.overdrawn


def test_budget_too_small_for_one_sample_spends_nothing():
    result, ledger, backend = run("best_of_n", [RIGHT], budget=Budget(tokens=20))
    assert result.stop_reason == "no_budget" and result.answer is None and result.candidates == []
    assert ledger.spent.tokens == 0 and backend.calls == []


def test_majority_vote_pools_equivalent_answers_and_breaks_ties_by_order():
    # RIGHT and RIGHT_OTHER are one answer (same steps): 3 votes against WRONG_A's 2.
    # Unpooled, WRONG_A would tie with RIGHT_OTHER at 2 and win by coming first.
    result, _, _ = run("majority_vote", [WRONG_A, RIGHT, WRONG_A, RIGHT_OTHER, WRONG_B, RIGHT_OTHER], n=6)
    assert result.correct is True
    result, _, _ = run("majority_vote", [WRONG_A, RIGHT, WRONG_A, RIGHT], n=4)
    assert result.correct is False  # 2-2 tie: WRONG_A came first


def test_majority_vote_with_no_parsable_answer():
    result, _, _ = run("majority_vote", ["garbage", "???"], n=4)
    assert result.answer is None and result.correct is None and len(result.candidates) == 4


def test_weighted_vote_prefers_verified_weight_over_frequency():
    result, _, _ = run("weighted_vote", [WRONG_A, WRONG_A, WRONG_A, RIGHT], n=4)
    assert result.correct is True


def test_sequential_shrinks_the_trace_to_the_budget():
    trace = "x" * 500 + "A:" + RIGHT
    result, ledger, backend = run("sequential", [trace], budget=Budget(tokens=300))
    assert backend.calls[0][1].max_tokens == 300 - len(COUNTDOWN.prompt(PROBLEM, "search"))
    assert ledger.spent.tokens <= 300 and result.correct is False  # cut before its answer
    result, _, _ = run("sequential", [trace], max_tokens=1000)
    assert result.correct is True


def test_unknown_strategy_parameter_is_bad_input(sqlite_url):
    with Orchestrator(db=sqlite_url) as orc, pytest.raises(BadInputError, match="takes no parameter beam_width"):
        orc.solve("countdown", PROBLEM, strategy="best_of_n", model=ScriptedBackend([RIGHT]), beam_width=3)


def test_solve_records_strategy_spans_and_candidates(sqlite_url):
    with Orchestrator(db=sqlite_url) as orc:
        result = orc.solve("countdown", PROBLEM, strategy="best_of_n", model=ScriptedBackend([WRONG_A, RIGHT]),
                           round_size=1)
        detail = orc.get_run(result.trace_id)
    assert result.correct is True and len(result.candidates) == 2
    kinds = [s.kind for s in detail.spans]
    assert kinds.count("llm") == 2 and kinds.count("verifier") == 2 and kinds.count("strategy") == 1
    assert [c.correct for c in detail.candidates] == [False, True]
    assert detail.run.attributes["correct"] is True and detail.run.input_tokens > 0


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_runs_on_a_real_model(name, tiny_checkpoint):
    """A real (random-weight) transformers model under a budget: the control flow holds end to end."""
    from ttc.backends import TransformersBackend

    backend = TransformersBackend(tiny_checkpoint, device="cpu")
    ledger = Ledger(Budget(tokens=600))
    params = {"max_tokens": 24} if name != "sequential" else {"max_tokens": 200}
    if name in ("best_of_n", "majority_vote", "weighted_vote"):
        params["n"] = 4
    if name == "auto":
        from ttc.strategies.auto import MenuItem, Policy, PolicyEntry

        entry = PolicyEntry(item=MenuItem(strategy="best_of_n", params={"n": 2, "max_tokens": 24}), accuracy=0.5,
                            mean_tokens=50, n=1)
        params = {"policy": Policy(task="countdown", model="tiny", probe=2, table={"0": [entry]})}
    result = get_strategy(name)(SolveContext.of(COUNTDOWN, PROBLEM, backend, ledger=ledger), **params)
    assert ledger.spent.tokens <= 600 and result.tokens == ledger.spent.tokens
    # Random weights never write a legal CountDown step, so tree_search (which verifies
    # only complete answers) honestly ends without candidates on this model.
    assert (result.candidates or name == "tree_search") and all(c.verdict is not None for c in result.candidates)
    assert result.flops > 0 and result.paper_flops > 0 and result.eflops > result.flops
    assert result.stop_reason in ("done", "budget", "verified")


def test_auto_without_calibration_says_how_to_get_one(sqlite_url):
    with Orchestrator(db=sqlite_url) as orc, pytest.raises(BadInputError, match="ttc bench auto"):
        orc.solve("countdown", PROBLEM, strategy="auto", model=ScriptedBackend([WRONG_A]))


def test_auto_probes_then_runs_the_calibrated_choice():
    from ttc.strategies.auto import MenuItem, Policy, PolicyEntry

    bon = MenuItem(strategy="best_of_n", params={"n": 4})
    costly = MenuItem(strategy="best_of_n", params={"n": 64})
    policy = Policy(task="countdown", model="scripted", probe=2, edges=[],
                    table={"0": [PolicyEntry(item=bon, accuracy=0.3, mean_tokens=100, n=10),
                                 PolicyEntry(item=costly, accuracy=0.9, mean_tokens=10**6, n=10)]})
    # Probe (2 wrong samples), then best_of_n(n=4): the costly item does not fit the budget.
    result, ledger, backend = run("auto", [WRONG_A, WRONG_B, WRONG_A, RIGHT], budget=Budget(tokens=2000),
                                  policy=policy)
    assert result.correct is True and len(result.candidates) == 6
    assert [p.n for _, p in backend.calls] == [2, 4]
    assert backend.calls[1][1].seed != backend.calls[0][1].seed  # the inner draw is not the probe again
    assert ledger.spent.tokens <= 2000


def test_auto_stops_when_the_probe_is_verified():
    from ttc.strategies.auto import Policy

    result, _, backend = run("auto", [RIGHT], policy=Policy(task="countdown", model="scripted", probe=3))
    assert result.correct is True and result.stop_reason == "verified" and len(backend.calls) == 1


def test_auto_breaks_ties_in_a_bin_by_the_pooled_curve():
    from ttc.strategies.auto import MenuItem, Policy, PolicyEntry

    cheap, good = MenuItem(strategy="sample"), MenuItem(strategy="best_of_n", params={"n": 8})
    policy = Policy(task="countdown", model="m",
                    table={"0": [PolicyEntry(item=cheap, accuracy=0.0, mean_tokens=40, n=3),
                                 PolicyEntry(item=good, accuracy=0.0, mean_tokens=300, n=3)]},
                    overall=[PolicyEntry(item=cheap, accuracy=0.05, mean_tokens=40, n=30),
                             PolicyEntry(item=good, accuracy=0.4, mean_tokens=300, n=30)])
    assert policy.choose(0, 1000).item == good
    assert policy.choose(0, 100).item == cheap  # the better one does not fit
