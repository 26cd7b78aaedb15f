"""The Orchestrator's trace queries: what its runs recorded, as plain records.

A mixin of :class:`~orchestrator.api.Orchestrator`: each method flushes the store's
buffered spans and reads through ``ttc.store`` (``queries``, ``analysis``, ``export``).
Filters are keywords: ``kind``, ``status``, ``task``, ``strategy``, ``model``, ``stage``,
``since``/``until`` (a datetime, an ISO time or an age such as ``"2h"``) and ``limit``.
``ttc.store.to_dataframe`` turns any result into a pandas DataFrame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ttc.store import (
    CompareRecord,
    GroupedStats,
    OutcomeRecord,
    RunDetail,
    RunPoint,
    RunRecord,
    SpanRecord,
    StatsRecord,
    TraceStore,
)
from ttc.store import analysis, export

__all__ = ["TraceQueries"]


class TraceQueries:
    """Trace queries over ``self.store``."""

    store: TraceStore

    def _filters(self, filters: dict[str, Any]):
        self.store.flush()
        return analysis.make_filter(now=self.store.clock(), **filters)

    def list_runs(self, limit: int = 20, kind: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Recent runs, newest first."""
        return self.store.list_runs(limit=limit, kind=kind, status=status)

    def get_run(self, run_id: str) -> RunDetail:
        """One run (id or unique prefix) with its spans and candidates."""
        return self.store.get_run(run_id)

    def stats(self, kind: str | None = None) -> StatsRecord:
        """Store totals: runs by status, tokens per model, spans per kind."""
        return self.store.stats(kind=kind)

    def query_runs(self, **filters: Any) -> list[RunRecord]:
        """Runs matching the filters, newest first."""
        f = self._filters(filters)
        return analysis.query_runs(self.store.engine, f, now=self.store.clock())

    def outcomes(self, run_ids: Sequence[str] | None = None, **filters: Any) -> list[OutcomeRecord]:
        """Graded units (eval problems, batch jobs, graph stages) of the given or matching runs."""
        f = self._filters(filters)
        return analysis.query_outcomes(self.store.engine, f, run_ids=run_ids, now=self.store.clock())

    def stats_by(self, by: str | None = None, **filters: Any) -> GroupedStats:
        """Accuracy, tokens, FLOPs and latency p50/p95 per strategy, model, stage, task or kind."""
        f = self._filters(filters)
        return analysis.stats_by(self.store.engine, by, f, now=self.store.clock())

    def run_points(self, run_ids: Sequence[str] | None = None, **filters: Any) -> list[RunPoint]:
        """Accuracy against mean tokens and FLOPs, one point per run (what ``traces plot`` draws)."""
        f = self._filters(filters)
        return analysis.run_points(self.store.engine, f, run_ids=run_ids, now=self.store.clock())

    def compare_runs(self, a: str, b: str) -> CompareRecord:
        """Two runs problem by problem: both correct, only one, neither (with McNemar's p)."""
        self.store.flush()
        return analysis.compare_runs(self.store.engine, a, b, now=self.store.clock())

    def export_spans(self, run_ids: Sequence[str] | None = None, **filters: Any) -> Iterator[SpanRecord]:
        """The spans of the given or matching runs (``ttc.store.write_spans`` writes them as jsonl, csv or OTLP)."""
        f = self._filters(filters)
        return export.export_spans(self.store.engine, f, run_ids=run_ids, now=self.store.clock())
