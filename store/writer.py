"""The trace store writer: runs committed at once, spans and candidates batched.

Spans and candidates are buffered in memory and written by a background thread at
least every ``flush_interval_s`` (200 ms) or as soon as ``max_pending`` (500) records
wait, and always by :meth:`TraceStore.flush`, :meth:`TraceStore.end_run` and
:meth:`TraceStore.close`. What a flush has committed survives a SIGKILL; what it could
not write stays pending and the next flush retries it (and raises if it fails again).

Runs record the process that drives them, whose daemon thread renews their heartbeat
(see ``store.liveness``). A job's result (:meth:`TraceStore.record_job`) is committed
together with every span buffered before it, in one transaction.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import TypeAdapter
from sqlalchemy import Connection, Engine, Insert, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ttc.store import queries
from ttc.store.engine import (
    StoreError,
    make_engine,
    migrate,
    resolve_db_url,
    write_transaction,
)
from ttc.store.durable import DurableRuns, RunTakenOver
from ttc.store.liveness import HEARTBEAT_INTERVAL_S, ProcessIdentity
from ttc.store.queries import RunNotFound
from ttc.store.records import (
    CandidateRecord,
    RunDetail,
    RunRecord,
    SpanRecord,
    StatsRecord,
    new_trace_id,
    utcnow,
)
from ttc.store.schema import Candidate, Run, Span

__all__ = ["RunTakenOver", "TraceStore"]

log = logging.getLogger("ttc.store")

# mode="json" turns tuples into lists and NaN/inf into null (PostgreSQL's JSONB rejects
# NaN), and rejects what JSON cannot hold in the caller's thread rather than at flush.
_JSON_ATTRS = TypeAdapter(dict[str, Any])
_MAX_BACKOFF_S = 5.0


def _json_attrs(attributes: dict[str, Any] | None) -> dict[str, Any]:
    return _JSON_ATTRS.dump_python(attributes or {}, mode="json")


def _insert_spans(dialect_name: str) -> Insert:
    # Span ids are primary keys, so a retry of a batch whose commit was acknowledged
    # too late for us to see (a dropped connection) must skip, not fail forever.
    table = Span.__table__
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"])
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
    return insert(table)


class TraceStore(DurableRuns):
    """Writes runs, spans and candidates; reads them back.

    Thread-safe: any thread may record. Use as a context manager, or call
    :meth:`close`; a store still open at interpreter exit is closed (and flushed) then.

    Args:
        engine: An engine whose database is migrated (see :meth:`open`).
        flush_interval_s: Longest time a buffered record waits before being written.
        max_pending: Number of buffered records that triggers a write at once.
        heartbeat_interval_s: How often the runs this store started are heartbeat.
        clock: The current UTC time (injectable in tests).
        identity: The process recorded as the runs' owner (default: this one; tests
            inject another host or pid).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval_s: float = 0.2,
        max_pending: int = 500,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], datetime] = utcnow,
        identity: ProcessIdentity | None = None,
    ) -> None:
        self.engine = engine
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self._identity = identity
        self._owned: set[str] = set()  # running runs this store heartbeats
        self._beat_thread: threading.Thread | None = None
        self._beat_stop = threading.Event()
        self._lock = threading.Lock()  # guards the buffers and the state flags
        self._flush_lock = threading.Lock()  # one write at a time: keeps records in order
        self._spans: list[dict[str, Any]] = []
        self._candidates: list[dict[str, Any]] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self.last_error: StoreError | None = None
        # A weak reference, so that registering for exit keeps no store alive.
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        flush_interval_s: float = 0.2,
        max_pending: int = 500,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], datetime] = utcnow,
        identity: ProcessIdentity | None = None,
        **engine_options: Any,
    ) -> Self:
        """Open the store at ``url``, creating or upgrading its schema on first use.

        Args:
            url: SQLAlchemy URL; None means ``TTC_DB``, then ``sqlite:///ttc.db``.
            flush_interval_s, max_pending, heartbeat_interval_s, clock, identity: See
                the class.
            **engine_options: Passed to :func:`store.engine.make_engine`.

        Raises:
            BadDatabaseURL: The URL is not valid (exit code 2).
            StoreError: The database is unreachable or cannot be migrated.
        """
        engine = make_engine(resolve_db_url(url), **engine_options)
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, flush_interval_s=flush_interval_s, max_pending=max_pending,
                   heartbeat_interval_s=heartbeat_interval_s, clock=clock, identity=identity)

    # -- writing ---------------------------------------------------------------------

    def start_run(
        self,
        kind: str,
        name: str,
        attributes: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Create a run with status "running", owned by this process, committed immediately.

        The run is heartbeat until :meth:`end_run` (or :meth:`close`).

        Args:
            kind: What the run is ("generate", "solve", "batch", "bench", ...).
            name: Human-readable label.
            attributes: JSON attributes.
            run_id: Id to use (at most 32 characters); a new trace id by default.

        Returns:
            The run id.
        """
        me = self.identity
        now = self.clock()
        record = RunRecord(id=run_id or new_trace_id(), kind=kind, name=name, created_at=now,
                           host=me.host, pid=me.pid, pid_start=me.start, heartbeat_at=now)
        row = record.model_dump(exclude={"attributes"})
        row["attributes"] = _json_attrs(attributes)
        self._check_open()
        with self._flush_lock, write_transaction(self.engine) as conn:
            conn.execute(insert(Run.__table__), [row])
        self._own(record.id)
        return record.id

    def add_span(self, span: SpanRecord) -> None:
        """Buffer a span; it is written within ``flush_interval_s``."""
        row = span.model_dump(exclude={"attributes"})
        row["attributes"] = _json_attrs(span.attributes)
        self._buffer(spans=[row])

    def add_candidates(self, candidates: Iterable[CandidateRecord]) -> None:
        """Buffer candidates; they are written within ``flush_interval_s``."""
        rows = []
        for candidate in candidates:
            row = candidate.model_dump(exclude={"id", "attributes"})
            row["attributes"] = _json_attrs(candidate.attributes)
            rows.append(row)
        self._buffer(candidates=rows)

    def flush(self) -> None:
        """Write every buffered record now.

        Raises:
            StoreError: The write failed; the records stay buffered for the next try.
        """
        with self._flush_lock:
            self._write_pending()

    def end_run(
        self,
        run_id: str,
        status: Literal["ok", "error", "interrupted"] = "ok",
        error: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        attributes_update: dict[str, Any] | None = None,
    ) -> None:
        """Flush buffered records and mark the run ended, in one transaction.

        Args:
            run_id: Full id of the run.
            status: "ok", "error" or "interrupted" (stopped by a signal).
            error: One-line error message.
            input_tokens: Run total; None sums the run's llm spans.
            output_tokens: Run total; None sums the run's llm spans.
            attributes_update: Keys merged into the run's attributes.

        Raises:
            RunNotFound: No run has this id (buffered records are kept).
            RunTakenOver: Another process resumed the run; it is left as it is.
            StoreError: The write failed; records stay buffered, the run stays open.
        """
        if status not in ("ok", "error", "interrupted"):
            raise ValueError(f"status must be 'ok', 'error' or 'interrupted', not {status!r}")
        update_attrs = _json_attrs(attributes_update) if attributes_update else None
        me = self.identity

        def finish(conn: Connection) -> None:
            row = conn.execute(
                select(Run.attributes, Run.host, Run.pid, Run.pid_start)
                .where(Run.id == run_id)
                .with_for_update()
            ).first()
            if row is None:
                raise RunNotFound(f"no run {run_id!r}")
            if row.pid is not None and (row.host, row.pid, row.pid_start) != (me.host, me.pid, me.start):
                raise RunTakenOver(f"run {run_id} is now driven by pid {row.pid} on {row.host}")
            values: dict[str, Any] = {"status": status, "error": error, "ended_at": utcnow()}
            sums: Any = (0, 0)
            if input_tokens is None or output_tokens is None:
                sums = conn.execute(
                    select(
                        func.coalesce(func.sum(Span.input_tokens), 0),
                        func.coalesce(func.sum(Span.output_tokens), 0),
                    ).where(Span.run_id == run_id, Span.kind == "llm")
                ).one()
            values["input_tokens"] = int(sums[0]) if input_tokens is None else input_tokens
            values["output_tokens"] = int(sums[1]) if output_tokens is None else output_tokens
            if update_attrs:
                values["attributes"] = {**row.attributes, **update_attrs}
            conn.execute(update(Run.__table__).where(Run.id == run_id).values(**values))

        self._check_open()
        with self._flush_lock:
            self._write_pending(finish)
        self._disown(run_id)

    def close(self) -> None:
        """Stop the background writer, flush, and release the engine. Idempotent.

        Raises:
            StoreError: The final flush failed; its records are lost.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = self._stopping = True
            thread = self._thread
        atexit.unregister(self._atexit)
        self._wake.set()
        self._beat_stop.set()
        if thread is not None:
            thread.join()
        if self._beat_thread is not None:
            self._beat_thread.join()
        try:
            self.flush()
        finally:
            self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Number of buffered records not yet written."""
        with self._lock:
            return len(self._spans) + len(self._candidates)

    # -- reading ---------------------------------------------------------------------

    def list_runs(
        self, limit: int = 20, kind: str | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """Newest runs first; see :func:`store.queries.list_runs`."""
        self._flush_if_pending()
        return queries.list_runs(self.engine, limit=limit, kind=kind, status=status, now=self.clock())

    def get_run(self, run_id: str) -> RunDetail:
        """A run with its spans and candidates; see :func:`store.queries.get_run`."""
        self._flush_if_pending()
        return queries.get_run(self.engine, run_id, now=self.clock())

    def stats(self, kind: str | None = None) -> StatsRecord:
        """Aggregates over runs and spans; see :func:`store.queries.stats`."""
        self._flush_if_pending()
        return queries.stats(self.engine, kind=kind, now=self.clock())

    # -- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the trace store is closed")

    def _buffer(
        self,
        spans: list[dict[str, Any]] | None = None,
        candidates: list[dict[str, Any]] | None = None,
    ) -> None:
        with self._lock:
            self._check_open()
            self._spans.extend(spans or ())
            self._candidates.extend(candidates or ())
            pending = len(self._spans) + len(self._candidates)
            full = pending >= self.max_pending
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run_writer, name="ttc-store-writer", daemon=True
                )
                self._thread.start()
        if full:
            self._wake.set()
        if pending >= 2 * self.max_pending:
            # Back-pressure: a burst faster than the writer thread would otherwise pile up
            # tens of thousands of records that a SIGKILL loses; the caller writes them now.
            try:
                self.flush()
            except StoreError:
                pass  # kept pending; the writer thread retries and reports it

    def _flush_if_pending(self) -> None:
        if self.pending:
            self.flush()

    def _write_pending(self, then: Callable[[Connection], None] | None = None) -> None:
        # Callers hold _flush_lock, so records put back after a failure are still the
        # oldest ones and no other write can overtake them.
        with self._lock:
            spans, candidates = self._spans, self._candidates
            self._spans, self._candidates = [], []
        if not spans and not candidates and then is None:
            return
        try:
            with write_transaction(self.engine) as conn:
                if spans:
                    conn.execute(_insert_spans(conn.dialect.name), spans)
                if candidates:
                    conn.execute(insert(Candidate.__table__), candidates)
                if then is not None:
                    then(conn)
        except BaseException as exc:
            with self._lock:
                self._spans[:0] = spans
                self._candidates[:0] = candidates
            if isinstance(exc, StoreError) and not isinstance(exc, (RunNotFound, RunTakenOver)):
                n = len(spans) + len(candidates)
                raise StoreError(f"{exc} ({n} trace records kept pending)") from exc
            raise

    def _run_writer(self) -> None:
        delay = self.flush_interval_s
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                return  # close() does the final flush in its caller's thread
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - kept for the next flush to raise
                if self.last_error is None:
                    log.warning("trace store write failed, will retry: %s", exc)
                self.last_error = exc if isinstance(exc, StoreError) else StoreError(str(exc))
                delay = min(max(delay, 0.05) * 2, _MAX_BACKOFF_S)
            else:
                self.last_error = None
                delay = self.flush_interval_s


def _close_at_exit(ref: weakref.ref[TraceStore]) -> None:
    store = ref()
    if store is not None:
        try:
            store.close()
        except StoreError as exc:
            log.error("trace store: %s", exc)
