"""The built-in multi-stage pipeline, ``plan-solve``, on the shipped models.

Three stages, scored end to end on two of them:

- ``sudoku``: a 6x6 puzzle. Its options are the direct model (best-of-N) and the search-trace
  model (one backtracking trace): the search model is the better use of tokens here.
- ``plan``: a CountDown problem, solved as a plan: its answer's first step becomes a hint.
  Options: the direct model (best-of-N) or the search model (one trace).
- ``solve``: the same CountDown problem, with the plan's first step as a hint in the direct
  model's plan-conditioned format. A right first step makes it easier, a wrong one harder,
  never impossible (the verifier accepts any correct answer): the stages interact through a
  graded input, so how to split tokens between plan and solve is a real decision.

The problem is ``{"id", "countdown": {...}, "sudoku": {...}}``; the score is the mean of
``sudoku`` and ``solve`` being right.

A second pipeline, ``sudoku-countdown``, takes the same problems another way: the Sudoku and
the CountDown problem as two independent stages (no hint, so no interaction), with finer
budget grids and majority voting as a further CountDown strategy. The rule-based planner
was written against ``plan-solve``; this one is where its rules are tested on a pipeline
they were not tuned on.
"""

from __future__ import annotations

import re

from .spec import GraphSpec, StageChoice, StageSpec

__all__ = [
    "BUILTIN_GRAPHS",
    "PLAN_SOLVE",
    "SUDOKU_COUNTDOWN",
    "countdown_problem",
    "countdown_with_hint",
    "first_step",
    "make_problems",
    "sudoku_problem",
]

_STEP = re.compile(r"^\s*(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(\d+)")


def first_step(answer: str | None) -> str | None:
    """The first operation of a CountDown answer ("81-27=54"), or None."""
    if not answer:
        return None
    m = _STEP.match(answer)
    return f"{m.group(1)}{m.group(2)}{m.group(3)}={m.group(4)}" if m else None


def countdown_problem(problem: dict, upstream: dict) -> dict:
    return problem["countdown"]


def sudoku_problem(problem: dict, upstream: dict) -> dict:
    return problem["sudoku"]


def countdown_with_hint(problem: dict, upstream: dict) -> dict:
    hint = first_step((upstream.get("plan") or {}).get("answer"))
    return {**problem["countdown"], "hint": hint} if hint else dict(problem["countdown"])


PLAN_SOLVE = GraphSpec(
    name="plan-solve",
    description="Sudoku (search model wins) beside CountDown planned, then solved with the plan's first step as a hint",
    score=["sudoku", "solve"],
    stages=[
        StageSpec(name="sudoku", task="sudoku", input=sudoku_problem, options=[
            StageChoice(model="sudoku-direct", strategy="best_of_n", budgets=[128, 256, 512, 1024]),
            StageChoice(model="sudoku-search", strategy="sequential", budgets=[256, 512, 768, 1024]),
        ]),
        StageSpec(name="plan", task="countdown", input=countdown_problem, options=[
            StageChoice(model="countdown-direct", strategy="best_of_n", budgets=[96, 192, 384, 768]),
            StageChoice(model="countdown-search", strategy="sequential", budgets=[256, 512, 768, 1024]),
        ]),
        StageSpec(name="solve", task="countdown", input=countdown_with_hint, after=["plan"], options=[
            StageChoice(model="countdown-direct", strategy="best_of_n", budgets=[96, 192, 384, 768]),
        ]),
    ],
)


SUDOKU_COUNTDOWN = GraphSpec(
    name="sudoku-countdown",
    description="A Sudoku and a CountDown problem as two independent stages, on finer budget grids",
    score=["sudoku", "countdown"],
    stages=[
        StageSpec(name="sudoku", task="sudoku", input=sudoku_problem, options=[
            StageChoice(model="sudoku-direct", strategy="best_of_n", budgets=[64, 128, 256, 512, 1024]),
            StageChoice(model="sudoku-search", strategy="sequential", budgets=[256, 512, 768, 1024]),
        ]),
        StageSpec(name="countdown", task="countdown", input=countdown_problem, options=[
            StageChoice(model="countdown-direct", strategy="best_of_n", budgets=[48, 96, 192, 384, 768]),
            StageChoice(model="countdown-direct", strategy="majority_vote", budgets=[192, 384, 768]),
            StageChoice(model="countdown-search", strategy="sequential", budgets=[256, 512, 768, 1024]),
        ]),
    ],
)

BUILTIN_GRAPHS = {PLAN_SOLVE.name: PLAN_SOLVE, SUDOKU_COUNTDOWN.name: SUDOKU_COUNTDOWN}


def make_problems(n: int, seed: int = 0, split: str = "test") -> list[dict]:
    """``n`` pipeline problems: a held-out CountDown problem and a 6x6 Sudoku puzzle each.

    ``split="train"`` is the allocation search's train split, never the models' training
    data: CountDown's ``val_target`` targets and Sudoku test puzzles from other seeds
    (seed + 1000); ``"test"`` is both tasks' test split."""
    from ttc.tasks.countdown import COUNTDOWN
    from ttc.tasks.sudoku import SUDOKU

    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected train or test")
    cds = COUNTDOWN.make_problems(n, seed=seed, split="val_target" if split == "train" else "test")
    sds = SUDOKU.make_problems(n, seed=seed + (1000 if split == "train" else 0), split="test")
    return [{"id": f"ps-{split}-{seed}-{i}", "countdown": cd, "sudoku": sd} for i, (cd, sd) in enumerate(zip(cds, sds))]
