"""Allocation search (AgentTTS): which model and budget each stage of a graph gets.

``search`` evaluates allocations with an objective (a graph run on a train split, or a
``ReplayObjective`` serving recorded trials) and keeps the best. Four methods share one
accounting, so they compare trial for trial:

- a *trial* is one distinct allocation evaluated; proposing an allocation seen before
  costs no trial (its earlier score is reused) but counts as a *proposal*;
- an allocation over the space's budget, or outside the space, is filtered before
  evaluation: never evaluated, counted as a proposal;
- the search stops at ``max_trials`` trials, at ``max_proposals`` proposals (default
  4 x ``max_trials``, so a method that keeps re-proposing cannot loop), or when the
  method has nothing left to propose.

Methods: ``planner`` (the built-in rule-based planner of ``planner.py``, following the
AgentTTS insights; any ``Planner`` plugs in), ``random`` (without replacement over the
feasible set), ``grid`` (the full feasible grid, shuffled per seed; random and grid are
the same distribution of orders, and differ only in their seed streams), ``tpe``
(optuna's ``TPESampler(seed=seed)``, one categorical choice per stage; an infeasible
proposal is told as pruned, a repeat is told its earlier score).

``trials_to_optimum`` and ``optimum_set`` (in ``replay.py``) measure search efficiency on
a replay table.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Sequence

from pydantic import BaseModel, Field

from ttc.backends.errors import BadInputError

from .allocation import Allocation, SearchSpace, TrialResult
from .planner import Planner, RuleBasedPlanner, Trial

__all__ = ["METHODS", "Planner", "RuleBasedPlanner", "SearchResult", "Trial", "search", "trials_to_optimum"]

METHODS = ("planner", "random", "grid", "tpe")


class SearchResult(BaseModel):
    """What a search found, and how it got there.

    Attributes:
        method, seed: How it searched.
        best: The best allocation evaluated (None if nothing was).
        best_score: Its score.
        best_result: Its full trial result.
        history: Every trial, in order (``index`` counts from 1).
        trials: Distinct allocations evaluated.
        proposals: Allocations proposed (trials + repeats + filtered ones).
        infeasible: Proposals filtered as over budget or outside the space.
        curve: Best score after each trial.
        best_keys: ``Allocation.key`` of the best allocation after each trial.
        guidelines: The planner's log of the rules it applied and why (empty for others).
        stopped: ``max_trials``, ``max_proposals`` or ``exhausted`` (nothing left to propose).
    """

    method: str
    seed: int
    best: Allocation | None = None
    best_score: float | None = None
    best_result: TrialResult | None = None
    history: list[Trial] = Field(default_factory=list)
    trials: int = 0
    proposals: int = 0
    infeasible: int = 0
    curve: list[float] = Field(default_factory=list)
    best_keys: list[str] = Field(default_factory=list)
    guidelines: list[str] = Field(default_factory=list)
    stopped: str = "exhausted"


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Runner:
    """The accounting every method shares (see the module docstring)."""

    def __init__(self, space: SearchSpace, objective: Callable[[Allocation], TrialResult], max_trials: int,
                 max_proposals: int, on_trial: Callable[[Trial], None] | None, result: SearchResult):
        self.space, self.objective, self.on_trial = space, objective, on_trial
        self.max_trials, self.max_proposals = max_trials, max_proposals
        self.r = result
        self.seen: dict[str, Trial] = {}
        self._known = {(s, _option_key(o)) for s in space.order for o in space.options[s]}

    def in_space(self, allocation: Allocation) -> bool:
        return set(allocation.stages) == set(self.space.order) and all(
            (s, _option_key(o)) in self._known for s, o in allocation.stages.items())

    def offer(self, allocation: Allocation) -> Trial | None:
        """Proposes ``allocation``: its trial (new, or the earlier one), or None if filtered.

        Raises:
            _Stop: The trial or proposal cap is reached (before this proposal counts).
        """
        r = self.r
        if r.trials >= self.max_trials:
            raise _Stop("max_trials")
        if r.proposals >= self.max_proposals:
            raise _Stop("max_proposals")
        r.proposals += 1
        earlier = self.seen.get(allocation.key)
        if earlier is not None:
            return earlier
        if not self.in_space(allocation) or not self.space.feasible(allocation):
            r.infeasible += 1
            return None
        result = self.objective(allocation)
        trial = Trial(index=r.trials + 1, allocation=allocation, score=result.score, result=result)
        self.seen[allocation.key] = trial
        r.trials += 1
        r.history.append(trial)
        if r.best_score is None or trial.score > r.best_score:
            r.best, r.best_score, r.best_result = allocation, trial.score, result
        r.curve.append(r.best_score)
        r.best_keys.append(r.best.key)
        if self.on_trial is not None:
            self.on_trial(trial)
        return trial


def _option_key(o) -> str:
    return json.dumps(o.model_dump(mode="json"), sort_keys=True)


def search(space: SearchSpace, objective: Callable[[Allocation], TrialResult], *, method: str,
           max_trials: int = 50, seed: int = 0, max_proposals: int | None = None,
           on_trial: Callable[[Trial], None] | None = None, planner: Planner | None = None) -> SearchResult:
    """Searches ``space`` for the allocation with the best ``objective`` score.

    Args:
        space: The options of every stage, their costs and the budget filter.
        objective: Scores one allocation (e.g. ``GraphObjective`` or ``ReplayObjective``).
        method: ``planner``, ``random``, ``grid`` or ``tpe`` (see the module docstring).
        max_trials: Distinct allocations to evaluate, at most.
        seed: Seeds the method's own randomness (the planner's rules are deterministic).
        max_proposals: Proposals at most (default 4 x ``max_trials``).
        on_trial: Called with each new trial after it is evaluated.
        planner: The planner for ``method="planner"`` (default: a fresh ``RuleBasedPlanner``).

    Returns:
        The best allocation, its score, the history and the accounting.

    Raises:
        BadInputError: An unknown method, or caps below 1.
    """
    if method not in METHODS:
        raise BadInputError(f"unknown search method {method!r}; valid: {', '.join(sorted(METHODS))}")
    if max_trials < 1:
        raise BadInputError(f"max_trials must be at least 1, not {max_trials}")
    max_proposals = 4 * max_trials if max_proposals is None else max_proposals
    if max_proposals < 1:
        raise BadInputError(f"max_proposals must be at least 1, not {max_proposals}")
    result = SearchResult(method=method, seed=seed)
    runner = _Runner(space, objective, max_trials, max_proposals, on_trial, result)
    if method == "planner":
        planner = planner if planner is not None else RuleBasedPlanner()
    try:
        if method in ("random", "grid"):
            _shuffled(runner, space, random.Random(f"{method}:{seed}"))
        elif method == "tpe":
            _tpe(runner, space, seed)
        else:
            _planned(runner, space, planner)
    except _Stop as stop:
        result.stopped = stop.reason
    if method == "planner":
        result.guidelines = list(getattr(planner, "guidelines", []) or [])
    return result


def _shuffled(runner: _Runner, space: SearchSpace, rng: random.Random) -> None:
    feasible = list(space)
    rng.shuffle(feasible)
    for allocation in feasible:
        runner.offer(allocation)


def _planned(runner: _Runner, space: SearchSpace, planner: Planner) -> None:
    while True:
        batch = planner.propose(list(runner.r.history), space)
        if not batch:
            return
        for allocation in batch:
            runner.offer(allocation)


def _tpe(runner: _Runner, space: SearchSpace, seed: int) -> None:
    import optuna
    from optuna.trial import TrialState

    n_feasible = space.size()
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial otherwise
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        choices = {s: list(range(len(space.options[s]))) for s in space.order}
        while len(runner.seen) < n_feasible:
            t = study.ask()
            picked = {s: space.options[s][t.suggest_categorical(s, choices[s])] for s in space.order}
            trial = runner.offer(Allocation(stages=picked))
            if trial is None:
                study.tell(t, state=TrialState.PRUNED)
            else:
                study.tell(t, trial.score)
    finally:
        optuna.logging.set_verbosity(level)


def trials_to_optimum(curve_of_allocations: Sequence[Allocation | str | None], optimum_keys: Collection[str],
                      cap: int) -> int:
    """Trials a search needed until its best-so-far allocation was optimal.

    Args:
        curve_of_allocations: The best allocation (or its key) after each trial, e.g.
            ``SearchResult.best_keys``.
        optimum_keys: Keys of the allocations that count as optimal (see ``optimum_set``).
        cap: What a search that never got there scores (usually its trial cap).

    Returns:
        The first trial number (counting from 1) whose best-so-far is in the set, else ``cap``.
    """
    wanted = set(optimum_keys)
    for i, a in enumerate(curve_of_allocations, 1):
        key = a.key if isinstance(a, Allocation) else a
        if key in wanted:
            return i
    return cap
