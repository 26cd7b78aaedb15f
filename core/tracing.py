"""The tracer interface: how strategies record spans without importing the store.

The orchestrator hands a strategy a Tracer; ``NullTracer`` records nothing. Spans nest
by context (a ``contextvars`` stack), so a span opened inside another becomes its child,
also across threads started with ``contextvars.copy_context()``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["Tracer", "Span", "NullTracer", "NullSpan"]


@runtime_checkable
class Span(Protocol):
    """A span being recorded. Attribute names follow OpenTelemetry GenAI where they fit."""

    span_id: str | None

    def set(self, **attributes: Any) -> None:
        """Adds JSON-serialisable attributes."""
        ...

    def record_usage(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        model: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """Adds token counts (summed if called twice) and the model and finish reason."""
        ...

    def add_candidates(self, candidates: list[dict[str, Any]]) -> None:
        """Records candidates with their verdicts (text, answer, correct, score, reason, tokens)."""
        ...


@runtime_checkable
class Tracer(Protocol):
    """Opens spans. ``trace_id`` identifies the run they belong to (None: not recorded)."""

    trace_id: str | None

    def span(self, kind: str, name: str, **attributes: Any) -> AbstractContextManager[Span]:
        """Opens a child of the current span; an exception leaving it marks it an error."""
        ...


class NullSpan:
    span_id = None

    def set(self, **attributes: Any) -> None:
        pass

    def record_usage(self, **kwargs: Any) -> None:
        pass

    def add_candidates(self, candidates: list[dict[str, Any]]) -> None:
        pass

    def __enter__(self) -> "NullSpan":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class NullTracer:
    """Records nothing: for library use without a store, and for tests."""

    trace_id = None

    def span(self, kind: str, name: str, **attributes: Any) -> NullSpan:
        return NullSpan()
