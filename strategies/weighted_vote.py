"""``weighted_vote``: verifier scores summed per distinct answer; the heaviest answer wins.

Between best-of-n (one high score wins) and majority vote (every vote weighs 1): with a
soft verifier (a judge's probability) agreement among good candidates adds up.
"""

from __future__ import annotations

from collections import defaultdict

from ttc.core.contracts import SolveContext
from ttc.core.types import Result

from ._rounds import POOLED_DRAW, answer_key, finish, sample_rounds, task_params
from .registry import strategy

__all__ = ["weighted_vote"]


@strategy("weighted_vote")
def weighted_vote(
    ctx: SolveContext,
    *,
    n: int | None = 16,
    round_size: int | None = None,
    temperature: float = 0.7,
    seed: int | None = 0,
    max_tokens: int | None = None,
    fmt: str = "direct",
) -> Result:
    """Samples up to ``n`` answers; returns the answer with the largest summed score.

    Args:
        n: Samples at most (None: until the budget is spent).
        round_size: Samples per call (default: all of ``n`` in one draw, or with ``n=None``
            as many as the budget buys, the budget left being the draw's pooled cap).
        temperature, seed, max_tokens, fmt: As for ``sample``.
    """
    params = task_params(ctx, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with ctx.tracer.span("strategy", "weighted_vote", **{"ttc.n": n, "ttc.temperature": temperature}) as span:
        rounds = sample_rounds(ctx, ctx.prompt(fmt), span,
                               params=params, n=n, round_size=round_size or n or POOLED_DRAW)
        weight: dict[str, float] = defaultdict(float)
        first: dict[str, int] = {}
        for i, c in enumerate(rounds.candidates):
            key = answer_key(ctx, c)
            if key is not None:
                weight[key] += c.verdict.score
                first.setdefault(key, i)
        chosen = None
        if weight:
            best = max(weight, key=lambda k: (weight[k], -first[k]))
            chosen = rounds.candidates[first[best]]
            span.set(**{"ttc.weight": weight[best], "ttc.distinct_answers": len(weight)})
        return finish("weighted_vote", rounds, chosen, span)
