"""Exporting spans: JSON lines, CSV, and OTLP/JSON that Phoenix and Langfuse ingest.

Spans already follow the OpenTelemetry GenAI conventions where they fit; :func:`otlp_span`
adds the ``gen_ai.*`` attribute names on llm calls and encodes ids, times and values as
OTLP/JSON requires (hex ids of fixed width, 64-bit integers as decimal strings).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from importlib import metadata
from typing import IO, Any

from sqlalchemy import Engine

from ttc.store.analysis import BadFilter, _chunks, _runs_by_id, _select_runs, _spans_of
from ttc.store.queries import reap_runs
from ttc.store.records import RunFilter, SpanRecord

__all__ = ["CSV_COLUMNS", "EXPORT_FORMATS", "export_spans", "otlp_span", "write_spans"]

EXPORT_FORMATS = ("jsonl", "csv", "otlp")
CSV_COLUMNS = ("id", "run_id", "parent_id", "kind", "name", "model", "input_tokens", "output_tokens",
               "finish_reason", "latency_s", "started_at", "ended_at", "status", "error", "attributes")


def export_spans(engine: Engine, filters: RunFilter | None = None, *, run_ids: Sequence[str] | None = None,
                 now: datetime | None = None) -> Iterator[SpanRecord]:
    """The spans of the matching runs (or of ``run_ids``), run by run, each run's by start time.

    The runs are chosen (and an unknown id raises :class:`RunNotFound`) before this returns;
    their spans are read as the iterator is consumed.
    """
    reap_runs(engine, now=now)
    runs = _runs_by_id(engine, run_ids) if run_ids is not None else _select_runs(engine, filters or RunFilter(),
                                                                                  strict=True)
    return _iter_spans(engine, [r.id for r in runs])


def _iter_spans(engine: Engine, run_ids: list[str]) -> Iterator[SpanRecord]:
    for chunk in _chunks(run_ids, 50):
        spans = _spans_of(engine, chunk)
        for run_id in chunk:
            yield from spans.get(run_id, [])


def _hex_id(value: str, width: int) -> str:
    # OTLP ids are hex of a fixed width; store ids that are not (e.g. "store-bench") are hashed.
    v = value.lower()
    if len(v) == width and re.fullmatch(r"[0-9a-f]+", v) and v.strip("0"):
        return v
    return hashlib.sha256(value.encode()).hexdigest()[:width]


def _any_value(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int) and -2**63 <= v < 2**63:
        return {"intValue": str(v)}  # OTLP/JSON writes 64-bit integers as decimal strings
    if isinstance(v, float) and math.isfinite(v):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        values = [x for x in map(_any_value, v) if x is not None]
        # Attribute arrays hold one primitive type; anything else travels as JSON text.
        if len({next(iter(x)) for x in values}) <= 1 and not any("arrayValue" in x for x in values):
            return {"arrayValue": {"values": values}}
    if isinstance(v, (list, tuple, dict)):
        return {"stringValue": json.dumps(v, sort_keys=True, default=str)}
    return {"stringValue": str(v)}


def _nanos(t: datetime) -> str:
    return str(int(t.timestamp()) * 10**9 + t.microsecond * 1000)


def otlp_span(span: SpanRecord) -> dict[str, Any]:
    """One span as an OTLP/JSON ``Span``, with the GenAI semantic-convention attributes on llm calls."""
    attrs: dict[str, Any] = {**span.attributes, "ttc.span.kind": span.kind, "ttc.span.name": span.name}
    name, kind = span.name, 1  # SPAN_KIND_INTERNAL
    if span.kind == "llm":
        operation = attrs.get("gen_ai.operation.name") or "text_completion"
        attrs.update({"gen_ai.operation.name": operation, "gen_ai.request.model": span.model,
                      "gen_ai.usage.input_tokens": span.input_tokens,
                      "gen_ai.usage.output_tokens": span.output_tokens})
        if span.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = span.finish_reason.split(",")
        name, kind = f"{operation} {span.model}" if span.model else operation, 3  # SPAN_KIND_CLIENT
    if _hex_id(span.run_id, 32) != span.run_id:
        attrs["ttc.run_id"] = span.run_id
    end = span.ended_at or (span.started_at + timedelta(seconds=span.latency_s or 0.0))
    out: dict[str, Any] = {"traceId": _hex_id(span.run_id, 32), "spanId": _hex_id(span.id, 16)}
    if span.parent_id:
        out["parentSpanId"] = _hex_id(span.parent_id, 16)
    out.update(name=name, kind=kind, startTimeUnixNano=_nanos(span.started_at), endTimeUnixNano=_nanos(end),
               attributes=[{"key": k, "value": v} for k, v in ((k, _any_value(x)) for k, x in attrs.items())
                           if v is not None],
               status={"code": 1} if span.status == "ok" else {"code": 2, "message": span.error or "error"})
    return out


def write_spans(spans: Iterable[SpanRecord], fmt: str, stream: IO[str]) -> int:
    """Write spans as ``jsonl`` (one span a line), ``csv`` (the spans table) or ``otlp`` (one OTLP/JSON request).

    Returns:
        How many spans were written.

    Raises:
        BadFilter: An unknown format.
    """
    if fmt not in EXPORT_FORMATS:
        raise BadFilter(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    n = 0
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
    for span in spans:
        if fmt == "jsonl":
            stream.write(span.model_dump_json() + "\n")
        elif fmt == "csv":
            row = span.model_dump(mode="json")
            row["attributes"] = json.dumps(row["attributes"], sort_keys=True)
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        else:
            if n == 0:  # no envelope around zero spans (OTLP: senders should not send empty ones)
                try:
                    version = metadata.version("ttc")
                except metadata.PackageNotFoundError:
                    version = "unknown"
                resource = [{"key": "service.name", "value": {"stringValue": "ttc"}},
                            {"key": "service.version", "value": {"stringValue": version}}]
                stream.write('{"resourceSpans":[{"resource":' + json.dumps({"attributes": resource})
                             + ',"scopeSpans":[{"scope":' + json.dumps({"name": "ttc", "version": version})
                             + ',"spans":[')
            stream.write(("," if n else "") + json.dumps(otlp_span(span)))
        n += 1
    if fmt == "otlp":
        stream.write(']}]}]}\n' if n else '{"resourceSpans":[]}\n')
    return n


