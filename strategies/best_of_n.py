"""``best_of_n``: sample, let the verifier pick the best-scored candidate.

With an exact verifier this returns a verified answer whenever any sample is right. By
default (``early_stop=True``) it samples in rounds and stops as soon as the verifier
confirms an answer, so easy problems cost one round and hard ones use the budget: the
adaptive baseline that compute-optimal selection (Snell et al.) must beat.
"""

from __future__ import annotations

from ttc.core.contracts import SolveContext
from ttc.core.types import Result

from ._rounds import POOLED_DRAW, finish, sample_rounds, task_params
from .registry import strategy

__all__ = ["best_of_n"]


@strategy("best_of_n")
def best_of_n(
    ctx: SolveContext,
    *,
    n: int | None = None,
    round_size: int | None = None,
    early_stop: bool = True,
    temperature: float = 0.7,
    seed: int | None = 0,
    max_tokens: int | None = None,
    fmt: str = "direct",
) -> Result:
    """Samples up to ``n`` answers and returns the one the verifier scores highest.

    Args:
        n: Samples at most (None: until the budget is spent; 16 if it is unlimited).
        round_size: Samples per round (one shared-prefix call). Default: 4 with
            ``early_stop``, else all ``n`` (or as many as the budget buys) in one draw.
        early_stop: Stop once the verifier confirms an answer (``correct is True``).
        temperature, seed, max_tokens, fmt: As for ``sample``.
    """
    if round_size is None:
        # Without early stop, one draw: the budget left is its pooled cap, so it buys every
        # sample it can hold instead of prefilling the prompt again round after round.
        round_size = 4 if early_stop else (n or POOLED_DRAW)
    params = task_params(ctx, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with ctx.tracer.span("strategy", "best_of_n", **{"ttc.n": n, "ttc.round_size": round_size,
                                                  "ttc.early_stop": early_stop, "ttc.temperature": temperature}) as span:
        rounds = sample_rounds(
            ctx, ctx.prompt(fmt), span, params=params, n=n,
            round_size=round_size,
            stop_when=(lambda cands: any(c.verdict.correct is True for c in cands)) if early_stop else None,
        )
        # Highest score wins; among equals, the earliest sample (stable and seed-reproducible).
        chosen = max(rounds.candidates, key=lambda c: c.verdict.score, default=None)
        return finish("best_of_n", rounds, chosen, span)
