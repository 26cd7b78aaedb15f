"""Tests of the trace store on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from ttc.store import (
    DEFAULT_DB_URL,
    BadDatabaseURL,
    CandidateRecord,
    RunNotFound,
    SpanRecord,
    StoreError,
    TraceStore,
    get_run,
    list_runs,
    make_engine,
    migrate,
    resolve_db_url,
    utcnow,
)
from ttc.store.engine import MIGRATIONS_DIR
from ttc.store.schema import Base

REPO = Path(__file__).resolve().parents[1]
HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def reader(db_url):
    """An engine reading the test database independently of any TraceStore."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def span_count(engine: sa.Engine, run_id: str) -> int:
    return len(get_run(engine, run_id).spans)


def llm_span(run_id: str, **fields) -> SpanRecord:
    return SpanRecord(run_id=run_id, kind="llm", name="chat", **fields)


# -- schema and migrations -------------------------------------------------------------


def test_migrates_on_first_use_and_reopens(db_url, reader):
    with TraceStore.open(db_url) as store:
        run_id = store.start_run("solve", "first")
    tables = set(sa.inspect(reader).get_table_names())
    assert {"runs", "spans", "candidates", "alembic_version"} <= tables
    with TraceStore.open(db_url) as store:
        assert store.get_run(run_id).run.name == "first"
    migrate(reader)
    with reader.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
        assert list(versions) == [HEAD]


def test_mappings_match_the_migrations(db_url, reader):
    migrate(reader)
    with reader.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_concurrent_first_open_migrates_once(db_url, reader):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            TraceStore.open(db_url).close()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with reader.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
        assert list(versions) == [HEAD]


def test_upgrade_from_0001_keeps_runs_and_ownerless_running_runs_read_interrupted(db_url, reader):
    from alembic import command
    from alembic.config import Config

    from ttc.store.schema import JSONType, UTCDateTime

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    runs = sa.table("runs", *(sa.column(c) for c in ("id", "kind", "name", "status", "input_tokens", "output_tokens")),
                    sa.column("attributes", JSONType), sa.column("created_at", UTCDateTime()))
    long_ago = utcnow() - timedelta(hours=2)
    with reader.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        for run_id, status in (("old-running", "running"), ("old-ok", "ok")):
            conn.execute(sa.insert(runs).values(id=run_id, kind="solve", name="n", status=status, input_tokens=0,
                                                output_tokens=0, attributes={}, created_at=long_ago))
    migrate(reader)
    with reader.connect() as conn:
        assert list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()) == [HEAD]
    # A run from before owners were recorded cannot be heartbeat: older than 60 s, it is gone.
    assert {r.id: r.status for r in list_runs(reader)} == {"old-running": "interrupted", "old-ok": "ok"}


# -- runs, spans, candidates -----------------------------------------------------------


def test_run_lifecycle(db_url):
    with TraceStore.open(db_url) as store:
        run_id = store.start_run("solve", "countdown", attributes={"seed": 3})
        assert len(run_id) == 32 and int(run_id, 16) >= 0
        run = store.get_run(run_id).run
        assert (run.status, run.ended_at, run.attributes) == ("running", None, {"seed": 3})
        assert run.created_at.tzinfo == UTC
        assert abs(run.created_at - utcnow()) < timedelta(minutes=1)

        store.end_run(run_id, input_tokens=5, output_tokens=7, attributes_update={"answer": "42"})
        run = store.get_run(run_id).run
        assert (run.status, run.input_tokens, run.output_tokens) == ("ok", 5, 7)
        assert run.attributes == {"seed": 3, "answer": "42"}
        assert run.ended_at is not None and run.ended_at >= run.created_at

        failed = store.start_run("generate", "boom", run_id="f" * 32)
        assert failed == "f" * 32
        store.end_run(failed, status="error", error="backend unreachable")
        run = store.get_run(failed).run
        assert (run.status, run.error) == ("error", "backend unreachable")

        with pytest.raises(RunNotFound):
            store.end_run("0" * 32)


