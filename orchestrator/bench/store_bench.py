"""``ttc bench store``: the trace store at scale, on SQLite and on PostgreSQL.

Three measurements per backend, each on scratch storage (a temporary SQLite file, and
scratch schemas of the PostgreSQL database at ``pg_url``, dropped at the end); ``TTC_DB``
is never read.

1. ``inserts``: the same ``n`` spans through :class:`TraceStore` (``add_span`` then
   ``flush``, default flush settings) vs the raw driver (``sqlite3`` / ``psycopg``: one
   ``executemany`` of a plain INSERT of all rows, one commit; the driver at its fastest) into
   an identically migrated empty table, on a connection with the store's settings. The raw
   side starts from the same :class:`SpanRecord` objects, so turning them into driver
   parameters is timed on both sides. Rounds alternate which side goes first;
   ``insert_vs_raw`` = median store rows/s over median raw rows/s (goal: at least 0.5).
2. ``stats``: a table of ``stats_n`` spans (bulk-filled, then analysed) read by
   :func:`ttc.store.queries.stats` (what ``ttc traces stats`` runs) vs one raw
   ``GROUP BY model`` scan of the llm spans; ``stats_vs_raw`` = median store seconds over
   median raw seconds (goal: at most 3). ``same_answer`` checks the two agree.
3. ``concurrent_writers`` (PostgreSQL): four spawned processes, each with its own
   TraceStore, write ``writer_n`` spans at once; ``lost`` = expected minus stored spans.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import queue
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .common import bench_header, write_result

__all__ = ["DEFAULT_PG_URL", "GOALS", "RAW_STATS_SQL", "make_spans", "run_store_bench"]

SEED = 0
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GOALS = {"insert_vs_raw_at_least": 0.5, "stats_vs_raw_at_most": 3}
WRITERS = 4
SPANS_PER_RUN = 100
RAW_STATS_SQL = ("SELECT model, count(*), sum(input_tokens), sum(output_tokens), avg(latency_s) "
                 "FROM spans WHERE kind = 'llm' GROUP BY model")
# A solve's trace: mostly llm and verifier calls under a few strategy and stage spans.
_KINDS = ("llm",) * 5 + ("verifier",) * 3 + ("strategy", "stage")
_MODELS = ("countdown-direct", "countdown-search", "sudoku-direct", "qwen2.5-0.5b-instruct")
_T0 = datetime(2025, 1, 1, tzinfo=UTC)
_SPAN_COLS = ("id", "run_id", "parent_id", "kind", "name", "model", "input_tokens", "output_tokens",
              "finish_reason", "latency_s", "started_at", "ended_at", "status", "error", "attributes")


def _span_id(i: int) -> str:
    # A bijection of 64-bit ints: unique, yet scattered over the key space like random ids.
    return f"{(i * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64:016x}"


def _span_values(i: int, run_id: str) -> dict[str, Any]:
    kind = _KINDS[i % len(_KINDS)]
    llm = kind == "llm"
    started = _T0 + timedelta(milliseconds=i)
    latency = 0.05 + (i * 7919 % 1000) / 1000
    return {
        "id": _span_id(i), "run_id": run_id, "parent_id": _span_id(i - i % 10) if i % 10 else None,
        "kind": kind, "name": "generate" if llm else kind, "model": _MODELS[i % 7 % 4] if llm else None,
        "input_tokens": 40 + i % 97 if llm else 0, "output_tokens": 1 + i * 31 % 256 if llm else 0,
        "finish_reason": "stop" if llm else None, "latency_s": latency, "started_at": started,
        "ended_at": started + timedelta(seconds=latency), "status": "ok", "error": None,
        "attributes": {"gen_ai.request.temperature": 0.7, "n": 1 + i % 16} if llm else {"step": i % 10},
    }


def make_spans(n: int, run_id: str, start: int = 0) -> list:
    """``n`` deterministic spans of one run (ids ``start`` ... ``start + n - 1``)."""
    from ttc.store.records import SpanRecord

    return [SpanRecord(**_span_values(i, run_id)) for i in range(start, start + n)]


def _schema_url(pg_url: str, schema: str) -> str:
    from sqlalchemy.engine import make_url

    # search_path set at connect: the store, its migrations and the raw driver all see
    # only the scratch schema, with no change to how ttc builds its engine.
    return make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


class _Scratch:
    """Scratch databases of one backend: files in a temporary directory, or schemas in PostgreSQL."""

    def __init__(self, backend: str, pg_url: str | None = None, sqlite_dir: Path | None = None) -> None:
        self.backend, self.pg_url, self.sqlite_dir = backend, pg_url, sqlite_dir
        self.prefix = f"ttc_bench_{uuid.uuid4().hex[:10]}"
        self.schemas: list[str] = []
        self._admin = None
        if backend == "postgresql":
            import sqlalchemy as sa

            self._admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")

    def new(self, name: str) -> str:
        """URL of a new, migrated, empty store called ``name``."""
        from ttc.store.engine import make_engine, migrate

        if self.backend == "sqlite":
            url = f"sqlite:///{self.sqlite_dir / f'{name}.db'}"
        else:
            schema = f"{self.prefix}_{name}"
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            self.schemas.append(schema)
            url = _schema_url(self.pg_url, schema)
        engine = make_engine(url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
        return url

    def server_version(self) -> str:
        if self._admin is None:
            return sqlite3.sqlite_version
        with self._admin.connect() as conn:
            return conn.exec_driver_sql("SHOW server_version").scalar()

    def drop(self) -> None:
        if self._admin is None:
            return
        with self._admin.connect() as conn:
            for schema in self.schemas:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self._admin.dispose()


def pg_unreachable(pg_url: str) -> str | None:
    """Why PostgreSQL at ``pg_url`` cannot be used, or None when it can."""
    import sqlalchemy as sa
    from ttc.store.engine import describe_location

    engine = sa.create_engine(pg_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as exc:
        why = " ".join(str(getattr(exc, "orig", exc)).split())  # one line: libpq adds a hint line
        return f"PostgreSQL at {describe_location(engine)} unreachable: {why}"
    finally:
        engine.dispose()
    return None


class _Raw:
    """The raw driver on a connection with the store's settings (made by ttc's engine, used directly)."""

    def __init__(self, url: str) -> None:
        from ttc.store.engine import make_engine

        self.engine = make_engine(url)
        self.fairy = self.engine.raw_connection()
        self.conn = self.fairy.driver_connection
        self.backend = self.engine.dialect.name
        mark = "?" if self.backend == "sqlite" else "%s"
        self.insert_sql = f"INSERT INTO spans ({', '.join(_SPAN_COLS)}) VALUES ({', '.join([mark] * len(_SPAN_COLS))})"

    def params(self, spans: list) -> list[tuple]:
        """Driver parameters of ``spans``, in the formats the store's column types write."""
        if self.backend == "sqlite":
            def when(d):  # SQLAlchemy's SQLite DateTime storage format, naive UTC
                return None if d is None else d.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            js = json.dumps
        else:
            from psycopg.types.json import Jsonb as js

            def when(d):
                return d
        return [(s.id, s.run_id, s.parent_id, s.kind, s.name, s.model, s.input_tokens, s.output_tokens,
                 s.finish_reason, s.latency_s, when(s.started_at), when(s.ended_at), s.status, s.error,
                 js(s.attributes)) for s in spans]

    def execute(self, sql: str, params: tuple = ()) -> list:
        cur = self.conn.cursor()
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
        cur.close()
        self.commit()
        return rows

    def insert(self, spans: list) -> None:
        """``spans`` converted, then one ``executemany`` in one transaction: the driver at its fastest."""
        rows = self.params(spans)
        cur = self.conn.cursor()
        if self.backend == "sqlite":
            cur.execute("BEGIN IMMEDIATE")  # ttc's engine runs sqlite3 in autocommit mode
        cur.executemany(self.insert_sql, rows)
        self.commit()
        cur.close()

    def commit(self) -> None:
        if self.backend == "sqlite":
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
        else:
            self.conn.commit()

    def close(self) -> None:
        self.fairy.close()
        self.engine.dispose()


