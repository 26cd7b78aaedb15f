"""Sampling in rounds: the engine under every parallel strategy.

Each round is one shared-prefix call (``n`` samples of one prompt, one prefill), then the
verifier judges every sample. Rounds continue until a stop condition holds, the sample
cap is reached, or the ledger cannot hold another round, so a budget that runs out
mid-way still leaves every candidate drawn so far.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.base import Backend
from ttc.backends.types import SamplingParams, Usage

from ttc.core.budget import Ledger
from ttc.core.calls import call_model
from ttc.core.cost import Cost
from ttc.core.types import Candidate, Result, StopReason
from ttc.core.tracing import Span, Tracer

__all__ = ["Rounds", "sample_rounds", "task_params", "verify_candidates", "answer_key", "finish", "DEFAULT_CAP"]

# Samples drawn at most when neither ``n`` nor the budget bounds a strategy.
DEFAULT_CAP = 16


@dataclass
class Rounds:
    """What sampling in rounds produced."""

    candidates: list[Candidate] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    stop_reason: StopReason = "done"
    rounds: int = 0


def task_params(task: Any, fmt: str, *, temperature: float, seed: int | None, max_tokens: int | None,
                **extra: Any) -> SamplingParams:
    """Sampling parameters for a task's format: its stop strings and (by default) its token limit."""
    return SamplingParams(temperature=temperature, seed=seed, stop=tuple(task.stop),
                          max_tokens=max_tokens or task.max_tokens(fmt), **extra)


def verify_candidates(problem: dict, verifier: Any, completions, ledger: Ledger, tracer: Tracer,
                      span: Span) -> tuple[list[Candidate], Usage]:
    """Judges completions, charges the verifier's own usage, records the candidates."""
    cands, spent = [], Usage()
    with tracer.span("verifier", type(verifier).__name__, **{"ttc.candidates": len(completions)}) as vspan:
        for comp in completions:
            verdict = verifier.verify(problem, comp.text)
            ledger.settle(None, verdict.usage, samples=0)
            spent = spent + verdict.usage
            mean_lp = sum(comp.logprobs) / len(comp.logprobs) if comp.logprobs else None
            cands.append(Candidate(text=comp.text, answer=verdict.answer, tokens=comp.completion_tokens,
                                   finish_reason=comp.finish_reason, logprob=mean_lp, verdict=verdict))
        vspan.record_usage(input_tokens=spent.prompt_tokens, output_tokens=spent.completion_tokens)
        vspan.set(**{"ttc.correct": sum(bool(c.verdict.correct) for c in cands)})
    span.add_candidates([{"text": c.text, "answer": c.answer, "correct": c.verdict.correct,
                          "score": c.verdict.score, "reason": c.verdict.reason, "tokens": c.tokens}
                         for c in cands])
    return cands, spent


def sample_rounds(
    problem: dict,
    prompt: str,
    backend: Backend,
    verifier: Any,
    ledger: Ledger,
    tracer: Tracer,
    span: Span,
    *,
    params: SamplingParams,
    n: int | None,
    round_size: int,
    stop_when: Callable[[list[Candidate]], bool] | None = None,
    min_tokens: int | None = None,
) -> Rounds:
    """Draws up to ``n`` samples in rounds of ``round_size``; see the module docstring.

    ``n=None`` means "until the budget is spent", capped at DEFAULT_CAP when the budget
    is unlimited. ``min_tokens`` lets the ledger shrink ``max_tokens`` down to it (a
    trace cut short may still have ended); by default samples are never shortened. Round r samples with seed ``params.seed + r`` so that rounds differ
    and runs repeat.
    """
    if n is None and ledger.budget.unlimited:
        n = DEFAULT_CAP
    out = Rounds()
    while n is None or len(out.candidates) < n:
        k = round_size if n is None else min(round_size, n - len(out.candidates))
        seed = None if params.seed is None else params.seed + out.rounds
        call = call_model(backend, [prompt], params.model_copy(update={"n": k, "seed": seed}), ledger, tracer,
                          name=f"round {out.rounds}", min_tokens=min_tokens)
        if not call.generations:
            out.stop_reason = "budget" if out.candidates else "no_budget"
            break
        out.rounds += 1
        out.usage, out.cost = out.usage + call.usage, out.cost + call.cost
        cands, spent = verify_candidates(problem, verifier, call.generations[0].completions, ledger, tracer, span)
        out.usage = out.usage + spent
        out.candidates.extend(cands)
        if stop_when is not None and stop_when(out.candidates):
            out.stop_reason = "verified"
            break
    return out


def answer_key(verifier: Any, cand: Candidate) -> str | None:
    """The key under which votes for the same answer are pooled (None: no answer parsed)."""
    canonical = getattr(verifier, "canonical", None)
    if canonical is not None:
        return canonical(cand.text)
    return cand.answer


def finish(name: str, rounds: Rounds, chosen: Candidate | None, span: Span) -> Result:
    """The Result of a strategy that chose ``chosen`` among ``rounds.candidates``."""
    verdict = chosen.verdict if chosen is not None else None
    span.set(**{"ttc.stop_reason": rounds.stop_reason, "ttc.samples": len(rounds.candidates),
                "ttc.rounds": rounds.rounds, "ttc.answer": chosen.answer if chosen else None,
                "ttc.correct": verdict.correct if verdict else None})
    return Result(
        strategy=name, answer=chosen.answer if chosen else None, correct=verdict.correct if verdict else None,
        candidates=rounds.candidates, usage=rounds.usage, tokens=rounds.usage.total_tokens,
        flops=rounds.cost.flops, paper_flops=rounds.cost.paper_flops, eflops=rounds.cost.eflops,
        stop_reason=rounds.stop_reason,
    )
