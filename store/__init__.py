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
from ttc.store.analysis import (
    BadFilter,
    compare_runs,
    make_filter,
    query_outcomes,
    query_runs,
    run_points,
    stats_by,
    to_dataframe,
)
from ttc.store.durable import RunTakenOver
from ttc.store.export import export_spans, write_spans
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
    CompareRecord,
    GroupedStats,
    GroupStats,
    JobRecord,
    ModelStats,
    OutcomeRecord,
    ProblemPair,
    RunDetail,
    RunFilter,
    RunPoint,
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
    "BadFilter",
    "CandidateRecord",
    "CompareRecord",
    "GroupStats",
    "GroupedStats",
    "JobRecord",
    "ModelStats",
    "OutcomeRecord",
    "ProblemPair",
    "RunDetail",
    "RunFilter",
    "RunNotFound",
    "RunPoint",
    "ProcessIdentity",
    "RunRecord",
    "RunTakenOver",
    "SpanRecord",
    "StatsRecord",
    "StoreError",
    "TraceStore",
    "compare_runs",
    "export_spans",
    "get_run",
    "get_run_record",
    "list_jobs",
    "list_runs",
    "make_engine",
    "make_filter",
    "migrate",
    "new_span_id",
    "new_trace_id",
    "query_outcomes",
    "query_runs",
    "reap_runs",
    "resolve_db_url",
    "run_points",
    "stats",
    "stats_by",
    "to_dataframe",
    "utcnow",
    "write_spans",
]