def _empty_spans(raw: _Raw) -> None:
    raw.execute("DELETE FROM spans" if raw.backend == "sqlite" else "TRUNCATE spans")


def _bench_inserts(scratch: _Scratch, n: int, rounds: int, progress) -> dict:
    from sqlalchemy import event
    from ttc.store.writer import TraceStore

    store_url, raw_url = scratch.new("store"), scratch.new("raw")
    store, raw_store = TraceStore.open(store_url), TraceStore.open(raw_url)
    store_admin, raw = _Raw(store_url), _Raw(raw_url)
    run_id = store.start_run("bench", "store-bench inserts", run_id="store-bench")
    raw_store.start_run("bench", "store-bench inserts", run_id="store-bench")
    raw_store.close()  # the raw side only needed its run row
    spans = make_spans(n, run_id)
    walls: dict[str, list[float]] = {"store": [], "raw": []}
    commits = [0]
    # How many transactions the store's writer thread batched the spans into (the raw side
    # commits once): at scale each commit rewrites the index pages it touched.
    event.listen(store.engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))

    def via_store() -> None:
        commits[0] = 0
        for span in spans:
            store.add_span(span)
        store.flush()

    def via_raw() -> None:
        raw.insert(spans)

    sides = {"store": (via_store, store_admin), "raw": (via_raw, raw)}
    # The spans are the bench's fixture, not the code measured: keep the cyclic GC from
    # scanning them again and again during both sides' timings.
    gc.collect()
    gc.freeze()
    try:
        for r in range(rounds):
            for side in (("store", "raw") if r % 2 == 0 else ("raw", "store")):
                fn, conn = sides[side]
                _empty_spans(conn)
                t0 = time.perf_counter()
                fn()
                walls[side].append(time.perf_counter() - t0)
                stored = conn.execute("SELECT count(*) FROM spans")[0][0]
                if stored != n:
                    raise RuntimeError(f"{scratch.backend} {side} inserts: {stored} spans stored, expected {n}")
            if progress is not None:
                progress.print(f"{scratch.backend} inserts round {r + 1}/{rounds}: store {walls['store'][-1]:.2f}s, "
                               f"raw {walls['raw'][-1]:.2f}s for {n} spans")
    finally:
        gc.unfreeze()
        store.close()
        store_admin.close()
        raw.close()
    store_rate, raw_rate = n / statistics.median(walls["store"]), n / statistics.median(walls["raw"])
    return {"n": n, "rounds": rounds, "store_commits_last_round": commits[0], "raw_commits": 1,
            "store_rows_per_s": store_rate, "raw_rows_per_s": raw_rate, "insert_vs_raw": store_rate / raw_rate,
            "store_wall_s": walls["store"], "raw_wall_s": walls["raw"]}


