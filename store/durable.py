"""Durable runs: owners, heartbeats, claims and jobs (a mixin of ``TraceStore``).

A run records the process that drives it and this store's daemon thread renews its
heartbeat every ``heartbeat_interval_s`` until the run ends, so readers can tell a run
whose process is gone (``store.liveness``). A job (an eval's problem, a batch line) is
committed with :meth:`DurableRuns.record_job` in one transaction with every span
buffered before it; :meth:`DurableRuns.claim_run` hands an ended run to a resuming
process, so the store alone says what is left to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, Engine, Insert, update
from sqlalchemy.dialects import postgresql, sqlite

from ttc.store import queries
from ttc.store.engine import StoreError, write_transaction
from ttc.store.liveness import ProcessIdentity
from ttc.store.records import JobRecord, RunRecord
from ttc.store.schema import Job, Run

__all__ = ["DurableRuns", "RunTakenOver"]

log = logging.getLogger("ttc.store")

# As for attributes: JSON-safe (NaN to null, which JSONB needs) in the caller's thread.
_JSON = TypeAdapter(dict[str, Any] | None)


class RunTakenOver(StoreError):
    """The run is now driven by another process (it was resumed elsewhere)."""


def _owned_by(identity: ProcessIdentity) -> tuple[Any, ...]:
    return (
        Run.host == identity.host,
        Run.pid == identity.pid,
        Run.pid_start.is_not_distinct_from(identity.start),
    )


def _insert_job(dialect_name: str, row: dict[str, Any]) -> Insert:
    # (run_id, key) is unique: of two processes finishing the same job, one row wins.
    table = Job.__table__
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    # RETURNING says whether a row went in (psycopg reports no rowcount for an insert).
    return (dialect.insert(table).values(**row).on_conflict_do_nothing(index_elements=["run_id", "key"])
            .returning(table.c.id))


class DurableRuns:
    """Run ownership, heartbeat and jobs; mixed into :class:`store.writer.TraceStore`,
    whose buffers, locks and ``_write_pending`` it shares."""

    engine: Engine
    clock: Callable[[], datetime]
    heartbeat_interval_s: float
    _identity: ProcessIdentity | None
    _lock: threading.Lock
    _flush_lock: threading.Lock
    _owned: set[str]
    _beat_thread: threading.Thread | None
    _beat_stop: threading.Event
    _stopping: bool

    @property
    def identity(self) -> ProcessIdentity:
        """The process this store records as the owner of the runs it starts."""
        return self._identity or ProcessIdentity.current()

    def claim_run(self, run_id: str, expect_status: str) -> bool:
        """Make this process the owner of an ended run and mark it running again.

        Compare-and-set: of several processes claiming the same run, one wins.

        Args:
            run_id: Full id of the run.
            expect_status: The status the caller saw ("interrupted", "error"); the claim
                fails if the run has changed since.

        Returns:
            Whether this process now owns the run.
        """
        me = self.identity
        self._check_open()
        with self._flush_lock, write_transaction(self.engine) as conn:
            claimed = conn.execute(
                update(Run.__table__)
                .where(Run.id == run_id, Run.status == expect_status)
                .values(status="running", error=None, ended_at=None, host=me.host, pid=me.pid,
                        pid_start=me.start, heartbeat_at=self.clock())
            ).rowcount
        if claimed:
            self._own(run_id)
        return bool(claimed)

    def record_job(self, job: JobRecord) -> bool:
        """Commit a finished job, with every record buffered before it, in one transaction.

        A job already stored ``ok`` is kept (a job is never done twice); an ``error`` row
        is replaced and the new row's ``attempts`` (default 1) added to its count.

        Returns:
            Whether this row was written (False: the job was already stored ok).

        Raises:
            StoreError: The write failed; nothing of it is committed.
        """
        row = job.model_dump()
        row["result"] = _JSON.dump_python(job.result, mode="json")
        written = False

        def write(conn: Connection) -> None:
            nonlocal written
            if conn.execute(_insert_job(conn.dialect.name, row)).first() is not None:
                written = True
                return
            retry = {k: v for k, v in row.items() if k not in ("run_id", "key", "attempts")}
            written = bool(conn.execute(
                update(Job.__table__)
                .where(Job.run_id == job.run_id, Job.key == job.key, Job.status != "ok")
                .values(**retry, attempts=Job.attempts + job.attempts)
            ).rowcount)

        self._check_open()
        with self._flush_lock:
            self._write_pending(write)
        return written

    def get_run_record(self, run_id: str) -> RunRecord:
        """One run without its spans; see :func:`store.queries.get_run_record`."""
        return queries.get_run_record(self.engine, run_id, now=self.clock())

    def list_jobs(self, run_id: str, status: str | None = None) -> list[JobRecord]:
        """A run's jobs in input order; see :func:`store.queries.list_jobs`."""
        return queries.list_jobs(self.engine, run_id, status=status)

    # -- heartbeat -------------------------------------------------------------------

    def _own(self, run_id: str) -> None:
        with self._lock:
            self._owned.add(run_id)
            if self._beat_thread is None and not self._stopping:
                self._beat_thread = threading.Thread(
                    target=self._run_heartbeat, name="ttc-store-heartbeat", daemon=True
                )
                self._beat_thread.start()

    def _disown(self, run_id: str) -> None:
        with self._lock:
            self._owned.discard(run_id)

    def beat(self) -> None:
        """Renew the heartbeat of the running runs this process owns (the thread's job).

        Raises:
            StoreError: The write failed.
        """
        with self._lock:
            owned = sorted(self._owned)
        if not owned:
            return
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(Run.__table__)
                .where(Run.id.in_(owned), Run.status == "running", *_owned_by(self.identity))
                .values(heartbeat_at=self.clock())
            )

    def _run_heartbeat(self) -> None:
        while not self._beat_stop.wait(self.heartbeat_interval_s):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - readers fall back to the pid rule or wait
                log.warning("trace store heartbeat failed, will retry: %s", exc)