def test_spans_and_candidates_round_trip(db_url):
    # A long interval leaves the flushing to end_run.
    with TraceStore.open(db_url, flush_interval_s=3600) as store:
        run_id = store.start_run("solve", "countdown")
        t0 = utcnow()
        root = SpanRecord(run_id=run_id, kind="run", name="solve", started_at=t0)
        stage = SpanRecord(
            run_id=run_id, parent_id=root.id, kind="stage", name="plan",
            started_at=t0 + timedelta(milliseconds=1),
        )
        calls = [
            llm_span(
                run_id, parent_id=stage.id, model="tiny-dfs", input_tokens=10 + i,
                output_tokens=20 + i, finish_reason="stop,length", latency_s=0.25,
                started_at=t0 + timedelta(milliseconds=2 + i),
                ended_at=t0 + timedelta(milliseconds=3 + i),
                attributes={
                    "gen_ai.request.temperature": 0.7,
                    "gen_ai.request.max_tokens": 64,
                    "nested": {"ok": [1, 2.5, None, "é✓"]},
                },
            )
            for i in range(2)
        ]
        # Children end, and are recorded, before their parents.
        for span in [*calls, stage, root]:
            store.add_span(span)
        candidates = [
            CandidateRecord(
                run_id=run_id, span_id=calls[i].id, idx=i, text=f"text {i}",
                answer=None if i else "3+4", correct=[True, None][i], score=[1.0, None][i],
                reason="hits target" if i == 0 else "", tokens=20 + i,
                attributes={"expr": ["3", "+", "4"]},
            )
            for i in range(2)
        ]
        store.add_candidates(candidates)
        assert store.pending == 6
        store.end_run(run_id)
        assert store.pending == 0

        detail = store.get_run(run_id)
    assert detail.spans == [root, stage, *calls]
    assert [c.model_dump(exclude={"id"}) for c in detail.candidates] == [
        c.model_dump(exclude={"id"}) for c in candidates
    ]
    assert all(c.id is not None for c in detail.candidates)
    parents = {span.id: span.parent_id for span in detail.spans}
    assert parents[calls[0].id] == stage.id and parents[stage.id] == root.id
    # Without explicit totals, end_run sums the llm spans.
    assert (detail.run.input_tokens, detail.run.output_tokens) == (21, 41)


def test_list_runs_newest_first_with_filters(db_url):
    with TraceStore.open(db_url) as store:
        ids = [store.start_run(kind, "run") for kind in ["solve", "bench", "solve"]]
        store.end_run(ids[0])
        assert [r.id for r in store.list_runs()] == ids[::-1]
        assert [r.id for r in store.list_runs(limit=2)] == ids[:0:-1]
        assert [r.id for r in store.list_runs(kind="solve")] == [ids[2], ids[0]]
        assert [r.id for r in store.list_runs(status="ok")] == [ids[0]]
        assert store.list_runs(kind="solve", status="error") == []


def test_stats(db_url):
    with TraceStore.open(db_url) as store:
        solve = store.start_run("solve", "a")
        bench = store.start_run("bench", "b")
        for run_id, model, tokens_in, latency in [
            (solve, "small", 10, 1.0), (solve, "small", 30, 3.0), (bench, "large", 100, None)
        ]:
            store.add_span(
                llm_span(run_id, model=model, input_tokens=tokens_in,
                         output_tokens=tokens_in // 2, latency_s=latency)
            )
        store.add_span(SpanRecord(run_id=solve, kind="verifier", name="v", input_tokens=999))
        store.end_run(solve)

        everything = store.stats()
        assert everything.runs == 2
        assert everything.runs_by_status == {"ok": 1, "running": 1}
        assert (everything.input_tokens, everything.output_tokens) == (140, 70)
        assert everything.span_kinds == {"llm": 3, "verifier": 1}
        small, large = everything.models
        assert (small.model, small.calls, small.input_tokens) == ("small", 2, 40)
        assert small.output_tokens == 20
        assert small.mean_latency_s == pytest.approx(2.0)
        assert (large.model, large.calls, large.mean_latency_s) == ("large", 1, None)

        solve_only = store.stats(kind="solve")
        assert (solve_only.runs, solve_only.input_tokens) == (1, 40)
        assert [m.model for m in solve_only.models] == ["small"]
        assert solve_only.span_kinds == {"llm": 2, "verifier": 1}


def test_run_id_prefix_lookup(db_url):
    with TraceStore.open(db_url) as store:
        first = store.start_run("solve", "a", run_id="abcdef01" + "0" * 24)
        store.start_run("solve", "b", run_id="abcdef02" + "0" * 24)
        assert store.get_run("abcdef01").run.id == first
        assert store.get_run(first).run.id == first
        for bad in ["abcdef0", "abc", "ffffff", "abcde%", "abcde_"]:
            with pytest.raises(RunNotFound) as info:
                store.get_run(bad)
            assert info.value.exit_code == 2


# -- URLs and connection errors --------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ttc.db",
        "",
        "://",
        "nosuchdb://host/db",
        "mysql://root@localhost/ttc",
        "sqlite+nosuchdriver:///x.db",
        "postgresql+nosuchdriver://u@h/db",
        "sqlite+aiosqlite:///x.db",
        "postgresql+psycopg://u:secret@h:notaport/db",
    ],
)
def test_bad_database_urls(url):
    with pytest.raises(BadDatabaseURL) as info:
        TraceStore.open(url or "   ")
    error = info.value
    assert error.exit_code == 2 and isinstance(error, ValueError)
    assert "\n" not in str(error) and "secret" not in str(error)
    if "://" not in url:
        assert "sqlite:///" in str(error)


