"""Planners for allocation search: what to evaluate next, given what was evaluated.

``Planner`` is the proposal step of the AgentTTS loop: ``propose(history, space)``
returns the next batch of allocations, an empty list when it has nothing to add, and
keeps ``guidelines``, a short log of what it learned from the history and why it chose
what it did. ``RuleBasedPlanner`` is the built-in RULE-BASED planner: it applies the
three AgentTTS insights as fixed rules; an LLM planner (the ``planner`` role) can plug in
through the same protocol, writing its guidelines and proposals as text.

The rules, in order (each stage in topological order, upstream first):

1. Insight 1, subtasks prefer different models. Start-up: for each stage, each arm (a
   model with its strategy and parameters) at its start budget while the other stages
   hold their default (upstream stages already at the arm they preferred); the stage
   keeps the arm that scored best. The start budget is AgentTTS's: the stage's equal
   share of the total budget converted into each arm's largest budget that fits it (so a
   small model gets more tokens than a large one), or the ladder's middle rung when the
   space has no budget. An arm whose stage solved nothing at its start budget (a search
   trace cut before it ends) is compared one rung up instead: zero successes say nothing
   about the model.
2. Insight 2, each subtask has a budget past which returns vanish. For each stage with
   its preferred arm, walk the budget up one rung while the score improves by more than
   ``min_gain`` and the allocation stays within budget; when the first step loses more
   than ``min_gain`` (returns reverse), walk down instead while that improves.
3. Insight 3, allocations interact. Shift budget between stages pairwise: one stage a
   rung down, another a rung up (and single steps up where budget is left), most
   promising first by the gains seen so far (a step up that was blocked by the budget is
   the most promising); take the first move that improves by more than ``min_gain`` and
   start again from it, until no move does.

Once the rules converge the planner goes on exploring (so that a search with trials left
still covers the space): it evaluates the unseen allocation nearest the best, and climbs
again (rule 3) from anything that improves on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from .allocation import Allocation, SearchSpace, StageOption, TrialResult

__all__ = ["Planner", "RuleBasedPlanner", "Trial"]


class Trial(BaseModel):
    """One distinct allocation evaluated by a search (``index`` counts from 1)."""

    index: int
    allocation: Allocation
    score: float
    result: TrialResult


@runtime_checkable
class Planner(Protocol):
    """The proposal step of allocation search.

    Attributes:
        guidelines: What the planner learned and applied, one short line each.
    """

    guidelines: list[str]

    def propose(self, history: list[Trial], space: SearchSpace) -> list[Allocation]:
        """The next allocations to evaluate; an empty list ends the search."""
        ...


def _arm_key(o: StageOption) -> str:
    return json.dumps([o.model, o.strategy, o.params], sort_keys=True, default=str)


def _where_key(stage: str, o: StageOption) -> tuple:
    return stage, _arm_key(o), o.budget_tokens


def _arm_label(o: StageOption) -> str:
    return o.label.rsplit("@", 1)[0]


class _Arms:
    """Each stage's arms (model, strategy, params), each a ladder of budgets, cheapest first."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.arms: dict[str, list[list[StageOption]]] = {}
        for s in space.order:
            groups: dict[str, dict[int, StageOption]] = {}
            for o in space.options[s]:
                groups.setdefault(_arm_key(o), {}).setdefault(o.budget_tokens, o)
            self.arms[s] = [[g[b] for b in sorted(g)] for g in groups.values()]

        # (stage, arm, budget) -> (arm index, rung)
        self._where = {_where_key(s, o): (i, r) for s in space.order
                       for i, ladder in enumerate(self.arms[s]) for r, o in enumerate(ladder)}

    def rung(self, stage: str, o: StageOption) -> int:
        return self._where[_where_key(stage, o)][1]

    def step(self, stage: str, o: StageOption, d: int) -> StageOption | None:
        arm, r = self._where[_where_key(stage, o)]
        ladder = self.arms[stage][arm]
        return ladder[r + d] if 0 <= r + d < len(ladder) else None

    def start(self, stage: str, arm: int) -> StageOption:
        ladder = self.arms[stage][arm]
        if self.space.budget is None:
            return ladder[(len(ladder) - 1) // 2]
        share = self.space.budget / len(self.space.order)
        fits = [o for o in ladder if self.space.cost(Allocation(stages={stage: o})) <= share + 1e-9]
        return fits[-1] if fits else ladder[0]

    def coords(self, a: Allocation) -> tuple[tuple[int, int], ...]:
        return tuple(self._where[_where_key(s, a.stages[s])] for s in self.space.order)

    @staticmethod
    def distance(x: tuple[tuple[int, int], ...], y: tuple[tuple[int, int], ...]) -> int:
        """Stages on another arm count 1, plus the rungs between them."""
        return sum((ax != ay) + abs(rx - ry) for (ax, rx), (ay, ry) in zip(x, y))


_Plan = Generator[list[Allocation], None, None]


class RuleBasedPlanner:
    """The built-in RULE-BASED planner: the AgentTTS insights as fixed rules (module docstring).

    One instance plans one search; handed another space, it starts over.

    Args:
        min_gain: A score gain at or below this is no gain (returns have vanished).
    """

    def __init__(self, min_gain: float = 0.01):
        self.min_gain = min_gain
        self.guidelines: list[str] = []
        self._space: SearchSpace | None = None
        self._plan: _Plan | None = None
        self._scores: dict[str, float] = {}
        self._stage_scores: dict[str, dict[str, float]] = {}
        self._allocs: dict[str, Allocation] = {}
        self._read = 0

    def propose(self, history: list[Trial], space: SearchSpace) -> list[Allocation]:
        if space is not self._space or self._plan is None:
            self._space, self.guidelines = space, []
            self._scores, self._stage_scores, self._allocs, self._read = {}, {}, {}, 0
            self._plan = self._rules(_Arms(space))
        if len(history) < self._read:  # not the history this plan grew with: read it afresh
            self._scores, self._stage_scores, self._allocs, self._read = {}, {}, {}, 0
        for t in history[self._read:]:
            self._scores[t.allocation.key] = t.score
            self._stage_scores[t.allocation.key] = dict(t.result.stage_scores)
            self._allocs[t.allocation.key] = t.allocation
        self._read = len(history)
        return next(self._plan, [])

    # -- helpers used inside the plan ---------------------------------------------------
    def _ask(self, allocations: list[Allocation]) -> Generator[list[Allocation], None, list[float | None]]:
        """Scores of ``allocations``, asking only for those not known yet and within budget."""
        fresh = [a for a in allocations if a.key not in self._scores and self._space.feasible(a)]
        if fresh:
            yield fresh
        return [self._scores.get(a.key) for a in allocations]

    def _best(self) -> tuple[Allocation, float] | None:
        if not self._scores:
            return None
        key = max(self._scores, key=self._scores.__getitem__)
        return self._allocs[key], self._scores[key]

    def _gain(self, new: float | None, old: float | None) -> float:
        if new is None:
            return -math.inf
        return math.inf if old is None else new - old

    # -- the rules ----------------------------------------------------------------------
    def _rules(self, arms: _Arms) -> _Plan:
        space, log = self._space, self.guidelines.append
        current = Allocation(stages={s: arms.start(s, 0) for s in space.order})

        for s in space.order:  # insight 1
            cands = [current.with_stage(s, arms.start(s, i)) for i in range(len(arms.arms[s]))]
            scores = yield from self._ask(cands)
            for i, c in enumerate(cands):
                # An arm that solved nothing at its start budget tells nothing about the model
                # (a search trace cut before it ends): give it one rung more before comparing.
                up = arms.step(s, c.stages[s], 1)
                if scores[i] is None or self._stage_scores.get(c.key, {}).get(s) != 0.0 or up is None:
                    continue
                (sc,) = yield from self._ask([c.with_stage(s, up)])
                if sc is not None:
                    log(f"insight 1: stage {s} solved nothing with {_arm_label(c.stages[s])} at "
                        f"{c.stages[s].budget_tokens} tokens; compared at {up.budget_tokens}")
                    cands[i], scores[i] = c.with_stage(s, up), sc
            scored = [i for i, sc in enumerate(scores) if sc is not None]
            if not scored:
                log(f"insight 1: no arm of stage {s} fits the budget at its start budget")
                continue
            current = cands[max(scored, key=lambda i: scores[i])]  # the first of equals
            if len(cands) > 1:
                seen = ", ".join(f"{_arm_label(c.stages[s])}@{c.stages[s].budget_tokens}={sc:.3f}"
                                 for c, sc in zip(cands, scores) if sc is not None)
                log(f"insight 1: stage {s} prefers {_arm_label(current.stages[s])} ({seen})")

        base = self._scores.get(current.key)
        for s in space.order:  # insight 2
            current, base = yield from self._walk(arms, s, current, base)

        while True:  # insight 3
            moved = yield from self._shift(arms, current)
            if moved is None:
                break
            current = moved

        yield from self._explore(arms)

    def _walk(self, arms: _Arms, s: str, current: Allocation, base: float | None):
        """Insight 2 for stage ``s``: walk its budget up while it pays; down if it reverses."""
        current, base, moved, reversed_ = yield from self._climb(arms, s, current, base, 1)
        if not moved and reversed_:
            self.guidelines.append(f"insight 2: stage {s} returns reverse; walking its budget down")
            current, base, _, _ = yield from self._climb(arms, s, current, base, -1)
        return current, base

    def _climb(self, arms: _Arms, s: str, current: Allocation, base: float | None, d: int):
        """Steps stage ``s`` one rung at a time in direction ``d`` while the score gains > min_gain.

        Returns:
            (allocation, its score, whether it moved, whether the last step lost > min_gain).
        """
        log, eps, moved = self.guidelines.append, self.min_gain, False
        while True:
            was = current.stages[s].budget_tokens
            nxt = arms.step(s, current.stages[s], d)
            if nxt is None:
                if d > 0:
                    log(f"insight 2: stage {s} is at its largest budget {was}")
                return current, base, moved, False
            cand = current.with_stage(s, nxt)
            if not self._space.feasible(cand):
                log(f"insight 2: stage {s} at {nxt.budget_tokens} tokens would exceed the budget "
                    f"({self._space.cost(cand):.2f} > {self._space.budget:.2f}); stop at {was}")
                return current, base, moved, False
            (sc,) = yield from self._ask([cand])
            gain = self._gain(sc, base)
            if gain > eps:
                log(f"insight 2: stage {s} {was} -> {nxt.budget_tokens} tokens gains {gain:+.3f}: keep walking")
                current, base, moved = cand, sc, True
                continue
            log(f"insight 2: stage {s} {was} -> {nxt.budget_tokens} tokens gains {gain:+.3f} <= {eps}: "
                f"returns vanish at {was}")
            return current, base, moved, gain < -eps

    def _shift(self, arms: _Arms, current: Allocation):
        """Tries the pairwise budget shifts from ``current``; the first that improves, or None."""
        space, eps = self._space, self.min_gain
        base = self._scores.get(current.key)
        moves = []
        for j in space.order:
            up = arms.step(j, current.stages[j], 1)
            if up is None:
                continue
            known_up = self._scores.get(current.with_stage(j, up).key)
            est_up = math.inf if known_up is None or base is None else known_up - base
            for i in [None] + [i for i in space.order if i != j]:
                down = None if i is None else arms.step(i, current.stages[i], -1)
                if i is not None and down is None:
                    continue
                cand = current.with_stage(j, up) if i is None else current.with_stage(i, down).with_stage(j, up)
                if cand.key in self._scores or not space.feasible(cand):
                    continue
                known_down = None if i is None else self._scores.get(current.with_stage(i, down).key)
                est_down = 0.0 if known_down is None or base is None else base - known_down
                moves.append((-(est_up - est_down), est_down, len(moves), i, j, cand))
        for _, _, _, i, j, cand in sorted(moves, key=lambda m: m[:3]):
            (sc,) = yield from self._ask([cand])
            gain = self._gain(sc, base)
            if gain > eps:
                took = "" if i is None else f"{i} {current.stages[i].budget_tokens}->{cand.stages[i].budget_tokens}, "
                self.guidelines.append(f"insight 3: shift {took}{j} {current.stages[j].budget_tokens}->"
                                       f"{cand.stages[j].budget_tokens} tokens gains {gain:+.3f}: keep")
                return cand
        shown = "nothing" if base is None else f"{base:.3f}"
        self.guidelines.append(f"insight 3: no budget shift improves on {shown} by more than {eps}: "
                               f"rules converged after {len(self._scores)} trials")
        return None

    def _explore(self, arms: _Arms):
        """Evaluates the unseen allocation nearest the best; climbs again from any improvement."""
        remaining = [(a.key, a, arms.coords(a)) for a in self._space]
        while True:
            remaining = [r for r in remaining if r[0] not in self._scores]
            if not remaining:
                return
            best = self._best()  # None while nothing fit the budget: start from the first unseen
            center, top = (arms.coords(best[0]), best[1]) if best else (remaining[0][2], -math.inf)
            nearest = min(remaining, key=lambda r: arms.distance(r[2], center))[1]
            (sc,) = yield from self._ask([nearest])
            if sc is not None and sc > top + self.min_gain:
                self.guidelines.append(f"explore: {nearest.digest} scores {sc:.3f} > best {top:.3f}; climbing from it")
                current = nearest
                while current is not None:
                    current = yield from self._shift(arms, current)