def _fill(raw: _Raw, n: int) -> None:
    """``n`` spans over ``n / SPANS_PER_RUN`` ended runs, bulk-loaded (COPY on PostgreSQL), then analysed."""
    n_runs = max(1, -(-n // SPANS_PER_RUN))
    stamp = _T0 if raw.backend == "postgresql" else _T0.strftime("%Y-%m-%d %H:%M:%S.%f")
    mark = "?" if raw.backend == "sqlite" else "%s"
    cur = raw.conn.cursor()
    if raw.backend == "sqlite":
        cur.execute("BEGIN IMMEDIATE")
    cur.executemany(f"INSERT INTO runs (id, kind, name, status, created_at, ended_at, input_tokens, output_tokens, "
                    f"attributes) VALUES ({mark}, 'solve', 'fill', 'ok', {mark}, {mark}, 0, 0, '{{}}')",
                    [(f"run{r:08d}", stamp, stamp) for r in range(n_runs)])
    chunk = 50_000
    for lo in range(0, n, chunk):
        rows = raw.params([SimpleNamespace(**_span_values(i, f"run{i // SPANS_PER_RUN:08d}"))
                           for i in range(lo, min(n, lo + chunk))])
        if raw.backend == "sqlite":
            cur.executemany(raw.insert_sql, rows)
        else:
            with cur.copy(f"COPY spans ({', '.join(_SPAN_COLS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    cur.close()
    raw.commit()
    if raw.backend == "sqlite":
        raw.execute("ANALYZE")
    else:
        # VACUUM (not allowed in a transaction) sets the visibility map that index-only
        # scans need, as autovacuum would on a store that has been written for a while.
        raw.conn.autocommit = True
        raw.conn.execute("VACUUM ANALYZE spans")
        raw.conn.execute("VACUUM ANALYZE runs")
        raw.conn.autocommit = False


def _bench_stats(scratch: _Scratch, n: int, rounds: int, progress) -> dict:
    from ttc.store import queries
    from ttc.store.engine import make_engine

    url = scratch.new("stats")
    raw = _Raw(url)
    engine = make_engine(url)
    try:
        t0 = time.perf_counter()
        _fill(raw, n)
        fill_s = time.perf_counter() - t0
        if progress is not None:
            progress.print(f"{scratch.backend} stats: {n} spans loaded in {fill_s:.1f}s")
        walls: dict[str, list[float]] = {"store": [], "raw": []}
        answers: dict[str, Any] = {}

        sides = {"store": lambda: queries.stats(engine), "raw": lambda: raw.execute(RAW_STATS_SQL)}
        for side in sides.values():  # warm-up: caches, prepared plans, lazy imports
            side()
        for r in range(rounds):
            for side in (("store", "raw") if r % 2 == 0 else ("raw", "store")):
                t0 = time.perf_counter()
                answers[side] = sides[side]()
                walls[side].append(time.perf_counter() - t0)
            if progress is not None:
                progress.print(f"{scratch.backend} stats round {r + 1}/{rounds}: store {walls['store'][-1]:.3f}s, "
                               f"raw {walls['raw'][-1]:.3f}s")
    finally:
        engine.dispose()
        raw.close()
    st = answers["store"]
    if sum(st.span_kinds.values()) != n:
        raise RuntimeError(f"{scratch.backend} stats: the store counts {sum(st.span_kinds.values())} spans, "
                           f"{n} were loaded")
    by_store = sorted((m.model, m.calls, m.input_tokens, m.output_tokens) for m in st.models)
    by_raw = sorted((m, c, int(i), int(o)) for m, c, i, o, _latency in answers["raw"])
    store_s, raw_s = statistics.median(walls["store"]), statistics.median(walls["raw"])
    return {"n_spans": n, "llm_spans": sum(m.calls for m in st.models), "rounds": rounds, "fill_s": fill_s,
            "store_s": store_s, "raw_s": raw_s, "stats_vs_raw": store_s / raw_s, "same_answer": by_store == by_raw,
            "store_wall_s": walls["store"], "raw_wall_s": walls["raw"]}


def _writer(url: str, index: int, n: int, barrier, results) -> None:
    """One of the concurrent writer processes: its own TraceStore, run and ``n`` spans."""
    try:
        from ttc.store.writer import TraceStore

        with TraceStore.open(url) as store:
            run_id = store.start_run("bench", f"store-bench writer {index}", run_id=f"writer-{index}")
            spans = make_spans(n, run_id, start=index * n)
            barrier.wait(timeout=120)  # all four start writing together
            t0 = time.perf_counter()
            for span in spans:
                store.add_span(span)
            store.end_run(run_id)
            results.put((index, time.perf_counter() - t0, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        results.put((index, None, f"{type(exc).__name__}: {exc}"))


def _bench_writers(scratch: _Scratch, n: int, progress) -> dict:
    url = scratch.new("writers")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, i, n, barrier, results), daemon=True) for i in range(WRITERS)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    got: list[tuple] = []
    try:
        while len(got) < len(procs):
            try:
                got.append(results.get(timeout=1))
            except queue.Empty:
                # A writer that died before reporting (killed, or it could not start) ends the wait.
                dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead and results.empty():
                    raise RuntimeError(f"writer processes {dead} died without reporting") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [f"writer {i}: {err}" for i, _, err in got if err]
    if errors:
        raise RuntimeError("; ".join(errors))
    raw = _Raw(url)
    try:
        stored = raw.execute("SELECT count(*) FROM spans")[0][0]
        per_run = dict(raw.execute("SELECT run_id, count(*) FROM spans GROUP BY run_id"))
        ended = raw.execute("SELECT count(*) FROM runs WHERE status = 'ok'")[0][0]
    finally:
        raw.close()
    walls = [w for _, w, _ in got]
    if progress is not None:
        progress.print(f"{scratch.backend} writers: {stored}/{WRITERS * n} spans stored")
    return {"processes": WRITERS, "spans_each": n, "stored": stored, "lost": WRITERS * n - stored,
            "runs_ended_ok": ended, "spans_per_run": sorted(per_run.values()),
            "write_wall_s": max(walls), "rows_per_s": WRITERS * n / max(walls),
            "total_wall_s": time.perf_counter() - t0}


def run_store_bench(*, quick: bool = False, pg_url: str = DEFAULT_PG_URL, n: int | None = None,
                    stats_n: int | None = None, writer_n: int | None = None, rounds: int | None = None,
                    out_dir: Path = Path("bench/results"), progress=None) -> dict[str, Any]:
    """Runs the benchmark, writes ``store.json`` and returns the result.

    Args:
        quick: Smaller sizes (20k inserts, 100k spans for stats, 5k per writer).
        pg_url: A PostgreSQL database in which scratch schemas are created and dropped.
        n: Spans per insert measurement (default 200k, quick 20k).
        stats_n: Spans in the stats table (default 1M, quick 100k).
        writer_n: Spans per concurrent writer process (default 25k, quick 5k).
        rounds: Interleaved rounds per measurement (default 3 for inserts, 5 for stats).
        out_dir: Where ``store.json`` goes.
        progress: A Rich console for progress lines (None: silent).
    """
    started = time.time()
    n = n or (20_000 if quick else 200_000)
    stats_n = stats_n or (100_000 if quick else 1_000_000)
    writer_n = writer_n or (5_000 if quick else 25_000)
    result = bench_header("store", seed=SEED, quick=quick, models=[], n_problems=0)
    result.update({"n": {"inserts": n, "stats_spans": stats_n, "writer_spans_each": writer_n},
                   "goals": dict(GOALS)})
    skip_pg = pg_unreachable(pg_url)
    with tempfile.TemporaryDirectory(prefix="ttc-store-bench-") as tmp:
        for backend in ("sqlite", "postgresql"):
            if backend == "postgresql" and skip_pg:
                result[backend] = {"skipped": True, "reason": skip_pg}
                continue
            scratch = _Scratch(backend, pg_url=pg_url, sqlite_dir=Path(tmp))
            try:
                block = {"skipped": False, "server_version": scratch.server_version(),
                         "inserts": _bench_inserts(scratch, n, rounds or 3, progress),
                         "stats": _bench_stats(scratch, stats_n, rounds or 5, progress)}
                if backend == "postgresql":
                    result["concurrent_writers"] = _bench_writers(scratch, writer_n, progress)
            finally:
                scratch.drop()
            block["goals_met"] = {
                "insert_vs_raw": block["inserts"]["insert_vs_raw"] >= GOALS["insert_vs_raw_at_least"],
                "stats_vs_raw": block["stats"]["stats_vs_raw"] <= GOALS["stats_vs_raw_at_most"]}
            result[backend] = block
    if skip_pg:
        result["concurrent_writers"] = {"processes": WRITERS, "spans_each": writer_n, "lost": None,
                                        "skipped": True, "reason": skip_pg}
    result["elapsed_s"] = round(time.time() - started, 1)
    result["files"] = {"json": str(out_dir / "store.json")}
    write_result("store", result, out_dir)
    return result
