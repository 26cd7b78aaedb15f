"""``sample``: one completion, checked by the verifier. The baseline every comparison starts from."""

from __future__ import annotations

from ttc.core.contracts import SolveContext
from ttc.core.types import Result

from ._rounds import finish, sample_rounds, task_params
from .registry import strategy

__all__ = ["sample"]


@strategy("sample")
def sample(
    ctx: SolveContext,
    *,
    temperature: float = 0.7,
    seed: int | None = 0,
    max_tokens: int | None = None,
    fmt: str = "direct",
) -> Result:
    """Samples one answer and verifies it.

    Args:
        ctx: The solve context (task, problem, verifier, ledger, tracer, models).
        temperature: Sampling temperature.
        seed: Sampling seed.
        max_tokens: Token limit of the answer (default: the task's for ``fmt``).
        fmt: Prompt format of the task.
    """
    params = task_params(ctx, fmt, temperature=temperature, seed=seed, max_tokens=max_tokens)
    with ctx.tracer.span("strategy", "sample", **{"ttc.temperature": temperature, "ttc.seed": seed}) as span:
        rounds = sample_rounds(ctx, ctx.prompt(fmt), span,
                               params=params, n=1, round_size=1)
        return finish("sample", rounds, rounds.candidates[0] if rounds.candidates else None, span)
