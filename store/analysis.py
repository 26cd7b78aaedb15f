"""Trace queries: filtered runs, graded outcomes, grouped statistics, exports and comparisons.

These read the store only and return plain records (``to_dataframe`` turns them into a
pandas DataFrame when pandas is installed).

An *outcome* is one graded unit of work. A run's outcomes are its outermost ``problem``
(eval), ``job`` (batch) and ``stage`` (task graph) spans; a run with none of them (a solve,
a generate) is one outcome itself. An outcome's verdict, tokens and FLOPs come from its
span's attributes (``correct``/``ttc.correct``, ``tokens``/``ttc.tokens``,
``flops``/``ttc.flops``); tokens and FLOPs it does not record are summed over the llm spans
below it. Its task, strategy and model are its span's own where the span names them (a
stage's ``ttc.stage.model``), else its run's, else the one model (strategy) used below it.
A problem or job retried within a run counts once (its last successful span); a stage's
failed spans are dropped when it also succeeded.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, and_, case, or_, select
from sqlalchemy.orm import Session

from ttc.store.engine import StoreError, translate_errors
from ttc.store.queries import reap_runs, resolve_run_id
from ttc.store.records import (
    CompareRecord,
    GroupedStats,
    GroupStats,
    OutcomeRecord,
    ProblemPair,
    RunFilter,
    RunPoint,
    RunRecord,
    SpanRecord,
    utcnow,
)
from ttc.store.schema import Run, Span

__all__ = [
    "GROUP_FIELDS", "OUTCOME_KINDS", "BadFilter", "compare_runs", "make_filter", "mcnemar_p", "parse_time",
    "percentile", "query_outcomes", "query_runs", "run_points", "stats_by", "to_dataframe",
]

OUTCOME_KINDS = ("problem", "job", "stage")
GROUP_FIELDS = ("strategy", "model", "stage", "task", "kind")
_FACETS = ("task", "strategy", "model", "stage")
_PAGE = 500  # runs read per query: bounded memory, few round trips
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadFilter(StoreError, ValueError):
    """A filter value that cannot be used (an unknown status, a malformed time, ...)."""

    exit_code = 2


# ---------------------------------------------------------------------- filters


def parse_time(value: str | datetime | None, *, now: datetime | None = None, name: str = "time") -> datetime | None:
    """An ISO time (naive = UTC) or an age such as ``90s``, ``15m``, ``2h``, ``3d``, ``1w`` before ``now``.

    Raises:
        BadFilter: Neither form.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = value.strip()
    age = _AGE.fullmatch(text.lower())
    if age:
        return (now or utcnow()) - timedelta(seconds=float(age[1]) * _UNIT_S[age[2]])
    try:
        return parse_time(datetime.fromisoformat(text))
    except ValueError:
        raise BadFilter(f"{name} must be an ISO time (2026-01-31, 2026-01-31T12:00Z) or an age like 2h or 3d, "
                        f"got {value!r}") from None


