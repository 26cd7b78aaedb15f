"""The one way strategies call a model: reserve budget, call, charge, trace.

Every model call in ttc (samples, verifier and judge calls, planners) goes through
:func:`call_model`, so the accounting rule holds everywhere by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.backends.types import Generation, SamplingParams, Usage

from .budget import Ledger
from .cost import Cost, CostModel, call_cost
from .tracing import NullTracer, Tracer

__all__ = ["CallResult", "call_model"]

#: The TrimR session of the solve running in this context (``core.trimr``), if any: with
#: one, the policy model's calls become monitored streams. A context variable, so that the
#: option reaches every strategy's calls without being a parameter of any.
_ACTIVE_TRIMR: ContextVar[Any] = ContextVar("ttc_trimr", default=None)


@dataclass
class CallResult:
    """What one ``call_model`` produced.

    Attributes:
        generations: One per prompt that was sent (may be fewer than asked: see ``skipped``).
        usage: Tokens charged.
        cost: FLOPs, paper FLOPs and eFLOPs charged.
        params: The parameters actually used, after the ledger shrank them.
        skipped: Prompts not sent because the budget could not hold them.
    """

    generations: list[Generation] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    params: SamplingParams | None = None
    skipped: int = 0


def call_model(
    backend: Backend,
    prompts: Sequence[str],
    params: SamplingParams,
    ledger: Ledger,
    tracer: Tracer | None = None,
    *,
    name: str = "generate",
    min_tokens: int | None = None,
    cost_model: CostModel = CostModel(),
) -> CallResult:
    """Samples within the budget and records one ``llm`` span for the call.

    Each prompt's worst case is reserved before the call. Prompts are admitted in order
    while the ledger can hold them; the first that cannot be held (even shrunk to
    ``min_tokens``) and all after it are skipped. All admitted prompts share the
    smallest shrunk ``n`` and ``max_tokens`` so that they decode as one batch.

    Args:
        backend: The model.
        prompts: Prompts to sample from.
        params: Sampling parameters asked for.
        ledger: The budget ledger to charge.
        tracer: Where the span goes (default: nowhere).
        name: Span name.
        min_tokens: Smallest per-sample token limit worth a call (default: no shrinking).
        cost_model: Hardware assumptions for eFLOPs.

    Returns:
        The generations, what they cost and how many prompts were skipped.
    """
    if isinstance(prompts, str):
        raise BadInputError("call_model() takes a list of prompts, not one string")
    tracer = tracer or NullTracer()
    trimr = _ACTIVE_TRIMR.get()
    if trimr is not None and trimr.applies(backend):
        return trimr.call(backend, prompts, params, ledger, tracer, name=name, min_tokens=min_tokens,
                          cost_model=cost_model)
    held, n, max_tokens = [], params.n, params.max_tokens
    # A pooled cap is reserved as the pool only where the backend enforces it; elsewhere
    # (a remote server) the worst case, max_tokens x n, stays the rule.
    pool = params.max_total_tokens if getattr(backend, "pools_tokens", False) else None
    try:
        for p in prompts:
            r = ledger.reserve(backend.count_tokens(p), max_tokens, n, min_tokens=min_tokens, pool=pool)
            if r is None:
                break
            held.append(r)
            n, max_tokens = min(n, r.n), min(max_tokens, r.max_tokens)
            if pool is not None:
                pool = r.pool  # never more than asked; the last prompt held sets the common pool
    except BaseException:
        # count_tokens failed (a prompt too long for the context): hold nothing.
        for r in held:
            ledger.release(r)
        raise
    result = CallResult(skipped=len(prompts) - len(held))
    if not held:
        return result
    if pool is not None and pool >= max_tokens * n:
        pool = None  # the pool cannot bind: an ordinary call, decoded exactly as without one
    used = params.model_copy(update={"n": n, "max_tokens": max_tokens, "max_total_tokens": pool})
    result.params = used
    with tracer.span("llm", name, **{
        "gen_ai.operation.name": "text_completion",
        "gen_ai.request.model": backend.name,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.request.temperature": used.temperature,
        "gen_ai.request.top_p": used.top_p,
        "gen_ai.request.choice.count": n,
        "gen_ai.request.seed": used.seed,
        "ttc.prompts": len(held),
        "ttc.pool": pool,
    }) as span:
        try:
            gens = backend.generate(list(prompts[: len(held)]), used)
        except BaseException:
            for r in held:
                ledger.release(r)
            raise
        info = backend.info
        for r, g in zip(held, gens):
            cost = call_cost(info, g.prompt_tokens, [c.completion_tokens for c in g.completions], cost_model)
            ledger.settle(r, g.usage, samples=len(g.completions), cost=cost)
            result.usage = result.usage + g.usage
            result.cost = result.cost + cost
        for r in held[len(gens):]:  # a backend that answered fewer prompts than sent
            ledger.release(r)
        result.generations = gens
        reasons = sorted({c.finish_reason for g in gens for c in g.completions})
        span.record_usage(
            input_tokens=result.usage.prompt_tokens,
            output_tokens=result.usage.completion_tokens,
            model=backend.name,
            finish_reason=",".join(reasons),
        )
        span.set(**{"ttc.flops": result.cost.flops, "ttc.eflops": result.cost.eflops,
                    "ttc.paper_flops": result.cost.paper_flops,
                    "ttc.latency_s": max((g.latency_s for g in gens), default=0.0)})
    return result
