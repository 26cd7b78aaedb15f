"""``sample``: one completion, checked by the verifier. The baseline every comparison starts from."""

from __future__ import annotations

from typing import Any

from ttc.backends.base import Backend

from ._rounds import task_params, finish, sample_rounds
from ttc.core.budget import Ledger
from ttc.core.types import Result
from ttc.core.tracing import Tracer

__all__ = ["sample"]


def sample(
    task: Any,
    problem: dict,
    backend: Backend,
    verifier: Any,
    ledger: Ledger,
    tracer: Tracer,
    *,
    temperature: float = 0.7,
    seed: int | None = 0,
    max_tokens: int | None = None,
    fmt: str = "direct",
) -> Result:
    """Samples one answer and verifies it.

    Args:
        task: The task object (``prompt``, ``stop``, ``max_tokens``).
        problem: The problem dict.
        backend: The model.
        verifier: Object with ``verify(problem, text) -> Verdict``.
        ledger: Budget ledger shared with the caller.
        tracer: Where spans go.
        temperature: Sampling temperature.
        seed: Sampling seed.
        max_tokens: Token limit of the answer (default: the task's for ``fmt``).
        fmt: Prompt format of the task.
    """
    params = task_params(task, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with tracer.span("strategy", "sample", **{"ttc.temperature": temperature, "ttc.seed": seed}) as span:
        rounds = sample_rounds(problem, task.prompt(problem, fmt), backend, verifier, ledger, tracer, span,
                               params=params, n=1, round_size=1)
        return finish("sample", rounds, rounds.candidates[0] if rounds.candidates else None, span)
