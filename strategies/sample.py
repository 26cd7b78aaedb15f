"""``sample``: one completion, checked by the verifier. The baseline every comparison starts from."""

from __future__ import annotations

from typing import Any

from backends.base import Backend
from backends.types import SamplingParams

from .budget import Ledger
from .calls import call_model
from .result import Candidate, Result
from .tracing import Tracer

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
        max_tokens: Token limit of the answer (default: the task's).
        fmt: Prompt format of the task.
    """
    params = SamplingParams(n=1, temperature=temperature, seed=seed, stop=tuple(task.stop),
                            max_tokens=max_tokens or task.max_tokens(fmt))
    with tracer.span("strategy", "sample", **{"ttc.temperature": temperature, "ttc.seed": seed}) as span:
        call = call_model(backend, [task.prompt(problem, fmt)], params, ledger, tracer, name="sample")
        if not call.generations:
            span.set(**{"ttc.stop_reason": "no_budget"})
            return Result(strategy="sample", stop_reason="no_budget", flops=0.0, paper_flops=0.0, eflops=0.0)
        comp = call.generations[0].completions[0]
        with tracer.span("verifier", type(verifier).__name__) as vspan:
            verdict = verifier.verify(problem, comp.text)
            vspan.set(**{"ttc.correct": verdict.correct, "ttc.score": verdict.score})
            vspan.record_usage(input_tokens=verdict.usage.prompt_tokens, output_tokens=verdict.usage.completion_tokens)
        ledger.settle(None, verdict.usage, samples=0)
        cand = Candidate(text=comp.text, answer=verdict.answer, tokens=comp.completion_tokens,
                         finish_reason=comp.finish_reason, verdict=verdict)
        span.add_candidates([{"text": cand.text, "answer": cand.answer, "correct": verdict.correct,
                              "score": verdict.score, "reason": verdict.reason, "tokens": cand.tokens}])
        usage = call.usage + verdict.usage
        return Result(strategy="sample", answer=verdict.answer, correct=verdict.correct, candidates=[cand],
                      usage=usage, tokens=usage.total_tokens, flops=call.cost.flops,
                      paper_flops=call.cost.paper_flops, eflops=call.cost.eflops, stop_reason="done")