def make_filter(*, since: str | datetime | None = None, until: str | datetime | None = None,
                now: datetime | None = None, **fields: Any) -> RunFilter:
    """A :class:`RunFilter` from loose values (``since``/``until`` as in :func:`parse_time`).

    Raises:
        BadFilter: A value the filter cannot take, or ``since`` after ``until``.
    """
    now = now or utcnow()
    start, end = parse_time(since, now=now, name="--since"), parse_time(until, now=now, name="--until")
    if start and end and start > end:
        raise BadFilter("--since is after --until: no run can match")
    try:
        return RunFilter(since=start, until=end, **fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise BadFilter(f"--{where}: {err.get('msg', 'invalid value')}, got {err.get('input')!r}") from None


def _facets(attrs: dict[str, Any]) -> dict[str, set[str]]:
    # What a run says it used: eval/solve attributes, or a graph's spec and allocation.
    out: dict[str, set[str]] = {f: set() for f in _FACETS}
    for field in ("task", "strategy", "model"):
        if isinstance(attrs.get(field), str):
            out[field].add(attrs[field])
    if isinstance(attrs.get("models"), dict):
        out["model"].update(v for v in attrs["models"].values() if isinstance(v, str))
    alloc = attrs.get("allocation")
    for name, option in (alloc.get("stages") or {}).items() if isinstance(alloc, dict) else ():
        out["stage"].add(name)
        for field in ("model", "strategy"):
            if isinstance(option, dict) and isinstance(option.get(field), str):
                out[field].add(option[field])
    for stage, task in _stage_tasks(attrs).items():
        out["stage"].add(stage)
        if task:
            out["task"].add(task)
    return out


def _stage_tasks(attrs: dict[str, Any]) -> dict[str, str | None]:
    graph = attrs.get("graph")
    stages = graph.get("stages") if isinstance(graph, dict) else None
    return {s["name"]: s.get("task") for s in stages or () if isinstance(s, dict) and isinstance(s.get("name"), str)}


def _run_matches(run: RunRecord, f: RunFilter, *, strict: bool) -> bool:
    # Not strict (outcome queries): a run that names nothing for a field may still hold matching outcomes.
    facets = _facets(run.attributes)
    return all(getattr(f, field) is None or getattr(f, field) in facets[field]
               or (not strict and not facets[field]) for field in _FACETS)


def _select_runs(engine: Engine, f: RunFilter, *, strict: bool) -> list[RunRecord]:
    query = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
    for column, value in ((Run.kind, f.kind), (Run.status, f.status)):
        if value is not None:
            query = query.where(column == value)
    if f.since is not None:
        query = query.where(Run.created_at >= f.since)
    if f.until is not None:
        query = query.where(Run.created_at <= f.until)
    with translate_errors(engine), Session(engine) as session:
        if all(getattr(f, field) is None for field in _FACETS):
            rows = session.scalars(query if f.limit is None else query.limit(f.limit))
            return [RunRecord.model_validate(r) for r in rows]
        # Attribute filters are applied here, page by page (keyset: runs started meanwhile shift nothing).
        runs: list[RunRecord] = []
        page_query = query
        while True:
            page = [RunRecord.model_validate(r) for r in session.scalars(page_query.limit(_PAGE))]
            runs += [r for r in page if _run_matches(r, f, strict=strict)]
            if f.limit is not None and len(runs) >= f.limit:
                return runs[:f.limit]
            if len(page) < _PAGE:
                return runs
            last = page[-1]
            page_query = query.where(or_(Run.created_at < last.created_at,
                                         and_(Run.created_at == last.created_at, Run.id < last.id)))


def query_runs(engine: Engine, filters: RunFilter | None = None, *, now: datetime | None = None) -> list[RunRecord]:
    """The runs that match ``filters``, newest first (runs whose process is gone marked interrupted first).

    A run matches ``task``/``strategy``/``model``/``stage`` when its attributes name that value
    (an eval's task, strategy and models; a graph's stages, their tasks, models and strategies).
    """
    reap_runs(engine, now=now)
    return _select_runs(engine, filters or RunFilter(), strict=True)


def _runs_by_id(engine: Engine, run_ids: Iterable[str]) -> list[RunRecord]:
    with translate_errors(engine), Session(engine) as session:
        return [RunRecord.model_validate(session.get_one(Run, resolve_run_id(session, rid))) for rid in run_ids]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# ---------------------------------------------------------------------- outcomes


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    return next((attrs[k] for k in keys if attrs.get(k) is not None), None)


def _as_bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else (bool(v) if isinstance(v, int) and v in (0, 1) else None)


def _as_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _as_float(v: Any) -> float | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _as_str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _outcomes_of_run(run: RunRecord, spans: list[Any]) -> list[OutcomeRecord]:
    # ``spans``: rows with SpanRecord's fields; ``attributes`` is None except on outcome and llm spans.
    attrs = run.attributes
    base = {"run_id": run.id, "run_kind": run.kind, "task": _as_str(attrs.get("task")),
            "strategy": _as_str(attrs.get("strategy")), "model": _as_str(attrs.get("model"))}
    by_id = {s.id: s for s in spans}
    children: dict[str | None, list[Any]] = defaultdict(list)
    for s in spans:
        children[s.parent_id].append(s)

    def under_outcome(s: Any) -> bool:
        seen, p = {s.id}, by_id.get(s.parent_id or "")
        while p is not None and p.id not in seen:
            if p.kind in OUTCOME_KINDS:
                return True
            seen.add(p.id)
            p = by_id.get(p.parent_id or "")
        return False

    def below(root: Any) -> tuple[int, float | None, set[str], set[str]]:
        # Over ``root``'s subtree (all spans when None): llm tokens and FLOPs, models and strategies.
        todo, seen, tokens, flops, models, strategies = ([root] if root else list(spans)), set(), 0, None, set(), set()
        while todo:
            s = todo.pop()
            if s.id in seen:
                continue
            seen.add(s.id)
            if s.kind == "llm":
                tokens += s.input_tokens + s.output_tokens
                f = _as_float((s.attributes or {}).get("ttc.flops"))
                flops = f if flops is None else flops + (f or 0.0)
                models.update([s.model] if s.model else [])
            elif s.kind == "strategy":
                strategies.add(s.name)
            if root is not None:
                todo += children.get(s.id, [])
        return tokens, flops, models, strategies

    picked = [s for s in spans if s.kind in OUTCOME_KINDS and not under_outcome(s)]
    if not picked:
        root = next((s for s in spans if s.kind == "run" and s.parent_id is None), None)
        sum_tokens, sum_flops, _, _ = below(None)
        tokens, flops = _as_int(attrs.get("tokens")), _as_float(attrs.get("flops"))
        latency = root.latency_s if root and root.latency_s is not None else (
            (run.ended_at - run.created_at).total_seconds() if run.ended_at else None)
        return [OutcomeRecord(
            **base, source="run", key=run.name, correct=_as_bool(attrs.get("correct")),
            tokens=(sum_tokens or run.input_tokens + run.output_tokens) if tokens is None else tokens,
            flops=sum_flops if flops is None else flops, latency_s=latency, status=run.status,
            started_at=run.created_at)]
    stage_tasks = _stage_tasks(attrs)
    out = []
    for s in _dedup(picked):
        a = s.attributes or {}
        tokens, flops = _as_int(_first(a, "tokens", "ttc.tokens")), _as_float(_first(a, "flops", "ttc.flops"))
        model = s.model or _as_str(_first(a, "ttc.stage.model", "model", "ttc.model", "gen_ai.request.model"))
        strategy = _as_str(_first(a, "ttc.stage.strategy", "strategy", "ttc.strategy"))
        model, strategy = model or base["model"], strategy or base["strategy"]
        if None in (tokens, flops, model, strategy):
            # What neither the span nor its run says, its subtree may: the one model or strategy used below.
            sum_tokens, sum_flops, models, strategies = below(s)
            tokens, flops = (sum_tokens if tokens is None else tokens), (sum_flops if flops is None else flops)
            model = model or (models.pop() if len(models) == 1 else None)
            strategy = strategy or (strategies.pop() if len(strategies) == 1 else None)
        stage = s.name if s.kind == "stage" else None
        task = _as_str(_first(a, "task", "ttc.task")) or (stage_tasks.get(stage) if stage else base["task"])
        out.append(OutcomeRecord(
            **{**base, "task": task, "model": model, "strategy": strategy},
            source=s.kind, key=_key(s), span_id=s.id, stage=stage, correct=_as_bool(_first(a, "correct", "ttc.correct")),
            tokens=tokens, flops=flops, latency_s=s.latency_s, status=s.status, started_at=s.started_at))
    return out


def _key(s: Any) -> str:
    custom_id = (s.attributes or {}).get("custom_id") if s.kind == "job" else None
    return str(custom_id) if custom_id is not None else s.name


def _dedup(spans: list[Any]) -> list[Any]:
    # A retried problem or job counts once; a fan-out stage's items all count, its failures only alone.
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: (s.started_at, s.id)):
        groups[(s.kind, _key(s))].append(s)
    kept = []
    for (kind, _), group in groups.items():
        ok = [s for s in group if s.status == "ok"] or group
        kept += ok if kind == "stage" else ok[-1:]
    return sorted(kept, key=lambda s: (s.started_at, s.id))


