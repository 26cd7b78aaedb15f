"""Plain records written to and read back from the trace store.

The rest of ttc talks to the store only through these pydantic models, so the store
stays ignorant of strategies, backends and tasks.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
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
    "RunPoint",
    "RunRecord",
    "SpanRecord",
    "StatsRecord",
    "new_span_id",
    "new_trace_id",
    "utcnow",
]

RunStatus = Literal["running", "ok", "error", "interrupted"]
SpanStatus = Literal["ok", "error"]
JobStatus = Literal["ok", "error"]


def new_trace_id() -> str:
    """Return a fresh run (trace) id: 32 lowercase hex digits, as in W3C trace context."""
    return uuid.uuid4().hex


def new_span_id() -> str:
    """Return a fresh span id: 16 lowercase hex digits, as in W3C trace context."""
    return uuid.uuid4().hex[:16]


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # Naive datetimes are taken to be UTC already: that is what datetime.utcnow() and
    # most SQLite readers produce, and it keeps comparisons between records well defined.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UTCDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class _Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class RunRecord(_Record):
    """One run: a call of the API, a CLI command or a batch job.

    Attributes:
        id: 32-hex trace id.
        kind: What started the run, e.g. "generate", "solve", "batch", "bench".
        name: Human-readable label (task or stage name, batch file, ...).
        status: "running" until ended, then "ok", "error" or "interrupted" (stopped by
            a signal, or its process is gone: see ``store.liveness``).
        error: One-line error message when status is "error" (or what interrupted it).
        created_at: When the run started (UTC).
        ended_at: When the run ended (UTC), None while running.
        input_tokens: Run total of prompt tokens, set when the run ends.
        output_tokens: Run total of generated tokens, set when the run ends.
        attributes: Free-form JSON for what is not a first-class field.
        host, pid, pid_start: The process driving the run (its latest one, after a
            resume); ``pid_start`` tells a reused pid apart.
        heartbeat_at: When that process last said it was alive.
    """

    id: str = Field(default_factory=new_trace_id, max_length=32)
    kind: str
    name: str
    status: RunStatus = "running"
    error: str | None = None
    created_at: UTCDateTime = Field(default_factory=utcnow)
    ended_at: UTCDateTime | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    attributes: dict[str, Any] = Field(default_factory=dict)
    host: str | None = Field(default=None, max_length=255)
    pid: int | None = None
    pid_start: str | None = Field(default=None, max_length=64)
    heartbeat_at: UTCDateTime | None = None


class SpanRecord(_Record):
    """One timed step inside a run: stage, strategy, llm call, verifier call, ...

    Fields follow the OpenTelemetry GenAI semantic conventions where they fit; other
    GenAI attributes (e.g. "gen_ai.request.temperature") go into ``attributes``.

    Attributes:
        id: 16-hex span id.
        run_id: Id of the run this span belongs to.
        parent_id: Id of the enclosing span, None for a top-level span. Children are
            usually recorded before their parent ends, so this is not a foreign key.
        kind: "run", "stage", "strategy", "llm", "verifier", ... (free string).
        name: Label of the step (stage name, strategy name, operation name).
        model: ``gen_ai.request.model`` for llm and judge calls.
        input_tokens: ``gen_ai.usage.input_tokens``.
        output_tokens: ``gen_ai.usage.output_tokens``.
        finish_reason: ``gen_ai.response.finish_reasons``, comma-joined if several.
        latency_s: Wall-clock duration in seconds.
        started_at: Start time (UTC).
        ended_at: End time (UTC), None if the span was recorded while still open.
        status: "ok" or "error".
        error: One-line error message when status is "error".
        attributes: Free-form JSON attributes.
    """

    id: str = Field(default_factory=new_span_id, max_length=16)
    run_id: str = Field(max_length=32)
    parent_id: str | None = Field(default=None, max_length=16)
    kind: str
    name: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    latency_s: float | None = None
    started_at: UTCDateTime = Field(default_factory=utcnow)
    ended_at: UTCDateTime | None = None
    status: SpanStatus = "ok"
    error: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class CandidateRecord(_Record):
    """One answer a strategy produced, with its verdict.

    Attributes:
        id: Database id, None until written.
        run_id: Id of the run.
        span_id: Id of the span that produced it (the strategy or llm span), if any.
        idx: Position of the candidate within its strategy's output.
        text: Full generated text.
        answer: Parsed answer, None if none could be parsed.
        correct: Verifier's verdict, None when it cannot tell.
        score: Verifier's score.
        reason: Verifier's explanation.
        tokens: Generated tokens spent on this candidate.
        attributes: Free-form JSON attributes.
    """

    id: int | None = None
    run_id: str = Field(max_length=32)
    span_id: str | None = Field(default=None, max_length=16)
    idx: int = 0
    text: str = ""
    answer: str | None = None
    correct: bool | None = None
    score: float | None = None
    reason: str = ""
    tokens: int = 0
    attributes: dict[str, Any] = Field(default_factory=dict)


class JobRecord(_Record):
    """One finished unit of work of a run: an eval's problem, a batch line.

    Attributes:
        run_id: Id of the run.
        key: The caller's id for the job (problem id, batch ``custom_id``), unique in the run.
        idx: Position of the job in the run's input.
        status: "ok" (``result`` holds its output) or "error" (``error`` says why).
        request_hash: Hash of the canonical request (and model digests), if the caller
            keys jobs by it; a resumer compares it to spot a changed request.
        result: JSON output of the job.
        error: One-line error message when status is "error".
        attempts: How many times the job was run to reach this row.
        finished_at: When the row was committed (UTC).
    """

    run_id: str = Field(max_length=32)
    key: str
    idx: int = 0
    status: JobStatus = "ok"
    request_hash: str | None = Field(default=None, max_length=64)
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 1
    finished_at: UTCDateTime = Field(default_factory=utcnow)


class RunDetail(BaseModel):
    """A run with its spans (ordered by start time) and candidates."""

    run: RunRecord
    spans: list[SpanRecord]
    candidates: list[CandidateRecord]


class ModelStats(BaseModel):
    """Aggregates over the llm spans of one model."""

    model: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    mean_latency_s: float | None


class StatsRecord(BaseModel):
    """Aggregates over the runs in the store (optionally of one kind).

    Attributes:
        runs: Number of runs.
        runs_by_status: Number of runs per status.
        input_tokens: Total input tokens over llm spans.
        output_tokens: Total output tokens over llm spans.
        models: Per-model breakdown of llm spans, most calls first.
        span_kinds: Number of spans per span kind.
    """

    runs: int
    runs_by_status: dict[str, int]
    input_tokens: int
    output_tokens: int
    models: list[ModelStats]
    span_kinds: dict[str, int]


# ---------------------------------------------------------------------- trace queries


class RunFilter(BaseModel):
    """Which runs (and outcomes) a trace query looks at; None means any.

    ``kind``, ``status``, ``since`` and ``until`` select runs; ``task``, ``strategy``,
    ``model`` and ``stage`` select runs whose attributes name them and, in outcome
    queries, the outcomes that have them. ``limit`` keeps the newest matching runs.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str | None = None
    status: RunStatus | None = None
    task: str | None = None
    strategy: str | None = None
    model: str | None = None
    stage: str | None = None
    since: UTCDateTime | None = None
    until: UTCDateTime | None = None
    limit: int | None = Field(default=None, ge=1)


