"""``majority_vote``: self-consistency. The most frequent parsed answer wins.

The verifier is not asked to pick (it still judges every candidate, so that the trace
records which were right): votes pool candidates whose answers are the same under the
verifier's ``canonical`` form where it has one (CountDown: the same multiset of steps),
else under the parsed answer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ttc.backends.base import Backend

from ._rounds import task_params, answer_key, finish, sample_rounds
from ttc.core.budget import Ledger
from ttc.core.types import Result
from ttc.core.tracing import Tracer

__all__ = ["majority_vote"]


def majority_vote(
    task: Any,
    problem: dict,
    backend: Backend,
    verifier: Any,
    ledger: Ledger,
    tracer: Tracer,
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
        round_size: Samples per call (default: all of ``n`` at once, 4 when ``n`` is None).
        temperature, seed, max_tokens, fmt: As for ``sample``.
    """
    params = task_params(task, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with tracer.span("strategy", "majority_vote", **{"ttc.n": n, "ttc.temperature": temperature}) as span:
        rounds = sample_rounds(problem, task.prompt(problem, fmt), backend, verifier, ledger, tracer, span,
                               params=params, n=n, round_size=round_size or n or 4)
        keys = [answer_key(verifier, c) for c in rounds.candidates]
        votes = Counter(k for k in keys if k is not None)
        chosen = None
        if votes:
            top = max(votes.values())
            # Ties go to the answer that reached the top count first (earliest sample).
            winner = next(k for k in keys if k is not None and votes[k] == top)
            chosen = rounds.candidates[keys.index(winner)]
            span.set(**{"ttc.votes": top, "ttc.distinct_answers": len(votes)})
        return finish("majority_vote", rounds, chosen, span)
