"""Allocations: which model, strategy and token budget each stage of a task graph gets.

An allocation's cost follows AgentTTS and DESIGN.md: its worst-case FLOPs (every call at
``prompt + max_tokens x n``, i.e. the whole stage budget spent) divided by the FLOPs of one
pass of the largest model in the pool (128 prompt + 64 generated tokens), so the budget
filter is exact before anything runs and the unit stays comparable across model sizes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttc.backends.errors import BadInputError

__all__ = ["StageOption", "Allocation", "SearchSpace", "TrialResult"]


class StageOption(BaseModel):
    """One choice for one stage: a model, a strategy with fixed parameters, a token budget."""

    model_config = ConfigDict(frozen=True)

    model: str
    strategy: str = "best_of_n"
    params: dict[str, Any] = Field(default_factory=dict)
    budget_tokens: int = Field(ge=1)

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.model}/{self.strategy}({args})@{self.budget_tokens}"


class Allocation(BaseModel):
    """Stage name -> option. ``key`` identifies it (canonical JSON, order-free)."""

    model_config = ConfigDict(frozen=True)

    stages: dict[str, StageOption]

    @property
    def key(self) -> str:
        return json.dumps({s: o.model_dump(mode="json") for s, o in sorted(self.stages.items())}, sort_keys=True)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]

    @property
    def budget_tokens(self) -> int:
        return sum(o.budget_tokens for o in self.stages.values())

    def with_stage(self, stage: str, option: StageOption) -> "Allocation":
        return Allocation(stages={**self.stages, stage: option})


class TrialResult(BaseModel):
    """What evaluating one allocation on the train split gave.

    Attributes:
        score: Mean end-to-end score over the train problems.
        scores: Per-problem scores (for paired standard errors).
        stage_scores: Mean score of each stage's own output (where a stage is scored).
        stage_spend: Mean tokens each stage spent.
        cost: The allocation's cost in AgentTTS units.
    """

    score: float
    scores: list[float] = Field(default_factory=list)
    stage_scores: dict[str, float] = Field(default_factory=dict)
    stage_spend: dict[str, float] = Field(default_factory=dict)
    cost: float = 0.0


class SearchSpace:
    """The options of every stage, the stage order, and the cost of an allocation.

    Args:
        options: Stage -> its options.
        order: Stages in topological order (upstream first).
        option_cost: Cost of one stage option in AgentTTS units (worst-case FLOPs of its
            budget over one pass of the largest model).
        budget: Total cost an allocation may have (None: no filter).
    """

    def __init__(self, options: Mapping[str, list[StageOption]], order: list[str],
                 option_cost: Callable[[str, StageOption], float], budget: float | None = None):
        missing = set(order) ^ set(options)
        if missing:
            raise BadInputError(f"search space and stage order disagree on {sorted(missing)}")
        if any(not opts for opts in options.values()):
            raise BadInputError("every stage needs at least one option")
        self.options = {s: list(options[s]) for s in order}
        self.order = list(order)
        self._option_cost = option_cost
        self.budget = budget

    def cost(self, allocation: Allocation) -> float:
        return sum(self._option_cost(s, o) for s, o in allocation.stages.items())

    def feasible(self, allocation: Allocation) -> bool:
        return self.budget is None or self.cost(allocation) <= self.budget + 1e-9

    def __iter__(self) -> Iterator[Allocation]:
        """Every feasible allocation, in a fixed order."""
        for combo in itertools.product(*(self.options[s] for s in self.order)):
            a = Allocation(stages=dict(zip(self.order, combo)))
            if self.feasible(a):
                yield a

    def size(self) -> int:
        return sum(1 for _ in self)
