"""Sampling in rounds: the engine under every parallel strategy.

Each round is one shared-prefix call (``n`` samples of one prompt, one prefill), then the
verifier judges every sample. Rounds continue until a stop condition holds, the sample
cap is reached, or the ledger cannot hold another round, so a budget that runs out
mid-way still leaves every candidate drawn so far.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ttc.backends.base import Backend
from ttc.backends.types import Completion, SamplingParams, Usage
from ttc.core.calls import call_model
from ttc.core.contracts import SolveContext
from ttc.core.cost import Cost
from ttc.core.tracing import Span
from ttc.core.types import Candidate, Result, StopReason

__all__ = ["Rounds", "sample_rounds", "task_params", "verify_candidates", "answer_key", "finish", "DEFAULT_CAP",
           "POOLED_DRAW"]

# Samples drawn at most when neither ``n`` nor the budget bounds a strategy.
DEFAULT_CAP = 16
# Most samples one pooled draw may start: the pooled cap, not this, is what ends it.
POOLED_DRAW = 256


@dataclass
class Rounds:
    """What sampling in rounds produced."""

    candidates: list[Candidate] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    stop_reason: StopReason = "done"
    rounds: int = 0


def task_params(ctx: SolveContext, fmt: str, *, temperature: float, seed: int | None, max_tokens: int | None,
                **extra) -> SamplingParams:
    """Sampling parameters for the problem in a task format: its stop strings and (by
    default) the token limit the task sets for this problem."""
    return SamplingParams(temperature=temperature, seed=seed, stop=tuple(ctx.task.stop),
                          max_tokens=max_tokens or ctx.task.max_tokens(ctx.problem, fmt), **extra)


def verify_candidates(ctx: SolveContext, completions: list[Completion], span: Span) -> tuple[list[Candidate], Usage]:
    """Judges completions and records the candidates.

    A verifier that calls a model reserves and is charged through ``ctx`` itself; its
    ``Verdict.usage`` is summed here for the record only, never charged again.
    """
    cands, spent = [], Usage()
    with ctx.tracer.span("verifier", type(ctx.verifier).__name__, **{"ttc.candidates": len(completions)}) as vspan:
        for comp in completions:
            verdict = ctx.verifier.verify(ctx.problem, comp.text, ctx)
            spent = spent + verdict.usage
            mean_lp = sum(comp.logprobs) / len(comp.logprobs) if comp.logprobs else None
            cands.append(Candidate(text=comp.text, answer=verdict.answer, tokens=comp.completion_tokens,
                                   finish_reason=comp.finish_reason, logprob=mean_lp, verdict=verdict))
        vspan.record_usage(input_tokens=spent.prompt_tokens, output_tokens=spent.completion_tokens)
        vspan.set(**{"ttc.correct": sum(bool(c.verdict.correct) for c in cands)})
    span.add_candidates([{"text": c.text, "answer": c.answer, "correct": c.verdict.correct,
                          "score": c.verdict.score, "reason": c.verdict.reason, "tokens": c.tokens,
                          "finish_reason": c.finish_reason}
                         for c in cands])
    return cands, spent


def sample_rounds(
    ctx: SolveContext,
    prompt: str,
    span: Span,
    *,
    params: SamplingParams,
    n: int | None,
    round_size: int,
    stop_when: Callable[[list[Candidate]], bool] | None = None,
    min_tokens: int | None = None,
    backend: Backend | None = None,
) -> Rounds:
    """Draws up to ``n`` samples in rounds of ``round_size``; see the module docstring.

    ``n=None`` means "until the budget is spent", capped at DEFAULT_CAP when the budget
    is unlimited. ``min_tokens`` lets the ledger shrink ``max_tokens`` down to it (a
    trace cut short may still have ended); by default samples are never shortened.
    Round r samples with seed ``params.seed + r`` so that rounds differ and runs repeat.

    Under a token budget every call carries the budget left as its pooled cap: a round
    that fits whole is unchanged, and the round the budget cannot hold whole becomes a
    pooled draw (where the backend enforces pools) instead of a smaller worst-case one,
    so the budget buys every sample it can. Samples the pool cut end with finish reason
    "budget".

    Args:
        backend: The model (default: the context's policy model).
    """
    backend = backend or ctx.policy
    if n is None and ctx.ledger.unlimited:
        n = DEFAULT_CAP
    out = Rounds()
    while n is None or len(out.candidates) < n:
        k = round_size if n is None else min(round_size, n - len(out.candidates))
        seed = None if params.seed is None else params.seed + out.rounds
        left = ctx.ledger.remaining_tokens()
        update = {"n": k, "seed": seed, "max_total_tokens": left if left is not None and left > 0 else None}
        call = call_model(backend, [prompt], params.model_copy(update=update), ctx.ledger, ctx.tracer,
                          name=f"round {out.rounds}", min_tokens=min_tokens)
        if not call.generations:
            out.stop_reason = "budget" if out.candidates else "no_budget"
            break
        out.rounds += 1
        out.usage, out.cost = out.usage + call.usage, out.cost + call.cost
        cands, spent = verify_candidates(ctx, call.generations[0].completions, span)
        out.usage = out.usage + spent
        out.candidates.extend(cands)
        if stop_when is not None and stop_when(out.candidates):
            out.stop_reason = "verified"
            break
        if any(c.finish_reason == "budget" for c in cands):
            out.stop_reason = "budget"  # the pool ran dry: nothing is left to draw
            break
    return out


def answer_key(ctx: SolveContext, cand: Candidate) -> str | None:
    """The key under which votes for the same answer are pooled (None: no answer parsed)."""
    canonical = getattr(ctx.verifier, "canonical", None)
    # A plug-in verifier without canonical forms votes on the answers it parsed.
    return canonical(ctx.problem, cand.text) if canonical is not None else cand.answer


def finish(name: str, rounds: Rounds, chosen: Candidate | None, span: Span) -> Result:
    """The Result of a strategy that chose ``chosen`` among ``rounds.candidates``."""
    verdict = chosen.verdict if chosen is not None else None
    cut = sum(c.finish_reason == "budget" for c in rounds.candidates)
    span.set(**{"ttc.stop_reason": rounds.stop_reason, "ttc.samples": len(rounds.candidates), "ttc.cut": cut,
                "ttc.rounds": rounds.rounds, "ttc.answer": chosen.answer if chosen else None,
                "ttc.correct": verdict.correct if verdict else None})
    return Result(
        strategy=name, answer=chosen.answer if chosen else None, correct=verdict.correct if verdict else None,
        candidates=rounds.candidates, usage=rounds.usage, tokens=rounds.usage.total_tokens,
        flops=rounds.cost.flops, paper_flops=rounds.cost.paper_flops, eflops=rounds.cost.eflops,
        stop_reason=rounds.stop_reason,
    )
