"""``tree_search``: a controller-driven step-level search, under the same budget as the rest.

For models that write their answer as steps (a CountDown direct answer is
``18+17=35,35*35=1225,1225/49=25.``, a Sudoku one is its rows ``135624/642315/...``), the
controller grows the answer one step at a time:

- **expand** a state (the prompt plus the steps so far) by sampling ``k`` next steps in
  ONE shared-prefix call (``n=k``, stop at the step delimiter or the answer end, with
  log-probabilities); identical steps are kept once;
- **score** partial states by the model itself: the mean token log-probability of the
  path (every generated token of every step on it, accumulated along the path);
- **prune** by the task's constraint check (``task.steps.dead_end``): a CountDown step that
  uses a number not available, breaks an arithmetic rule, or leaves one number that is not
  the target, or a Sudoku row that changes a given or repeats a digit, ends that branch. The task's exact solver and reference answers are never used;
- **verify** only complete answers, with the exact verifier, exactly as best-of-n gets to
  check its samples; the search stops at the first verified answer.

``method="dfs"`` expands the best-scored child first and backtracks from dead ends and from
complete-but-wrong answers to the next sibling; ``method="beam"`` keeps the ``beam_width``
best states per depth (all of them expanded in one batched call, each prompt's ``k``
samples sharing its prefill). When the ledger cannot hold another expansion the search
returns the best complete answer so far (highest path score) with stop reason
``"budget"`` (``"no_budget"`` when nothing could be sampled at all).

A task supports ``tree_search`` by exposing a :class:`StepStructure` as its ``steps``
attribute (``tasks.countdown.CountdownTask.steps``, ``tasks.sudoku.SudokuTask.steps``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ttc.backends.errors import BadInputError
from ttc.backends.types import Completion, SamplingParams
from ttc.core.contracts import SolveContext
from ttc.core.tracing import Span
from ttc.core.types import Candidate, Result

from ._rounds import Rounds, finish, verify_candidates
from .registry import strategy

__all__ = ["tree_search", "StepStructure", "DEFAULT_MAX_EXPANSIONS"]

# States expanded at most when neither ``max_expansions`` nor the budget bounds the search.
DEFAULT_MAX_EXPANSIONS = 64
# Depth bound for a task whose step structure cannot say how many steps an answer has.
_FALLBACK_MAX_DEPTH = 16


@runtime_checkable
class StepStructure(Protocol):
    """What a task tells a step-level search about its answers (its ``steps`` attribute).

    Attributes:
        delimiter: Ends a step that is not the last ("," in CountDown).
        end: Ends a complete answer ("."; the task's stop string).
        formats: Prompt formats whose completions are made of such steps.
        step_tokens: A generous per-step token limit (default ``max_tokens_per_step``).
    """

    delimiter: str
    end: str
    formats: tuple[str, ...]
    step_tokens: int

    def parse(self, partial_text: str) -> list[str]:
        """The steps of a partial answer (steps joined by ``delimiter``)."""
        ...

    def dead_end(self, problem: dict, partial_text: str) -> bool:
        """True when no continuation can be right, by the problem's constraints alone."""
        ...

    def complete(self, text: str, problem: dict | None = None) -> bool:
        """True when ``text`` is a finished answer (with a problem: also when no step can follow)."""
        ...

    def max_steps(self, problem: dict) -> int:
        """Steps a complete answer has at most (the search's default depth bound)."""
        ...


@dataclass(frozen=True)
class _State:
    """A node of the search: the steps so far and what the model thought of them."""

    steps: tuple[str, ...]
    logprob: float = 0.0  # sum of the token log-probabilities along the path
    scored_tokens: int = 0  # tokens that came with a log-probability
    tokens: int = 0  # generated tokens along the path (the candidate's tokens)
    order: int = 0  # creation order: breaks ties, so runs repeat

    @property
    def score(self) -> float:
        """Mean token log-probability of the path (0.0 when the backend gave none)."""
        return self.logprob / self.scored_tokens if self.scored_tokens else 0.0


def _best_first(states: list[_State]) -> list[_State]:
    return sorted(states, key=lambda s: (-s.score, s.order))


class _Search:
    """The shared machinery of both methods: expand, prune, verify, account."""

    def __init__(self, ctx: SolveContext, steps: StepStructure, prompt: str, span: Span, params: SamplingParams,
                 max_depth: int, max_expansions: int | None, restarts: int | None = None):
        self.ctx, self.problem, self.steps, self.prompt, self.span = ctx, ctx.problem, steps, prompt, span
        self.params, self.max_depth, self.max_expansions = params, max_depth, max_expansions
        self.restarts_left, self.restarts_done = restarts, 0
        self.out = Rounds()  # candidates = complete answers; rounds = states expanded
        self.scores: list[float] = []  # path score of each candidate, in order
        self.verified: Candidate | None = None
        self.calls = 0
        self.pruned = self.duplicates = self.truncated = 0
        self._order = itertools.count(1)

    # ------------------------------------------------------------------ helpers

    def text(self, state: _State) -> str:
        return self.steps.delimiter.join(state.steps)

    def prompt_of(self, state: _State) -> str:
        d = self.steps.delimiter
        return self.prompt + "".join(s + d for s in state.steps)

    def expansions_left(self) -> int | None:
        return None if self.max_expansions is None else self.max_expansions - self.out.rounds

    # ------------------------------------------------------------------ one expansion

    def expand(self, states: list[_State]) -> list[list[_State]] | None:
        """Samples ``k`` next steps of each state in one call; verifies complete answers.

        Returns the open children of each expanded state, best first (fewer lists than
        states when the budget admitted only some), or None when no state could be
        expanded at all.
        """
        p = self.params
        seed = None if p.seed is None else p.seed + self.calls
        depth = len(states[0].steps)
        call = self.ctx.call("policy", [self.prompt_of(s) for s in states], p.model_copy(update={"seed": seed}),
                             name=f"expand depth {depth}")
        if not call.generations:
            return None
        self.calls += 1
        self.out.rounds += len(call.generations)
        self.out.usage, self.out.cost = self.out.usage + call.usage, self.out.cost + call.cost
        opened: list[list[_State]] = []
        complete: list[_State] = []
        for state, gen in zip(states, call.generations):
            seen: set[str] = set()
            children: list[_State] = []
            for c in gen.completions:
                if c.finish_reason == "length":
                    self.truncated += 1  # cut at the step limit: not a step
                    continue
                key = c.text.strip()
                if key in seen:
                    self.duplicates += 1
                    continue
                seen.add(key)
                lps = c.logprobs or []
                child = _State(state.steps + (c.text,), state.logprob + sum(lps), state.scored_tokens + len(lps),
                               state.tokens + c.completion_tokens, next(self._order))
                partial = self.text(child)
                if self.steps.dead_end(self.problem, partial):
                    self.pruned += 1
                elif self.steps.complete(partial, self.problem):
                    complete.append(child)
                elif len(child.steps) < self.max_depth:
                    children.append(child)
                else:
                    self.pruned += 1  # as deep as allowed and still not an answer
            opened.append(_best_first(children))
        if complete:
            self.check(_best_first(complete))
        return opened

    def check(self, states: list[_State]) -> None:
        """Verifies complete answers (best first), as best-of-n verifies its samples."""
        comps = [Completion(text=self.text(s) + self.steps.end, completion_tokens=s.tokens, finish_reason="stop")
                 for s in states]
        cands, spent = verify_candidates(self.ctx, comps, self.span)
        self.out.usage = self.out.usage + spent
        self.out.candidates.extend(cands)
        self.scores.extend(s.score for s in states)
        if self.verified is None:
            self.verified = next((c for c in cands if c.verdict.correct is True), None)

    def restart(self) -> bool:
        """Whether another tree may be grown from the root (``restarts`` caps them)."""
        if self.restarts_left is not None:
            if self.restarts_left <= 0:
                return False
            self.restarts_left -= 1
        self.restarts_done += 1
        return True

    def out_of_budget(self) -> None:
        self.out.stop_reason = "budget" if self.out.rounds else "no_budget"

    # ------------------------------------------------------------------ the two methods

    def dfs(self) -> None:
        # A sampled tree is never exhausted while budget remains: when every branch is a
        # dead end, the root is expanded again (a fresh seed draws fresh first steps).
        stack = [_State(())]
        while True:
            if self.expansions_left() == 0:
                return
            if not stack:
                if not self.restart():
                    return
                stack = [_State(())]
            state = stack.pop()
            opened = self.expand([state])
            if opened is None:
                self.out_of_budget()
                return
            if self.verified is not None:
                self.out.stop_reason = "verified"
                return
            stack.extend(reversed(opened[0]))  # the best child is popped first

    def beam(self, width: int) -> None:
        beam = [_State(())]
        while True:
            if not beam:  # every state died: restart from the root, fresh samples
                if not self.restart():
                    return
                beam = [_State(())]
            left = self.expansions_left()
            if left == 0:
                return
            beam = beam if left is None else beam[:left]
            opened = self.expand(beam)
            if opened is None:
                self.out_of_budget()
                return
            if self.verified is not None:
                self.out.stop_reason = "verified"
                return
            if len(opened) < len(beam):  # the ledger admitted only the best states
                self.out_of_budget()
                return
            beam = _best_first([c for children in opened for c in children])[:width]

    def chosen(self) -> int | None:
        """Index of the verified answer, else of the complete answer with the highest path score."""
        if self.verified is not None:
            return next(i for i, c in enumerate(self.out.candidates) if c is self.verified)
        if not self.out.candidates:
            return None
        return max(range(len(self.scores)), key=lambda i: (self.scores[i], -i))


@strategy("tree_search")
def tree_search(
    ctx: SolveContext,
    *,
    k: int = 3,
    method: str = "dfs",
    beam_width: int | None = None,
    max_depth: int | None = None,
    max_expansions: int | None = None,
    restarts: int | None = None,
    temperature: float = 0.7,
    seed: int | None = 0,
    max_tokens_per_step: int | None = None,
    max_tokens: int | None = None,
    fmt: str = "direct",
) -> Result:
    """Searches step by step for an answer the verifier confirms; see the module docstring.

    Args:
        k: Next steps sampled per expanded state (one shared-prefix call, ``n=k``).
        method: "dfs" (best child first, backtracking) or "beam".
        beam_width: States kept per depth with ``method="beam"`` (default: ``k``).
        max_depth: Steps per answer at most (default: the task's ``steps.max_steps``).
        max_expansions: States expanded at most (default: bounded by the budget only;
            64 when the budget is unlimited).
        restarts: Fresh trees grown from the root once every branch died (default:
            as many as the budget and ``max_expansions`` allow; 0: one tree only).
        temperature: Sampling temperature of the steps (0 gives one child per state).
        seed: Expansion i samples with ``seed + i``, so expansions differ and runs repeat.
        max_tokens_per_step: Token limit of one step (default: the task's
            ``steps.step_tokens``); a step cut at the limit is dropped.
        max_tokens: The same limit under the name every strategy takes (each sample
            here is one step), so ``--max-tokens`` means the same thing everywhere;
            ``max_tokens_per_step`` wins when both are given.
        fmt: The task's prompt format; it must be one whose answers are made of steps.

    Raises:
        BadInputError: The task has no step structure, or a parameter is out of range.
    """
    task, problem = ctx.task, ctx.problem
    steps = getattr(task, "steps", None)
    name = getattr(task, "name", type(task).__name__)
    if steps is None:
        raise BadInputError(f"task {name} does not support tree_search (no step structure)")
    if method not in ("dfs", "beam"):
        raise BadInputError(f"unknown tree_search method {method!r}; valid methods: beam, dfs")
    for label, v in (("k", k), ("beam_width", beam_width), ("max_depth", max_depth),
                     ("max_expansions", max_expansions), ("max_tokens_per_step", max_tokens_per_step),
                     ("max_tokens", max_tokens), ("restarts", None if restarts is None else restarts + 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BadInputError(f"tree_search {label} must be a positive integer, got {v!r}")
    if fmt not in steps.formats:
        raise BadInputError(f"tree_search on {name} needs a step format ({', '.join(steps.formats)}), got {fmt!r}")
    beam_width = beam_width or k
    max_step = getattr(steps, "max_steps", None)
    max_depth = max_depth or (max_step(problem) if max_step is not None else _FALLBACK_MAX_DEPTH)
    if max_expansions is None and ctx.ledger.unlimited:
        max_expansions = DEFAULT_MAX_EXPANSIONS
    params = SamplingParams(n=k, temperature=temperature, seed=seed, logprobs=True, stop=(steps.delimiter, steps.end),
                            max_tokens=max_tokens_per_step or max_tokens or steps.step_tokens)
    with ctx.tracer.span("strategy", "tree_search", **{
        "ttc.k": k, "ttc.method": method, "ttc.beam_width": beam_width if method == "beam" else None,
        "ttc.max_depth": max_depth, "ttc.max_expansions": max_expansions, "ttc.temperature": temperature,
        "ttc.max_tokens_per_step": params.max_tokens,
    }) as span:
        search = _Search(ctx, steps, ctx.prompt(fmt), span, params, max_depth, max_expansions, restarts)
        if method == "dfs":
            search.dfs()
        else:
            search.beam(beam_width)
        best = search.chosen()
        span.set(**{"ttc.expansions": search.out.rounds, "ttc.calls": search.calls, "ttc.pruned": search.pruned,
                    "ttc.restarts": search.restarts_done,
                    "ttc.duplicates": search.duplicates, "ttc.truncated": search.truncated,
                    "ttc.path_score": None if best is None else search.scores[best]})
        return finish("tree_search", search.out, None if best is None else search.out.candidates[best], span)