def _spans_of(engine: Engine, run_ids: Sequence[str]) -> dict[str, list[SpanRecord]]:
    out: dict[str, list[SpanRecord]] = defaultdict(list)
    query = select(Span.__table__).where(Span.run_id.in_(run_ids)).order_by(Span.started_at, Span.id)
    with translate_errors(engine), engine.connect() as conn:
        for row in conn.execute(query):
            out[row.run_id].append(SpanRecord.model_validate(dict(row._mapping)))
    return out


def _outcome_rows(engine: Engine, run_ids: Sequence[str]) -> dict[str, list[Any]]:
    # Only the columns outcomes need, and attributes only where they are read: a store of
    # many evals is mostly strategy and verifier spans.
    attrs = case((Span.kind.in_((*OUTCOME_KINDS, "llm")), Span.attributes), else_=None).label("attributes")
    query = (select(Span.id, Span.run_id, Span.parent_id, Span.kind, Span.name, Span.model, Span.input_tokens,
                    Span.output_tokens, Span.latency_s, Span.status, Span.started_at, attrs)
             .where(Span.run_id.in_(run_ids)).order_by(Span.started_at, Span.id))
    out: dict[str, list[Any]] = defaultdict(list)
    with translate_errors(engine), engine.connect() as conn:
        for row in conn.execute(query):
            out[row.run_id].append(row)
    return out


