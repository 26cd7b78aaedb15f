"""The tracer that writes strategy spans into the trace store.

Strategies see only the ``strategies.Tracer`` protocol; this adapter turns each span into
a ``store.SpanRecord`` when it ends. The current span lives in a ``ContextVar``, so spans
opened in worker threads (started with ``contextvars.copy_context()``) nest correctly.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from ttc.store import CandidateRecord, SpanRecord, TraceStore
from ttc.store.records import new_span_id, utcnow

__all__ = ["StoreTracer", "one_line"]

_current: ContextVar[str | None] = ContextVar("ttc_current_span", default=None)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, prefixed by its type when empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _LiveSpan:
    """A span being recorded; becomes a SpanRecord when it ends."""

    def __init__(self, run_id: str, parent_id: str | None, kind: str, name: str, attributes: dict[str, Any]):
        self.span_id = new_span_id()
        self.record = SpanRecord(id=self.span_id, run_id=run_id, parent_id=parent_id, kind=kind, name=name,
                                 attributes=dict(attributes))
        self.candidates: list[CandidateRecord] = []

    def set(self, **attributes: Any) -> None:
        self.record.attributes.update(attributes)

    def record_usage(self, *, input_tokens: int = 0, output_tokens: int = 0, model: str | None = None,
                     finish_reason: str | None = None) -> None:
        r = self.record
        r.input_tokens += input_tokens
        r.output_tokens += output_tokens
        r.model = model or r.model
        if finish_reason:
            r.finish_reason = finish_reason if not r.finish_reason else f"{r.finish_reason},{finish_reason}"

    def add_candidates(self, candidates: list[dict[str, Any]]) -> None:
        start = len(self.candidates)
        for i, c in enumerate(candidates):
            known = {k: c[k] for k in ("text", "answer", "correct", "score", "reason", "tokens") if k in c}
            extra = {k: v for k, v in c.items() if k not in known and k != "idx"}
            self.candidates.append(CandidateRecord(run_id=self.record.run_id, span_id=self.span_id,
                                                   idx=c.get("idx", start + i), attributes=extra, **known))


class StoreTracer:
    """Records spans of one run into a TraceStore.

    Args:
        store: The open trace store.
        trace_id: The run the spans belong to (from ``store.start_run``).
    """

    def __init__(self, store: TraceStore, trace_id: str):
        self.store = store
        self.trace_id = trace_id
        #: Run-level results (answer, correct, totals) written when the run ends.
        self.outcome: dict[str, Any] = {}

    @contextmanager
    def span(self, kind: str, name: str, **attributes: Any) -> Iterator[_LiveSpan]:
        live = _LiveSpan(self.trace_id, _current.get(), kind, name, attributes)
        token = _current.set(live.span_id)
        t0 = time.perf_counter()
        try:
            yield live
        except BaseException as exc:
            live.record.status, live.record.error = "error", one_line(exc)
            raise
        finally:
            _current.reset(token)
            live.record.latency_s = time.perf_counter() - t0
            live.record.ended_at = utcnow()
            # Candidates first: a reader that sees the span also sees what it produced.
            if live.candidates:
                self.store.add_candidates(live.candidates)
            self.store.add_span(live.record)
