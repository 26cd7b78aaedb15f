"""Read queries over the trace store: list, show and aggregate runs.

:class:`store.writer.TraceStore` exposes these as methods; they are plain functions of
an engine so that readers (``ttc traces ...``) need no writer thread.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from ttc.store.engine import StoreError, translate_errors, write_transaction
from ttc.store.liveness import ProcessIdentity, is_gone
from ttc.store.records import (
    CandidateRecord,
    JobRecord,
    ModelStats,
    RunDetail,
    RunRecord,
    SpanRecord,
    StatsRecord,
    utcnow,
)
from ttc.store.schema import Candidate, Job, Run, Span

__all__ = [
    "MIN_PREFIX",
    "RunNotFound",
    "get_run",
    "get_run_record",
    "list_jobs",
    "list_runs",
    "reap_runs",
    "resolve_run_id",
    "stats",
]

#: Shortest id prefix accepted in place of a full run id (like git's short hashes).
MIN_PREFIX = 6


class RunNotFound(StoreError):
    """No run has the given id, or a prefix matches none or several runs."""

    exit_code = 2


def reap_runs(
    engine: Engine, *, now: datetime | None = None, here: ProcessIdentity | None = None
) -> list[str]:
    """Mark ``interrupted`` every ``running`` run whose process is gone.

    The rule is :func:`store.liveness.is_gone`. The change is persisted, so filters and
    counts by status agree with what is shown; each update is conditional on the owner
    and heartbeat the decision saw, so a run that was resumed or heartbeat in between
    keeps running.

    Args:
        engine: Store engine.
        now: The reader's clock (default: now).
        here: The reading process (default: this one).

    Returns:
        Ids of the runs marked interrupted.
    """
    now = now or utcnow()
    here = here or ProcessIdentity.current()
    query = select(Run.id, Run.host, Run.pid, Run.pid_start, Run.heartbeat_at, Run.created_at).where(
        Run.status == "running"
    )
    with translate_errors(engine), engine.connect() as conn:
        running = conn.execute(query).all()
    gone = [
        row for row in running
        if is_gone("running", row.host, row.pid, row.pid_start, row.heartbeat_at or row.created_at,
                   now=now, here=here)
    ]
    reaped = []
    if not gone:
        return reaped
    with write_transaction(engine) as conn:
        for row in gone:
            where = "pid" if row.pid is not None and here.same_machine(row.host, row.pid_start) else "heartbeat"
            changed = conn.execute(
                update(Run.__table__)
                .where(
                    Run.id == row.id,
                    Run.status == "running",
                    Run.pid.is_not_distinct_from(row.pid),
                    Run.pid_start.is_not_distinct_from(row.pid_start),
                    Run.heartbeat_at.is_not_distinct_from(row.heartbeat_at),
                )
                .values(
                    status="interrupted",
                    # The last sign of life is the best estimate of when it stopped.
                    ended_at=row.heartbeat_at or row.created_at,
                    error=_gone_message(row, where),
                )
            ).rowcount
            if changed:
                reaped.append(row.id)
    return reaped


def _gone_message(row, where: str) -> str:
    owner = f"pid {row.pid} on {row.host}" if row.pid is not None else "its process"
    if where == "pid":
        return f"process gone ({owner})"
    return f"no heartbeat from {owner} for over 60 s"


def list_runs(
    engine: Engine,
    limit: int = 20,
    kind: str | None = None,
    status: str | None = None,
    *,
    now: datetime | None = None,
) -> list[RunRecord]:
    """Return the newest runs first.

    Runs whose process is gone are marked interrupted first (see :func:`reap_runs`).

    Args:
        engine: Store engine.
        limit: Maximum number of runs.
        kind: Only runs of this kind (e.g. "solve").
        status: Only runs with this status ("running", "ok", "error", "interrupted").
        now: The reader's clock, for the heartbeat rule (default: now).
    """
    reap_runs(engine, now=now)
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


def get_run_record(engine: Engine, run_id: str, *, now: datetime | None = None) -> RunRecord:
    """Return one run without its spans (status after :func:`reap_runs`).

    Raises:
        RunNotFound: See :func:`resolve_run_id`.
    """
    reap_runs(engine, now=now)
    with translate_errors(engine), Session(engine) as session:
        return RunRecord.model_validate(session.get_one(Run, resolve_run_id(session, run_id)))


def list_jobs(engine: Engine, run_id: str, status: str | None = None) -> list[JobRecord]:
    """Return a run's jobs in input order (``idx``, then key).

    Args:
        engine: Store engine.
        run_id: Full run id.
        status: Only jobs with this status ("ok" or "error").
    """
    query = select(Job).where(Job.run_id == run_id).order_by(Job.idx, Job.key)
    if status is not None:
        query = query.where(Job.status == status)
    with translate_errors(engine), Session(engine) as session:
        return [JobRecord.model_validate(job) for job in session.scalars(query)]


def get_run(engine: Engine, run_id: str, *, now: datetime | None = None) -> RunDetail:
    """Return a run with its spans (by start time) and candidates (by span, index).

    Args:
        engine: Store engine.
        run_id: Full run id, or a unique prefix of at least :data:`MIN_PREFIX` characters.
        now: The reader's clock, for the heartbeat rule (default: now).

    Raises:
        RunNotFound: See :func:`resolve_run_id`.
    """
    reap_runs(engine, now=now)
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


def stats(engine: Engine, kind: str | None = None, *, now: datetime | None = None) -> StatsRecord:
    """Aggregate runs and spans.

    Token totals and the per-model breakdown count llm spans only, so that a strategy
    span summing its children is not counted twice.

    Args:
        engine: Store engine.
        kind: Only runs of this kind (and their spans).
        now: The reader's clock, for the heartbeat rule (default: now).
    """
    reap_runs(engine, now=now)
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