class OutcomeRecord(BaseModel):
    """One graded unit of work: an eval problem, a batch job, a graph stage, or a whole run.

    Attributes:
        run_id: The run it belongs to.
        run_kind: That run's kind.
        source: "problem", "job" or "stage" (the span kind it came from), or "run" for a
            run without such spans (a solve, a generate).
        key: Problem id, ``custom_id``, stage name, or the run's name.
        span_id: The span it came from; None for "run" outcomes.
        task, strategy, model: What solved it (the span's own, else the run's).
        stage: The graph stage, for "stage" outcomes.
        correct: The verdict; None when unknown.
        tokens: Tokens spent on it (prompt prefilled + generated).
        flops: FLOPs spent on it; None when no span recorded them.
        latency_s: Wall-clock seconds.
        status: "ok" or "error".
        started_at: When it started.
    """

    run_id: str
    run_kind: str
    source: str
    key: str
    span_id: str | None = None
    task: str | None = None
    strategy: str | None = None
    model: str | None = None
    stage: str | None = None
    correct: bool | None = None
    tokens: int = 0
    flops: float | None = None
    latency_s: float | None = None
    status: str = "ok"
    started_at: UTCDateTime | None = None


class GroupStats(BaseModel):
    """Aggregates over the outcomes of one group (one strategy, model, stage, ...).

    Attributes:
        key: The group's value (None: outcomes that have none, e.g. no stage).
        runs: Distinct runs the outcomes come from.
        problems: Outcomes.
        known: Outcomes whose verdict is known.
        correct: Outcomes known to be correct.
        accuracy: ``correct / known``; None when nothing is known.
        errors: Outcomes whose span ended in an error.
        tokens: Total tokens.
        mean_tokens: Tokens per outcome.
        flops: Total FLOPs over the outcomes that recorded them; None if none did.
        mean_flops: FLOPs per outcome that recorded them.
        latency_p50_s: Median outcome latency (linear interpolation, like percentile_cont).
        latency_p95_s: 95th percentile of outcome latency.
    """

    key: str | None
    runs: int
    problems: int
    known: int
    correct: int
    accuracy: float | None
    errors: int
    tokens: int
    mean_tokens: float | None
    flops: float | None
    mean_flops: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None


class GroupedStats(BaseModel):
    """Outcome statistics grouped by one field, with the total over every group."""

    by: str | None
    filters: RunFilter
    groups: list[GroupStats]
    total: GroupStats


class RunPoint(BaseModel):
    """One run as a point of accuracy against compute (for ``ttc traces plot``)."""

    run_id: str
    kind: str
    name: str
    task: str | None
    strategy: str | None
    model: str | None
    created_at: UTCDateTime
    problems: int
    known: int
    correct: int
    accuracy: float | None
    mean_tokens: float | None
    mean_flops: float | None


class ProblemPair(BaseModel):
    """One problem's verdicts in two runs (None: unknown or missing there)."""

    key: str
    a: bool | None
    b: bool | None


class CompareRecord(BaseModel):
    """Two runs compared problem by problem, on the problems both graded.

    Attributes:
        a, b: Full run ids.
        matched: Problems with a known verdict in both runs.
        both, only_a, only_b, neither: How the matched problems split.
        accuracy_a, accuracy_b: Accuracy of each run on the matched problems.
        mcnemar_p: Exact two-sided McNemar p-value over the discordant pairs (1.0 when
            there are none).
        unmatched_a, unmatched_b: Problems graded in one run only.
        problems: Every problem either run has, with both verdicts.
    """

    a: str
    b: str
    a_name: str
    b_name: str
    matched: int
    both: int
    only_a: int
    only_b: int
    neither: int
    accuracy_a: float | None
    accuracy_b: float | None
    mcnemar_p: float
    unmatched_a: int
    unmatched_b: int
    problems: list[ProblemPair]
