"""``stream_model``: the budgeted streaming call (TrimR and the server need one).

Like :func:`call_model` it reserves before the call, charges what was spent and records
one ``llm`` span; the difference is that the settlement happens when the stream ends or
is closed early, so a caller that stops reading (TrimR cutting redundant thinking) is
charged only for the tokens actually generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from ttc.backends.base import Backend, CompletionStream
from ttc.backends.errors import BadInputError
from ttc.backends.types import Generation, SamplingParams, Usage

from .budget import Ledger, Reservation
from .cost import Cost, CostModel, call_cost
from .tracing import NullTracer, Span, Tracer

__all__ = ["BudgetedStream", "stream_model"]


class BudgetedStream:
    """Text deltas of one completion, with the budget settled when it ends.

    Iterate for deltas; ``close()`` stops decoding early. After the stream ends (or is
    closed) ``generation``, ``usage`` and ``cost`` hold what was charged. Use it as a
    context manager so that an exception also settles it.

    Attributes:
        params: The parameters actually used (max_tokens shrunk to the budget).
        text: Everything emitted so far.
    """

    def __init__(self, backend: Backend, inner: CompletionStream, params: SamplingParams, ledger: Ledger,
                 reservation: Reservation, span_cm: AbstractContextManager[Span], span: Span,
                 cost_model: CostModel):
        self.params = params
        self.text = ""
        self.generation: Generation | None = None
        self.usage = Usage()
        self.cost = Cost()
        self._backend, self._inner, self._ledger = backend, inner, ledger
        self._reservation, self._span_cm, self._span = reservation, span_cm, span
        self._cost_model = cost_model
        self._settled = False
        self._extra: list[Reservation] = []  # what injected prompts hold until settlement
        self.injected = 0

    @property
    def finished(self) -> bool:
        return self._settled

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._settled:
            raise StopIteration
        try:
            delta = next(self._inner)
        except StopIteration:
            self._settle(None)
            raise
        except BaseException as exc:
            self._inner.close()
            self._settle(exc)
            raise
        self.text += delta
        return delta

    def inject(self, text: str) -> bool:
        """Appends ``text`` after the text so far and decodes on from it (TrimR's prompts).

        The prompt tokens the injection prefills are reserved first; when the budget
        cannot hold them nothing is injected and False is returned (the caller then
        usually closes the stream). The injected text comes out as the next delta.
        """
        if self._settled:
            return False
        cost_of = getattr(self._inner, "inject_tokens", None)
        cost = cost_of(text) if cost_of is not None else self._backend.count_tokens(text)
        r = self._ledger.reserve(cost, 1, 1)  # one token of slack: reserve() needs max_tokens >= 1
        if r is None:
            return False
        try:
            self._inner.inject(text)
        except BaseException:
            self._ledger.release(r)
            raise
        self._extra.append(r)
        self.injected += cost
        self._span.set(**{"ttc.injected_tokens": self.injected})
        return True

    def close(self) -> None:
        """Stops decoding now; the tokens generated so far are charged."""
        if not self._settled:
            self._inner.close()
            self._settle(None)

    def __enter__(self) -> "BudgetedStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._settled:
            self._inner.close()
            self._settle(exc[1] if exc and exc[0] is not None else None)

    def _settle(self, error: BaseException | None) -> None:
        self._settled = True
        gen = self._inner.generation
        for r in self._extra:  # the call's bill below covers the injected prompts
            self._ledger.release(r)
        try:
            if gen is None:  # the backend failed before producing anything billable
                self._ledger.release(self._reservation)
            else:
                self.generation = gen
                self.usage = gen.usage
                self.cost = call_cost(self._backend.info, gen.prompt_tokens,
                                      [c.completion_tokens for c in gen.completions], self._cost_model)
                self._ledger.settle(self._reservation, gen.usage, samples=len(gen.completions), cost=self.cost)
                reasons = sorted({c.finish_reason for c in gen.completions})
                self._span.record_usage(input_tokens=gen.usage.prompt_tokens,
                                        output_tokens=gen.usage.completion_tokens,
                                        model=self._backend.name, finish_reason=",".join(reasons))
                self._span.set(**{"ttc.flops": self.cost.flops, "ttc.eflops": self.cost.eflops,
                                  "ttc.paper_flops": self.cost.paper_flops, "ttc.latency_s": gen.latency_s})
        finally:
            if error is None:
                self._span_cm.__exit__(None, None, None)
            else:
                self._span_cm.__exit__(type(error), error, error.__traceback__)


def stream_model(
    backend: Backend,
    prompt: str,
    params: SamplingParams,
    ledger: Ledger,
    tracer: Tracer | None = None,
    *,
    name: str = "stream",
    min_tokens: int | None = 1,
    cost_model: CostModel = CostModel(),
) -> BudgetedStream | None:
    """Opens a budgeted stream of one completion; None when the budget cannot hold it.

    The worst case (prompt + max_tokens) is reserved first; ``max_tokens`` shrinks to what
    the budget holds, down to ``min_tokens`` (default 1: a stream may be cut at its cap).

    Args:
        backend: The model.
        prompt: One prompt.
        params: Sampling parameters; ``n`` must be 1.
        ledger: The budget ledger to charge.
        tracer: Where the span goes (default: nowhere).
        name: Span name.
        min_tokens: Smallest per-sample token limit worth opening the stream for.
        cost_model: Hardware assumptions for eFLOPs.
    """
    if params.n != 1:
        raise BadInputError(f"stream_model() streams one completion; got n={params.n}")
    tracer = tracer or NullTracer()
    r = ledger.reserve(backend.count_tokens(prompt), params.max_tokens, 1, min_tokens=min_tokens)
    if r is None:
        return None
    used = params.model_copy(update={"max_tokens": r.max_tokens, "max_total_tokens": None})
    span_cm = tracer.span("llm", name, **{
        "gen_ai.operation.name": "text_completion",
        "gen_ai.request.model": backend.name,
        "gen_ai.request.max_tokens": used.max_tokens,
        "gen_ai.request.temperature": used.temperature,
        "gen_ai.request.seed": used.seed,
        "ttc.stream": True,
    })
    span = span_cm.__enter__()
    try:
        inner = backend.stream(prompt, used)
    except BaseException as exc:
        ledger.release(r)
        span_cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return BudgetedStream(backend, inner, used, ledger, r, span_cm, span, cost_model)
