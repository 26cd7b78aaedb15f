"""ttc.core.metrics: pass@k, solve rate within L tokens, 95% intervals; and the model-card
numbers built on them. Pinned values were computed with the code each function replaces
(tasks/evaluate.py, orchestrator/bench/common.py, orchestrator/bench/backtrack.py)."""

from __future__ import annotations

import math

import pytest

from ttc.backends.scripted import ScriptedBackend
from ttc.core.metrics import (
    bootstrap_ci95,
    mean_pass_at_k,
    normal_ci95,
    pass_at_k,
    pass_at_k_curve,
    pass_at_k_per_problem,
    rate_ci95,
    solve_rate_curve,
    solved_within,
    wilson_ci95,
)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(16, 4, 4) == pytest.approx(1 - math.comb(12, 4) / math.comb(16, 4))
    assert pass_at_k(16, 4, 4) == 0.7280219780219781
    assert pass_at_k(16, 4, 1) == 0.25 and pass_at_k(10, 3, 2) == 0.5333333333333333
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(5, 3, 3) == 1.0 and pass_at_k(4, 4, 1) == 1.0
    with pytest.raises(ValueError, match="at least 8 samples"):
        pass_at_k(4, 1, 8)


def test_pass_at_k_curve_is_keyed_by_the_string_of_k_and_skips_k_above_n():
    correct = [0, 1, 3, 16, 7, 2, 0, 5]
    curve = pass_at_k_curve(correct, 16, (1, 4, 16, 32))
    assert list(curve) == ["1", "4", "16"]
    assert [round(v, 4) for v in curve.values()] == [0.2656, 0.5071, 0.75]
    assert curve["4"] == mean_pass_at_k(correct, 16, 4) == sum(pass_at_k_per_problem(correct, 16, 4)) / 8
    with pytest.raises(ValueError):
        mean_pass_at_k([], 16, 1)


def test_wilson_interval_pins_and_edges():
    assert wilson_ci95(1, 4) == pytest.approx([0.0455873, 0.6993582], abs=1e-7)
    assert wilson_ci95(7, 20) == [0.18119182410108206, 0.5671457233147638]
    lo, hi = wilson_ci95(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775328, abs=1e-7)
    assert wilson_ci95(10, 10)[0] == pytest.approx(0.7224672, abs=1e-7)
    assert wilson_ci95(0, 0) == [0.0, 1.0]


def test_normal_interval_matches_the_published_card_formula():
    correct = [0, 1, 3, 16, 7, 2, 0, 5]
    pinned = {1: [0.0344, 0.4968], 4: [0.2307, 0.7834], 16: [0.4292, 1.0]}
    for k, interval in pinned.items():
        assert [round(x, 4) for x in normal_ci95(pass_at_k_per_problem(correct, 16, k))] == interval
    assert normal_ci95([0.0, 1.0, 1.0, 1.0]) == pytest.approx([0.26, 1.0])
    assert [round(x, 4) for x in normal_ci95([0.25, 0.5, 1.0, 0.0, 0.75])] == [0.1535, 0.8465]
    # One value says nothing about the spread.
    assert normal_ci95([0.5]) == [0.0, 1.0] and normal_ci95([]) == [0.0, 1.0]


def test_rate_interval_is_wilson_for_outcomes_and_normal_for_fractions():
    assert rate_ci95([1.0, 0.0, 0.0, 0.0]) == wilson_ci95(1, 4)
    assert rate_ci95([0.25, 0.5, 1.0, 0.0, 0.75]) == normal_ci95([0.25, 0.5, 1.0, 0.0, 0.75])
    assert rate_ci95([]) == [0.0, 1.0]


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.0, 0.25, 1.0, 1.0, 0.5, 0.0, 0.75, 1.0, 0.0, 0.5] * 4
    a = bootstrap_ci95(values, seed=3)
    assert a == bootstrap_ci95(values, seed=3) and a != bootstrap_ci95(values, seed=4)
    mean = sum(values) / len(values)
    assert 0.0 <= a[0] < mean < a[1] <= 1.0
    wide = bootstrap_ci95(values[:10], seed=3)
    assert wide[1] - wide[0] > a[1] - a[0]
    assert bootstrap_ci95([], seed=0) == [0.0, 1.0]


def test_solved_within_reads_one_or_several_samples_per_problem():
    one = [10, None, 300, 256]
    assert solved_within(one, 256) == [1.0, 0.0, 0.0, 1.0]
    assert solve_rate_curve(one, [64, 256, 512]) == {"64": 0.25, "256": 0.5, "512": 0.75}
    several = [[10, None], [None, None], [300, 100, None, 50]]
    assert solved_within(several, 128) == [0.5, 0.0, 0.5]
    assert solve_rate_curve(several, [1000]) == {"1000": pytest.approx((0.5 + 0.0 + 0.75) / 3)}
    with pytest.raises(ValueError):
        solve_rate_curve([], [64])


class _ParityVerifier:
    """Correct when the answer is "even" for an even ``x`` (a stand-in exact checker)."""

    def verify(self, problem, text, ctx=None):
        from ttc.core.types import Verdict

        ok = text == ("even" if problem["x"] % 2 == 0 else "odd")
        return Verdict(correct=ok, score=float(ok), reason="", answer=text)


def test_sampled_card_reports_pass_at_k_majority_and_greedy_from_the_metrics():
    from ttc.tasks.training.measure import sampled_card

    problems = [{"x": 0}, {"x": 1}, {"x": 2}]
    # Samples per problem: x=0 gets 1 of 4 right, x=1 gets 3 of 4, x=2 none; greedy (i = 0
    # at T = 0) answers "even" everywhere.
    script = {"0": ["even", "odd", "odd", "odd"], "1": ["even", "odd", "odd", "odd"], "2": ["odd"] * 4}

    def handler(prompt, i, params):
        return script[prompt][i] if params.temperature > 0 else "even"

    card = sampled_card(ScriptedBackend(handler), _ParityVerifier(), problems, ["0", "1", "2"], n=4, ks=(1, 2, 8),
                        temperature=0.7, seed=0, max_tokens=8, stop=(), greedy=True,
                        vote_key=lambda problem, text, verdict: text)
    correct = [1, 3, 0]
    assert card["pass_at_k"] == {k: round(v, 4) for k, v in pass_at_k_curve(correct, 4, (1, 2)).items()}
    assert card["pass_at_1"] == round(4 / 12, 4) and set(card["pass_at_k_ci95"]) == {"1", "2"}
    assert card["pass_at_1_ci95"] == [round(x, 4) for x in normal_ci95([0.25, 0.75, 0.0])]
    # Majority: "odd" wins on every problem, which is right only for x=1.
    assert card["majority_at_4"] == round(1 / 3, 4)
    assert card["pass_at_1_greedy"] == round(2 / 3, 4)


def test_solve_rate_card_rounds_the_curve_and_its_intervals():
    from ttc.tasks.training.measure import solve_rate_card

    card = solve_rate_card([10, None, 300], [64, 512])
    assert card["solve_rate_within_tokens"] == {"64": 0.3333, "512": 0.6667}
    assert card["solve_rate_ci95"]["512"] == [round(x, 4) for x in normal_ci95([1.0, 0.0, 1.0])]
