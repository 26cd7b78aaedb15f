"""``sequential``: one long generation from a search-trace model (depth-first search with
backtracking written out), as the backtracking model of "To Backtrack or Not to
Backtrack". Its budget is the trace length L: the ledger shrinks L to what the budget
holds, and only the complete answer at the end of the trace is verified.
"""

from __future__ import annotations

from typing import Any

from ttc.backends.base import Backend

from ._rounds import task_params, finish, sample_rounds
from ttc.core.budget import Ledger
from ttc.core.types import Result
from ttc.core.tracing import Tracer

__all__ = ["sequential"]


def sequential(
    task: Any,
    problem: dict,
    backend: Backend,
    verifier: Any,
    ledger: Ledger,
    tracer: Tracer,
    *,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int | None = 0,
    fmt: str = "search",
) -> Result:
    """Generates one search trace of at most ``max_tokens`` (L) tokens and verifies its answer.

    Args:
        max_tokens: L, the trace length limit (default: the task's for ``fmt``); shrunk
            to fit the budget.
        temperature: 0 decodes greedily, as one deterministic search.
        seed: Sampling seed when ``temperature > 0``.
        fmt: The task's search-trace prompt format.
    """
    params = task_params(task, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with tracer.span("strategy", "sequential", **{"ttc.max_tokens": params.max_tokens,
                                                   "ttc.temperature": temperature}) as span:
        rounds = sample_rounds(problem, task.prompt(problem, fmt), backend, verifier, ledger, tracer, span,
                               params=params, n=1, round_size=1, min_tokens=1)
        return finish("sequential", rounds, rounds.candidates[0] if rounds.candidates else None, span)
