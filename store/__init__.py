"""SQL trace store of ttc: schema, migrations, batched writes and queries.

The store knows nothing about the rest of ttc; it takes plain records::

    from ttc.store import SpanRecord, TraceStore

    with TraceStore.open("sqlite:///ttc.db") as traces:
        run_id = traces.start_run("solve", "countdown")
        traces.add_span(SpanRecord(run_id=run_id, kind="llm", name="chat", model="tiny"))
        traces.end_run(run_id)
"""

from ttc.store.engine import (
    DEFAULT_DB_URL,
    BadDatabaseURL,
    StoreError,
    make_engine,
    migrate,
    resolve_db_url,
)
from ttc.store.durable import RunTakenOver
from ttc.store.liveness import ProcessIdentity
from ttc.store.queries import (
    RunNotFound,
    get_run,
    get_run_record,
    list_jobs,
    list_runs,
    reap_runs,
    stats,
)
from ttc.store.records import (
    CandidateRecord,
    JobRecord,
    ModelStats,
    RunDetail,
    RunRecord,
    SpanRecord,
    StatsRecord,
    new_span_id,
    new_trace_id,
    utcnow,
)
from ttc.store.writer import TraceStore

__all__ = [
    "DEFAULT_DB_URL",
    "BadDatabaseURL",
    "CandidateRecord",
    "JobRecord",
    "ModelStats",
    "RunDetail",
    "RunNotFound",
    "ProcessIdentity",
    "RunRecord",
    "RunTakenOver",
    "SpanRecord",
    "StatsRecord",
    "StoreError",
    "TraceStore",
    "get_run",
    "get_run_record",
    "list_jobs",
    "list_runs",
    "make_engine",
    "migrate",
    "new_span_id",
    "new_trace_id",
    "reap_runs",
    "resolve_db_url",
    "stats",
    "utcnow",
]
