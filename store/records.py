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
    "JobRecord",
    "ModelStats",
    "RunDetail",
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