def query_outcomes(engine: Engine, filters: RunFilter | None = None, *, run_ids: Sequence[str] | None = None,
                   now: datetime | None = None) -> list[OutcomeRecord]:
    """The outcomes of the matching runs (see the module doc), newest run first.

    Args:
        engine: Store engine.
        filters: Runs by kind, status and time; outcomes by task, strategy, model and stage.
        run_ids: These runs (ids or unique prefixes) instead of the newest matching ones.
        now: The reader's clock, for the heartbeat rule.
    """
    f = filters or RunFilter()
    reap_runs(engine, now=now)
    by_facet = any(getattr(f, k) is not None for k in _FACETS)
    if run_ids is not None:
        runs, limit = _runs_by_id(engine, run_ids), None
    else:  # with outcome filters, ``limit`` counts the runs that have matching outcomes
        runs = _select_runs(engine, f.model_copy(update={"limit": None}) if by_facet else f, strict=False)
        limit = f.limit if by_facet else None
    outcomes: list[OutcomeRecord] = []
    contributing = 0
    for chunk in _chunks(runs, _PAGE // 5):
        spans = _outcome_rows(engine, [r.id for r in chunk])
        for run in chunk:
            mine = [o for o in _outcomes_of_run(run, spans.get(run.id, []))
                    if all(getattr(f, k) is None or getattr(o, k) == getattr(f, k) for k in _FACETS)]
            outcomes += mine
            contributing += bool(mine)
            if limit is not None and contributing >= limit:
                return outcomes
    return outcomes


# ---------------------------------------------------------------------- statistics


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation, as SQL's ``percentile_cont``; None if empty."""
    v = sorted(values)
    if not v:
        return None
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _aggregate(key: str | None, outs: list[OutcomeRecord]) -> GroupStats:
    known = [o.correct for o in outs if o.correct is not None]
    flops = [o.flops for o in outs if o.flops is not None]
    latencies = [o.latency_s for o in outs if o.latency_s is not None]
    tokens = sum(o.tokens for o in outs)
    return GroupStats(
        key=key, runs=len({o.run_id for o in outs}), problems=len(outs), known=len(known), correct=sum(known),
        accuracy=sum(known) / len(known) if known else None, errors=sum(o.status == "error" for o in outs),
        tokens=tokens, mean_tokens=tokens / len(outs) if outs else None, flops=sum(flops) if flops else None,
        mean_flops=sum(flops) / len(flops) if flops else None,
        latency_p50_s=percentile(latencies, 0.5), latency_p95_s=percentile(latencies, 0.95))


def stats_by(engine: Engine, by: str | None = None, filters: RunFilter | None = None, *,
             now: datetime | None = None) -> GroupedStats:
    """Outcome statistics grouped by ``by`` (one of :data:`GROUP_FIELDS`), plus their total.

    Raises:
        BadFilter: ``by`` is not a field outcomes are grouped by.
    """
    if by is not None and by not in GROUP_FIELDS:
        raise BadFilter(f"--by must be one of {', '.join(GROUP_FIELDS)}, got {by!r}")
    f = filters or RunFilter()
    outs = query_outcomes(engine, f, now=now)
    groups: dict[str | None, list[OutcomeRecord]] = defaultdict(list)
    for o in outs if by is not None else ():
        groups[o.run_kind if by == "kind" else getattr(o, by)].append(o)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    return GroupedStats(by=by, filters=f, groups=[_aggregate(k, v) for k, v in ordered],
                        total=_aggregate(None, outs))


def _common(field: str, run: RunRecord, group: list[OutcomeRecord]) -> str | None:
    # The run's own value, else the one value its outcomes share, else None (mixed).
    values = {getattr(o, field) for o in group}
    return _as_str(run.attributes.get(field)) or (values.pop() if len(values) == 1 else None)


def run_points(engine: Engine, filters: RunFilter | None = None, *, run_ids: Sequence[str] | None = None,
               now: datetime | None = None) -> list[RunPoint]:
    """One point per run with outcomes: accuracy over its graded ones against mean tokens and FLOPs per outcome."""
    per_run: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for o in query_outcomes(engine, filters, run_ids=run_ids, now=now):
        per_run[o.run_id].append(o)
    points = []
    for run in _runs_by_id(engine, list(per_run)):
        group = per_run[run.id]
        g = _aggregate(None, group)
        points.append(RunPoint(
            run_id=run.id, kind=run.kind, name=run.name, task=_common("task", run, group),
            strategy=_common("strategy", run, group), model=_common("model", run, group), created_at=run.created_at,
            problems=g.problems, known=g.known, correct=g.correct, accuracy=g.accuracy, mean_tokens=g.mean_tokens,
            mean_flops=g.mean_flops))
    return points


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def _verdicts(outs: list[OutcomeRecord]) -> dict[str, bool | None]:
    seen: dict[str, int] = defaultdict(int)
    out = {}
    for o in outs:  # a key seen again (fan-out items) is told apart by its position
        seen[o.key] += 1
        out[o.key if seen[o.key] == 1 else f"{o.key}#{seen[o.key]}"] = o.correct
    return out


def compare_runs(engine: Engine, a: str, b: str, *, now: datetime | None = None) -> CompareRecord:
    """Two runs problem by problem (ids or unique prefixes): both correct, only one, neither.

    Raises:
        RunNotFound: Either run is unknown.
    """
    run_a, run_b = _runs_by_id(engine, [a, b])
    va = _verdicts(query_outcomes(engine, run_ids=[run_a.id], now=now))
    vb = _verdicts(query_outcomes(engine, run_ids=[run_b.id], now=now))
    pairs = [ProblemPair(key=k, a=va.get(k), b=vb.get(k)) for k in [*va, *(k for k in vb if k not in va)]]
    matched = [p for p in pairs if p.a is not None and p.b is not None]
    count = {(x, y): sum(p.a is x and p.b is y for p in matched) for x in (True, False) for y in (True, False)}
    return CompareRecord(
        a=run_a.id, b=run_b.id, a_name=run_a.name, b_name=run_b.name, matched=len(matched),
        both=count[True, True], only_a=count[True, False], only_b=count[False, True], neither=count[False, False],
        accuracy_a=sum(p.a for p in matched) / len(matched) if matched else None,
        accuracy_b=sum(p.b for p in matched) / len(matched) if matched else None,
        mcnemar_p=mcnemar_p(count[True, False], count[False, True]),
        unmatched_a=sum(p.a is not None and p.b is None for p in pairs),
        unmatched_b=sum(p.b is not None and p.a is None for p in pairs), problems=pairs)


def to_dataframe(records: Iterable[BaseModel | dict[str, Any]] | BaseModel) -> Any:
    """The records as a pandas DataFrame, one row each (a GroupedStats gives its groups, a comparison its problems).

    Raises:
        ImportError: pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("to_dataframe needs pandas (pip install pandas); the query functions themselves "
                          "return plain pydantic records") from exc
    if isinstance(records, GroupedStats):
        records = records.groups or [records.total]
    elif isinstance(records, CompareRecord):
        records = records.problems
    elif isinstance(records, BaseModel):
        records = [records]
    return pd.DataFrame([r.model_dump() if isinstance(r, BaseModel) else dict(r) for r in records])
