"""What the viewer's JSON routes return: store queries turned into plain JSON values.

Every function reads the store only (``ttc.store``) and returns dicts of JSON values;
the routes add nothing but HTTP. Text from the store travels as JSON strings, and the page
puts it into the DOM as text, never as markup.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine

from ttc.core.metrics import wilson_ci95
from ttc.store.analysis import compare_runs, make_filter, query_outcomes, query_runs, run_points
from ttc.store.queries import get_run, get_run_record
from ttc.store.records import RunPoint, RunRecord

__all__ = ["MAX_ATTRIBUTE_CHARS", "X_AXES", "compare_json", "points_json", "run_detail_json", "run_points_json",
           "runs_json"]

#: A run attribute whose JSON is longer is left out of run lists (an eval's plan repeats every
#: problem); ``/api/runs/{id}`` has it whole.
MAX_ATTRIBUTE_CHARS = 2000
X_AXES = ("tokens", "flops")


def _ci(correct: int, known: int) -> list[float] | None:
    return wilson_ci95(correct, known) if known else None


def _run_summary(run: RunRecord) -> dict[str, Any]:
    out = run.model_dump(mode="json")
    kept, omitted = {}, []
    for key, value in out["attributes"].items():
        if len(json.dumps(value, default=str)) > MAX_ATTRIBUTE_CHARS:
            omitted.append(key)
        else:
            kept[key] = value
    out["attributes"] = kept
    out["attributes_omitted"] = omitted
    return out


def runs_json(engine: Engine, filters: dict[str, Any]) -> dict[str, Any]:
    """The runs the filters match, newest first, with their large attributes left out.

    Args:
        engine: Store engine.
        filters: ``make_filter`` keywords (kind, status, task, strategy, model, stage, since,
            until, limit); None values mean any.

    Raises:
        BadFilter: A value the filter cannot take.
    """
    f = make_filter(**filters)
    runs = query_runs(engine, f)
    return {"filters": f.model_dump(mode="json", exclude_none=True), "runs": [_run_summary(r) for r in runs]}


def run_detail_json(engine: Engine, run_id: str) -> dict[str, Any]:
    """One run with its spans (by start time) and candidates, as ``ttc traces show --json``.

    Raises:
        RunNotFound: No run has that id or unique prefix.
    """
    return get_run(engine, run_id).model_dump(mode="json")


def _point(p: RunPoint) -> dict[str, Any]:
    return {**p.model_dump(mode="json"), "ci95": _ci(p.correct, p.known)}


def points_json(engine: Engine, filters: dict[str, Any]) -> dict[str, Any]:
    """Accuracy against mean compute, one point per matching run (evals unless ``kind`` says otherwise).

    Raises:
        BadFilter: A value the filter cannot take.
    """
    f = make_filter(**{**filters, "kind": filters.get("kind") or "eval"})
    return {"filters": f.model_dump(mode="json", exclude_none=True), "points": [_point(p) for p in run_points(engine, f)]}


def run_points_json(engine: Engine, run_id: str, *, peers: int = 30) -> dict[str, Any]:
    """The data of one run's accuracy-vs-compute plot.

    ``run`` is the run's own point (accuracy over its graded outcomes against mean tokens and
    FLOPs per outcome); ``peers`` the points of the newest other runs of the same kind and
    task (the other evals of a bench, earlier evals of the task), so the run is seen against
    them; ``outcomes`` its graded units one by one (problem, tokens, FLOPs, verdict), from
    which the page draws the share of problems solved within each token count.

    Args:
        engine: Store engine.
        run_id: Full id or unique prefix.
        peers: Other runs to include at most (0: none).

    Raises:
        RunNotFound: No run has that id or unique prefix.
    """
    run = get_run_record(engine, run_id)
    own = run_points(engine, run_ids=[run.id])
    others: list[dict[str, Any]] = []
    if peers > 0:
        task = run.attributes.get("task")
        f = make_filter(kind=run.kind, task=task if isinstance(task, str) else None, limit=peers + 1)
        others = [_point(p) for p in run_points(engine, f) if p.run_id != run.id][:peers]
    outcomes = [{"key": o.key, "correct": o.correct, "tokens": o.tokens, "flops": o.flops, "status": o.status,
                 "span_id": o.span_id}
                for o in query_outcomes(engine, run_ids=[run.id])]
    return {"run_id": run.id, "run": _point(own[0]) if own else None, "peers": others, "outcomes": outcomes}


def compare_json(engine: Engine, a: str, b: str) -> dict[str, Any]:
    """Two runs problem by problem (``ttc traces plot --compare A B --json``).

    Raises:
        RunNotFound: Either run is unknown.
    """
    cmp = compare_runs(engine, a, b)
    return {**cmp.model_dump(mode="json"), "ci95_a": _ci(cmp.both + cmp.only_a, cmp.matched),
            "ci95_b": _ci(cmp.both + cmp.only_b, cmp.matched)}
