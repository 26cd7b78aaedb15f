"""``majority_vote``: self-consistency. The most frequent parsed answer wins.

The verifier is not asked to pick (it still judges every candidate, so that the trace
records which were right): votes pool candidates whose answers are the same under the
verifier's ``canonical`` form where it has one (CountDown: the same multiset of steps),
else under the parsed answer.
"""

from __future__ import annotations

from collections import Counter

from ttc.core.contracts import SolveContext
from ttc.core.types import Result

from ._rounds import POOLED_DRAW, answer_key, finish, sample_rounds, task_params
from .registry import strategy

__all__ = ["majority_vote"]


@strategy("majority_vote")
def majority_vote(
    ctx: SolveContext,
    *,
    n: int | None = 16,
    round_size: int | None = None,
    temperature: float = 0.7,
    seed: int | None = 0,
    max_tokens: int | None = None,
    fmt: str = "direct",
) -> Result:
    """Samples up to ``n`` answers and returns the most common one.

    Args:
        n: Samples at most (None: until the budget is spent).
        round_size: Samples per call (default: all of ``n`` in one draw, or with ``n=None``
            as many as the budget buys, the budget left being the draw's pooled cap).
        temperature, seed, max_tokens, fmt: As for ``sample``.
    """
    params = task_params(ctx, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with ctx.tracer.span("strategy", "majority_vote", **{"ttc.n": n, "ttc.temperature": temperature}) as span:
        rounds = sample_rounds(ctx, ctx.prompt(fmt), span,
                               params=params, n=n, round_size=round_size or n or POOLED_DRAW)
        keys = [answer_key(ctx, c) for c in rounds.candidates]
        votes = Counter(k for k in keys if k is not None)
        chosen = None
        if votes:
            top = max(votes.values())
            # Ties go to the answer that reached the top count first (earliest sample).
            winner = next(k for k in keys if k is not None and votes[k] == top)
            chosen = rounds.candidates[keys.index(winner)]
            span.set(**{"ttc.votes": top, "ttc.distinct_answers": len(votes)})
        return finish("majority_vote", rounds, chosen, span)
