"""Math answers: extraction, equivalence through math-verify, voting keys, our own timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from ttc.core.contracts import Verifier
from ttc.verifiers import math as mathv
from ttc.verifiers.math import (
    MathVerifier,
    canonical_answer,
    equivalent,
    extract_answer,
)

EQUIVALENT = [
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{3}{4}", "3/4"),
    ("\\dfrac{6}{8}", "\\frac{3}{4}"),
    ("-\\frac12", "-0.5"),
    ("2", "2.0"),
    ("3.0", "3"),
    ("1,000", "1000"),
    ("10^{3}", "1000"),
    ("\\frac{1}{3}", "0.333333"),
    ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\pi", "3.14159265"),
    ("50\\%", "0.5"),
    ("x+1", "1+x"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[1,2)", "[1, 2)"),
    ("(0,\\infty)", "(0, \\infty)"),
]

NOT_EQUIVALENT = [
    ("1/2", "0.51"),
    ("\\frac{1}{3}", "0.3"),
    ("2", "-2"),
    ("3", "4"),
    ("x+1", "x-1"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("[1,2]", "(1,2)"),
    ("[1,2)", "(1,2]"),
    ("(1,2)", "(2,1)"),
    ("\\sqrt{2}", "1.41"),
]


@pytest.mark.parametrize("gold, answer", EQUIVALENT)
def test_equivalent_pairs(gold, answer):
    assert equivalent(gold, answer) is True


@pytest.mark.parametrize("gold, answer", NOT_EQUIVALENT)
def test_non_equivalent_pairs(gold, answer):
    assert equivalent(gold, answer) is False


@pytest.mark.parametrize("text, expected", [
    ("So the result is \\boxed{\\frac{\\sqrt{3}}{2}}.", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("first \\boxed{1}, then \\boxed{2}", "2"),
    ("\\fbox{7} is it", "7"),
    ("Answer: 42", "42"),
    ("**Answer:** 7", "7"),
    ("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("I think 3 then 5 and finally 7.5", "7.5"),
    ("we have 1,000 apples", "1000"),
    ("x = -3/4", "-3/4"),
    ("\\boxed{1 and then 2", "2"),  # unclosed box: falls back to the last number
    ("no digits at all", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_verifier_contract_and_verdicts():
    v = MathVerifier()
    assert isinstance(v, Verifier)
    ok = v.verify({"id": "p", "answer": "\\frac{1}{2}"}, "Halving gives \\boxed{0.5}.")
    assert ok.correct is True and ok.score == 1.0 and ok.answer == "0.5"
    wrong = v.verify({"id": "p", "answer": "1/2"}, "The answer is 0.51")
    assert wrong.correct is False and wrong.score == 0.0 and "differs" in wrong.reason
    none = v.verify({"id": "p", "answer": "1/2"}, "I do not know")
    assert none.correct is False and none.answer is None
    no_gold = v.verify({"id": "p"}, "\\boxed{3}")
    assert no_gold.correct is None and no_gold.answer == "3"
    assert v.verify({"id": "p", "answer": 3}, "so 3").correct is True  # a numeric reference


def test_canonical_keys_pool_equivalent_answers():
    v = MathVerifier()
    problem = {"id": "p", "answer": "1/2"}
    keys = {v.canonical(problem, t) for t in ("\\boxed{1/2}", "Answer: 0.5", "\\boxed{\\frac{1}{2}}", "so 0.50")}
    assert len(keys) == 1
    assert v.canonical(problem, "\\boxed{\\{2,1\\}}") == v.canonical(problem, "\\boxed{\\{1,2\\}}")
    assert v.canonical(problem, "\\boxed{x+1}") == v.canonical(problem, "\\boxed{1+x}")
    assert v.canonical(problem, "\\boxed{1/3}") != v.canonical(problem, "\\boxed{0.3}")
    assert canonical_answer("1000001") != canonical_answer("1000000")
    assert v.canonical(problem, "nothing here") is None


def test_works_from_a_worker_thread():
    """math-verify's default timeouts use signal.alarm, which raises outside the main
    thread; ours do not."""
    v = MathVerifier()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(v.verify, {"id": str(i), "answer": gold}, f"\\boxed{{{ans}}}")
                   for i, (gold, ans) in enumerate(EQUIVALENT[:6] + NOT_EQUIVALENT[:4])]
        results = [f.result(timeout=60).correct for f in futures]
    assert results == [True] * 6 + [False] * 4
    assert threading.current_thread() is threading.main_thread()


def test_our_timeout_bounds_a_stuck_comparison(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(mathv, "_same", lambda gold, answer: release.wait(30) and True)
    start = time.monotonic()
    verdict = MathVerifier(timeout=0.3).verify({"id": "p", "answer": "1"}, "\\boxed{1}")
    assert time.monotonic() - start < 5
    assert verdict.correct is None and "timed out" in verdict.reason
    assert mathv._stuck == 1
    release.set()
    deadline = time.monotonic() + 5
    while mathv._stuck and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mathv._stuck == 0


def test_too_many_stuck_comparisons_are_refused_not_queued(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(mathv, "_same", lambda gold, answer: release.wait(30) and True)
    monkeypatch.setattr(mathv, "MAX_STUCK", 2)
    try:
        for _ in range(2):
            assert equivalent("1", "1", timeout=0.1) is None
        start = time.monotonic()
        assert equivalent("1", "1", timeout=5) is None  # refused at once
        assert time.monotonic() - start < 1
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while mathv._stuck and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mathv._stuck == 0
