"""``sequential``: one long generation from a search-trace model (depth-first search with
backtracking written out), as the backtracking model of "To Backtrack or Not to
Backtrack". Its budget is the trace length L: the ledger shrinks L to what the budget
holds, and only the complete answer at the end of the trace is verified.
"""

from __future__ import annotations

from ttc.core.contracts import SolveContext
from ttc.core.types import Result

from ._rounds import finish, sample_rounds, task_params
from .registry import strategy

__all__ = ["sequential"]


@strategy("sequential", roles={"search": "policy"})
def sequential(
    ctx: SolveContext,
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
    params = task_params(ctx, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with ctx.tracer.span("strategy", "sequential", **{"ttc.max_tokens": params.max_tokens,
                                                   "ttc.temperature": temperature}) as span:
        # The search-trace model plays the ``search`` role; a pool without one uses the policy.
        rounds = sample_rounds(ctx, ctx.prompt(fmt), span, params=params, n=1, round_size=1, min_tokens=1,
                               backend=ctx.models.get("search", fallback="policy"))
        return finish("sequential", rounds, rounds.candidates[0] if rounds.candidates else None, span)