def test_resolve_db_url_precedence(monkeypatch):
    monkeypatch.delenv("TTC_DB", raising=False)
    assert resolve_db_url(None) == DEFAULT_DB_URL
    monkeypatch.setenv("TTC_DB", "sqlite:///from-env.db")
    assert resolve_db_url(None) == "sqlite:///from-env.db"
    assert resolve_db_url("sqlite:///explicit.db") == "sqlite:///explicit.db"
    monkeypatch.setenv("TTC_DB", "from-env.db")
    with pytest.raises(BadDatabaseURL):
        resolve_db_url(None)


def test_unreachable_postgres_is_a_one_line_store_error():
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        TraceStore.open("postgresql+psycopg://postgres@127.0.0.1:1/test", connect_timeout_s=2)
    error = info.value
    assert not isinstance(error, BadDatabaseURL) and error.exit_code == 1
    assert "127.0.0.1" in str(error) and "\n" not in str(error)
    assert time.monotonic() - started < 30  # it must not hang


# -- buffering and durability ----------------------------------------------------------


def test_background_thread_flushes_without_being_asked(db_url, reader):
    with TraceStore.open(db_url) as store:
        run_id = store.start_run("solve", "bg")
        store.add_span(llm_span(run_id))
        store.add_candidates([CandidateRecord(run_id=run_id, text="x")])
        assert wait_for(lambda: store.pending == 0 and span_count(reader, run_id) == 1)
        assert len(get_run(reader, run_id).candidates) == 1


def test_flush_when_max_pending_is_reached(db_url, reader):
    with TraceStore.open(db_url, flush_interval_s=3600) as store:
        run_id = store.start_run("batch", "full")
        for _ in range(499):
            store.add_span(llm_span(run_id))
        assert store.pending == 499 and span_count(reader, run_id) == 0
        store.add_span(llm_span(run_id))
        assert wait_for(lambda: span_count(reader, run_id) == 500)
        assert store.pending == 0


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )


def test_sigkill_after_flush_loses_nothing_flushed(db_url, reader):
    child = run_python(
        """
        import sys, time
        from ttc.store import SpanRecord, TraceStore
        store = TraceStore.open(sys.argv[1], flush_interval_s=3600)
        run_id = store.start_run("batch", "killed")
        for i in range(100):
            store.add_span(SpanRecord(run_id=run_id, kind="llm", name=f"flushed {i}"))
        store.flush()
        for i in range(10):
            store.add_span(SpanRecord(run_id=run_id, kind="llm", name=f"buffered {i}"))
        print(run_id, flush=True)
        time.sleep(60)
        """,
        db_url,
    )
    try:
        run_id = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    detail = get_run(reader, run_id)
    # Its process is gone: the run reads as interrupted, never running.
    assert detail.run.status == "interrupted"
    assert sorted(s.name for s in detail.spans) == sorted(f"flushed {i}" for i in range(100))


def test_records_left_open_are_flushed_at_exit(db_url, reader):
    child = run_python(
        """
        import sys
        from ttc.store import SpanRecord, TraceStore
        store = TraceStore.open(sys.argv[1], flush_interval_s=3600)
        run_id = store.start_run("solve", "forgot to close")
        store.add_span(SpanRecord(run_id=run_id, kind="llm", name="late"))
        print(run_id, flush=True)
        """,
        db_url,
    )
    run_id = child.stdout.read().strip()
    assert child.wait(timeout=60) == 0
    child.stdout.close()
    assert span_count(reader, run_id) == 1


def test_two_stores_and_many_threads_lose_nothing(db_url, reader):
    stores = [TraceStore.open(db_url, flush_interval_s=0.01, max_pending=50) for _ in range(2)]
    run_ids: list[str] = []
    errors: list[BaseException] = []

    def work(store: TraceStore) -> None:
        try:
            run_id = store.start_run("batch", threading.current_thread().name)
            run_ids.append(run_id)
            for i in range(150):
                store.add_span(llm_span(run_id, input_tokens=1))
                if i % 3 == 0:
                    store.add_candidates([CandidateRecord(run_id=run_id, idx=i)])
            store.end_run(run_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    for run_id in run_ids:
        detail = get_run(reader, run_id)
        assert (len(detail.spans), len(detail.candidates)) == (150, 50)
        assert detail.run.input_tokens == 150


def test_failed_flush_keeps_records_pending(tmp_path):
    path = tmp_path / "locked.db"
    store = TraceStore.open(f"sqlite:///{path}", flush_interval_s=3600, busy_timeout_s=0.05)
    run_id = store.start_run("solve", "locked")
    for _ in range(3):
        store.add_span(llm_span(run_id))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock
    try:
        with pytest.raises(StoreError, match="3 trace records kept pending"):
            store.flush()
        with pytest.raises(StoreError):
            store.end_run(run_id)
        assert store.pending == 3
    finally:
        blocker.rollback()
        blocker.close()
    store.end_run(run_id)
    detail = store.get_run(run_id)
    assert (detail.run.status, len(detail.spans)) == ("ok", 3)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.add_span(llm_span(run_id))
