"""Read queries over the trace store: list, show and aggregate runs.

:class:`store.writer.TraceStore` exposes these as methods; they are plain functions of
an engine so that readers (``ttc traces ...``) need no writer thread.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ttc.store.engine import StoreError, translate_errors
from ttc.store.records import (
    CandidateRecord,
    ModelStats,
    RunDetail,
    RunRecord,
    SpanRecord,
    StatsRecord,
)
from ttc.store.schema import Candidate, Run, Span

__all__ = ["MIN_PREFIX", "RunNotFound", "get_run", "list_runs", "resolve_run_id", "stats"]

#: Shortest id prefix accepted in place of a full run id (like git's short hashes).
MIN_PREFIX = 6


class RunNotFound(StoreError):
    """No run has the given id, or a prefix matches none or several runs."""

    exit_code = 2


def list_runs(
    engine: Engine, limit: int = 20, kind: str | None = None, status: str | None = None
) -> list[RunRecord]:
    """Return the newest runs first.

    Args:
        engine: Store engine.
        limit: Maximum number of runs.
        kind: Only runs of this kind (e.g. "solve").
        status: Only runs with this status ("running", "ok", "error").
    """
    query = select(Run).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(Run.kind == kind)
    if status is not None:
        query = query.where(Run.status == status)
    with translate_errors(engine), Session(engine) as session:
        return [RunRecord.model_validate(run) for run in session.scalars(query)]


def resolve_run_id(session: Session, run_id: str) -> str:
    """Return the full id of the run named by ``run_id`` or by a unique prefix of it.

    Raises:
        RunNotFound: No run matches, several do, or the prefix is too short.
    """
    if session.get(Run, run_id) is not None:
        return run_id
    if len(run_id) < MIN_PREFIX:
        raise RunNotFound(
            f"no run {run_id!r} (give the full id or at least {MIN_PREFIX} characters of it)"
        )
    matches = session.scalars(
        select(Run.id).where(Run.id.startswith(run_id, autoescape=True)).limit(2)
    ).all()
    if not matches:
        raise RunNotFound(f"no run {run_id!r}")
    if len(matches) > 1:
        raise RunNotFound(f"run id prefix {run_id!r} is ambiguous; give more characters")
    return matches[0]


def get_run(engine: Engine, run_id: str) -> RunDetail:
    """Return a run with its spans (by start time) and candidates (by span, index).

    Args:
        engine: Store engine.
        run_id: Full run id, or a unique prefix of at least :data:`MIN_PREFIX` characters.

    Raises:
        RunNotFound: See :func:`resolve_run_id`.
    """
    with translate_errors(engine), Session(engine) as session:
        full_id = resolve_run_id(session, run_id)
        run = session.get_one(Run, full_id)
        spans = session.scalars(
            select(Span).where(Span.run_id == full_id).order_by(Span.started_at, Span.id)
        )
        candidates = session.scalars(
            select(Candidate).where(Candidate.run_id == full_id).order_by(Candidate.id)
        )
        return RunDetail(
            run=RunRecord.model_validate(run),
            spans=[SpanRecord.model_validate(span) for span in spans],
            candidates=[CandidateRecord.model_validate(c) for c in candidates],
        )


def stats(engine: Engine, kind: str | None = None) -> StatsRecord:
    """Aggregate runs and spans.

    Token totals and the per-model breakdown count llm spans only, so that a strategy
    span summing its children is not counted twice.

    Args:
        engine: Store engine.
        kind: Only runs of this kind (and their spans).
    """
    by_status = select(Run.status, func.count()).group_by(Run.status)
    by_model = (
        select(
            Span.model,
            func.count(),
            func.coalesce(func.sum(Span.input_tokens), 0),
            func.coalesce(func.sum(Span.output_tokens), 0),
            func.avg(Span.latency_s),
        )
        .where(Span.kind == "llm")
        .group_by(Span.model)
    )
    by_kind = select(Span.kind, func.count()).group_by(Span.kind)
    if kind is not None:
        by_status = by_status.where(Run.kind == kind)
        by_model = by_model.join(Run, Run.id == Span.run_id).where(Run.kind == kind)
        by_kind = by_kind.join(Run, Run.id == Span.run_id).where(Run.kind == kind)
    with translate_errors(engine), Session(engine) as session:
        runs_by_status = {status: n for status, n in session.execute(by_status)}
        models = [
            ModelStats(
                model=model,
                calls=calls,
                input_tokens=int(tokens_in),
                output_tokens=int(tokens_out),
                mean_latency_s=None if latency is None else float(latency),
            )
            for model, calls, tokens_in, tokens_out, latency in session.execute(by_model)
        ]
        span_kinds = {span_kind: n for span_kind, n in session.execute(by_kind)}
    models.sort(key=lambda m: (-m.calls, m.model or ""))
    return StatsRecord(
        runs=sum(runs_by_status.values()),
        runs_by_status=runs_by_status,
        input_tokens=sum(m.input_tokens for m in models),
        output_tokens=sum(m.output_tokens for m in models),
        models=models,
        span_kinds=dict(sorted(span_kinds.items())),
    )
