"""Trace queries (store.analysis and `ttc traces list|stats|export|plot`) over SQLite and PostgreSQL.

A small store is written through TraceStore with known verdicts, tokens, FLOPs and
latencies, so every figure below is checked against a value worked out by hand.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta

import pytest

from ttc.orchestrator.cli import main
from ttc.store import SpanRecord, TraceStore
from ttc.store import analysis as an
from ttc.store import export as ex
from ttc.store.queries import RunNotFound
from ttc.store.records import RunFilter

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVIL = "[/b]$"  # Rich markup and matplotlib math: both must print literally


def _span(run_id, kind, name, start, latency, parent=None, **kw):
    started = NOW - timedelta(hours=1) + timedelta(seconds=start)
    return SpanRecord(run_id=run_id, parent_id=parent, kind=kind, name=name, started_at=started,
                      ended_at=started + timedelta(seconds=latency), latency_s=latency, **kw)


def _problem(store, run_id, root, key, t, correct, tokens, latency, *, flops=None, status="ok", model="m1"):
    """A problem span over a strategy span over an llm span (whose tokens must not be counted again)."""
    attrs = {"problem": {"id": key}, "correct": correct, "tokens": tokens}
    if flops is not None:
        attrs["flops"] = flops
    p = _span(run_id, "problem", key, t, latency, root, status=status, attributes=attrs)
    s = _span(run_id, "strategy", "x", t, latency, p.id)
    llm = _span(run_id, "llm", "round 0", t, latency, s.id, model=model, input_tokens=3, output_tokens=tokens - 3,
                finish_reason="stop", attributes={"gen_ai.operation.name": "text_completion", "ttc.flops": 1.0})
    for span in (llm, s, p):
        store.add_span(span)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_ids(request, tmp_path_factory):
    """Six runs: two evals, a graph, a solve, a batch (non-hex id) and an old failed eval.

    One store per module and database (the tests only read it), like ``db_url`` otherwise.
    """
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path_factory.mktemp('traces') / 'ttc.db'}"
    else:
        db_url = request.getfixturevalue("new_pg_database")()
    clock = {"t": NOW - timedelta(hours=1)}
    store = TraceStore.open(db_url, clock=lambda: clock["t"])
    ids = {}
    # eval A: best_of_n on m1; verdicts T, T, F, unknown.
    a = ids["a"] = store.start_run("eval", "countdown/best_of_n", {"task": "countdown", "strategy": "best_of_n",
                                                                  "model": "m1", "models": {"policy": "m1"}})
    root = _span(a, "run", "countdown/best_of_n", 0, 2.0)
    for i, (c, tok, lat) in enumerate([(True, 10, 0.1), (True, 20, 0.2), (False, 30, 0.3), (None, 40, 0.4)]):
        _problem(store, a, root.id, f"p{i + 1}", i, c, tok, lat, flops=100.0 * (i + 1))
    store.add_span(root)
    store.end_run(a, attributes_update={"accuracy": 2 / 3})
    # eval B: sample on m2; p2 failed once and was retried (counts once, as its last ok span).
    clock["t"] += timedelta(minutes=1)
    b = ids["b"] = store.start_run("eval", "countdown/sample", {"task": "countdown", "strategy": "sample",
                                                               "model": "m2"})
    root = _span(b, "run", "countdown/sample", 0, 1.0)
    _problem(store, b, root.id, "p2", 0, None, 5, 0.5, status="error", model="m2")
    for i, c in enumerate([True, False, True, False]):
        _problem(store, b, root.id, f"p{i + 1}", 1 + i, c, 8, 0.05, flops=10.0, model="m2")
    store.add_span(root)
    store.end_run(b)
    # graph: stages plan (countdown) and grid (sudoku); FLOPs come from their llm spans.
    clock["t"] += timedelta(minutes=1)
    g = ids["g"] = store.start_run("graph", "plan-solve", {
        "graph": {"name": "plan-solve", "stages": [{"name": "plan", "task": "countdown"},
                                                   {"name": "grid", "task": "sudoku"}]},
        "allocation": {"stages": {"plan": {"model": "m1", "strategy": "best_of_n"},
                                  "grid": {"model": "m3", "strategy": "sequential"}}}})
    root = _span(g, "run", "plan-solve", 0, 3.0)
    for j, (stage, model, strategy, ok) in enumerate([("plan", "m1", "best_of_n", True),
                                                      ("grid", "m3", "sequential", False)]):
        st = _span(g, "stage", stage, j, 1.0 + j, root.id, attributes={
            "ttc.stage.model": model, "ttc.stage.strategy": strategy, "ttc.correct": ok, "ttc.tokens": 70})
        for k in range(2):
            store.add_span(_span(g, "llm", f"r{k}", j, 0.1, st.id, model=model, input_tokens=5, output_tokens=30,
                                 attributes={"ttc.flops": 1000.0}))
        store.add_span(st)
    store.add_span(root)
    store.end_run(g)
    # solve: one outcome, the run itself.
    clock["t"] += timedelta(minutes=1)
    s = ids["s"] = store.start_run("solve", EVIL, {"task": "countdown", "strategy": EVIL, "model": "m1",
                                                   "correct": True, "tokens": 50, "flops": 5e6})
    store.add_span(_span(s, "run", EVIL, 0, 0.7))
    store.end_run(s)
    # batch with a non-hex run id: job outcomes keyed by custom_id, tokens from their llm spans.
    clock["t"] += timedelta(minutes=1)
    ids["batch"] = store.start_run("batch", "lines.jsonl", {"model": "m2"}, run_id="batch-run-1")
    for k, ok in enumerate([True, False]):
        job = _span("batch-run-1", "job", f"line {k}", k, 0.2, attributes={"custom_id": f"req-{k}", "correct": ok})
        store.add_span(_span("batch-run-1", "llm", "chat", k, 0.2, job.id, model="m2", input_tokens=4,
                             output_tokens=6, finish_reason="stop,length"))
        store.add_span(job)
    store.end_run("batch-run-1")
    # An old failed eval, three days back.
    clock["t"] = NOW - timedelta(days=3)
    ids["old"] = store.start_run("eval", "old", {"task": "sudoku", "strategy": "sample", "model": "m3"})
    store.end_run(ids["old"], status="error", error="boom")
    store.close()
    return db_url, ids


@pytest.fixture(scope="module")
def engine(store_ids):
    from ttc.store.engine import make_engine

    eng = make_engine(store_ids[0])
    yield eng
    eng.dispose()


def test_query_runs_filters(store_ids, engine, monkeypatch):
    _, ids = store_ids

    def q(**kw):
        return [r.id for r in an.query_runs(engine, an.make_filter(now=NOW, **kw), now=NOW)]

    assert q() == [ids["batch"], ids["s"], ids["g"], ids["b"], ids["a"], ids["old"]]  # newest first
    assert q(kind="eval") == [ids["b"], ids["a"], ids["old"]]
    assert q(status="error") == [ids["old"]]
    assert q(task="countdown") == [ids["s"], ids["g"], ids["b"], ids["a"]]
    assert q(task="sudoku") == [ids["g"], ids["old"]]
    assert q(model="m1") == [ids["s"], ids["g"], ids["a"]]  # run model, graph allocation, models dict
    assert q(strategy="sequential") == [ids["g"]]
    assert q(stage="plan") == [ids["g"]]
    assert q(since="2d") == q(since="2026-02-28T12:00") == [ids["batch"], ids["s"], ids["g"], ids["b"], ids["a"]]
    assert q(until="2d") == [ids["old"]]
    monkeypatch.setattr(an, "_PAGE", 2)  # attribute filters read runs page by page
    assert q(model="m1", limit=2) == [ids["s"], ids["g"]]
    assert q(task="countdown") == [ids["s"], ids["g"], ids["b"], ids["a"]]


@pytest.mark.parametrize(("kw", "needle"), [
    ({"status": "done"}, "--status"), ({"since": "yesterday"}, "--since must be an ISO time"),
    ({"until": "3x"}, "--until"), ({"limit": 0}, "--limit"), ({"since": "1h", "until": "2h"}, "after --until"),
])
def test_bad_filters_raise_bad_filter(kw, needle):
    with pytest.raises(an.BadFilter, match=re.escape(needle)) as exc:
        an.make_filter(now=NOW, **kw)
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_outcomes_follow_the_rules(store_ids, engine):
    _, ids = store_ids
    outs = an.query_outcomes(engine, now=NOW)
    by_run = {}
    for o in outs:
        by_run.setdefault(o.run_id, []).append(o)
    a = by_run[ids["a"]]
    assert [(o.source, o.key, o.correct, o.tokens, o.flops) for o in a] == [
        ("problem", "p1", True, 10, 100.0), ("problem", "p2", True, 20, 200.0), ("problem", "p3", False, 30, 300.0),
        ("problem", "p4", None, 40, 400.0)]
    b = by_run[ids["b"]]
    assert [o.key for o in b] == ["p1", "p2", "p3", "p4"] and all(o.status == "ok" for o in b)
    g = {o.stage: o for o in by_run[ids["g"]]}
    assert (g["plan"].task, g["plan"].model, g["plan"].strategy, g["plan"].correct) == ("countdown", "m1",
                                                                                         "best_of_n", True)
    assert (g["grid"].task, g["grid"].model, g["grid"].tokens, g["grid"].flops) == ("sudoku", "m3", 70, 2000.0)
    (s,) = by_run[ids["s"]]
    assert (s.source, s.correct, s.tokens, s.flops, s.latency_s) == ("run", True, 50, 5e6, 0.7)
    jobs = by_run["batch-run-1"]
    assert [(o.key, o.correct, o.tokens, o.model) for o in jobs] == [("req-0", True, 10, "m2"),
                                                                    ("req-1", False, 10, "m2")]
    (old,) = by_run[ids["old"]]
    assert old.status == "error" and old.correct is None
    only = an.query_outcomes(engine, an.make_filter(stage="grid"), now=NOW)
    assert [(o.run_id, o.stage) for o in only] == [(ids["g"], "grid")]


def test_stats_by_strategy_model_and_stage(store_ids, engine):
    st = an.stats_by(engine, "strategy", an.make_filter(kind="eval", since="1d", now=NOW), now=NOW)
    groups = {g.key: g for g in st.groups}
    bon = groups["best_of_n"]
    assert (bon.runs, bon.problems, bon.known, bon.correct, bon.accuracy) == (1, 4, 3, 2, 2 / 3)
    assert (bon.tokens, bon.mean_tokens, bon.flops, bon.mean_flops) == (100, 25.0, 1000.0, 250.0)
    assert bon.latency_p50_s == pytest.approx(0.25) and bon.latency_p95_s == pytest.approx(0.385)
    smp = groups["sample"]
    assert (smp.problems, smp.correct, smp.accuracy, smp.errors, smp.tokens) == (4, 2, 0.5, 0, 32)
    assert (st.total.runs, st.total.problems, st.total.known) == (2, 8, 7)

    by_model = {g.key: g for g in an.stats_by(engine, "model", now=NOW).groups}
    assert by_model["m1"].runs == 3 and by_model["m1"].problems == 4 + 1 + 1  # eval A, plan stage, solve
    assert by_model["m3"].problems == 2 and by_model["m3"].errors == 1  # grid stage, old failed run
    by_stage = an.stats_by(engine, "stage", an.make_filter(kind="graph"), now=NOW)
    assert [(g.key, g.accuracy, g.mean_flops) for g in by_stage.groups] == [("grid", 0.0, 2000.0),
                                                                            ("plan", 1.0, 2000.0)]
    with pytest.raises(an.BadFilter, match="--by must be one of"):
        an.stats_by(engine, "colour")


def test_percentile_and_mcnemar():
    assert an.percentile([], 0.5) is None
    assert an.percentile([3.0], 0.95) == 3.0
    assert an.percentile([4, 1, 3, 2], 0.5) == 2.5
    assert an.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95) == pytest.approx(9.55)
    assert an.mcnemar_p(0, 0) == 1.0 and an.mcnemar_p(1, 1) == 1.0
    assert an.mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert an.mcnemar_p(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_compare_runs_problem_by_problem(store_ids, engine):
    _, ids = store_ids
    cmp = an.compare_runs(engine, ids["a"][:8], ids["b"], now=NOW)
    # A: T T F ?; B: T F T F -> p1 both, p2 only A, p3 only B, p4 unknown in A.
    assert (cmp.a, cmp.matched, cmp.both, cmp.only_a, cmp.only_b, cmp.neither) == (ids["a"], 3, 1, 1, 1, 0)
    assert (cmp.unmatched_a, cmp.unmatched_b, cmp.mcnemar_p) == (0, 1, 1.0)
    assert cmp.accuracy_a == pytest.approx(2 / 3) and cmp.accuracy_b == pytest.approx(2 / 3)
    assert [p.key for p in cmp.problems] == ["p1", "p2", "p3", "p4"]
    with pytest.raises(RunNotFound):
        an.compare_runs(engine, ids["a"], "nosuchrun")


def test_run_points(store_ids, engine):
    _, ids = store_ids
    points = {p.run_id: p for p in an.run_points(engine, RunFilter(kind="eval"), now=NOW)}
    a = points[ids["a"]]
    assert (a.strategy, a.model, a.known, a.correct, a.mean_tokens, a.mean_flops) == ("best_of_n", "m1", 3, 2,
                                                                                      25.0, 250.0)
    assert points[ids["old"]].known == 0


def test_export_formats(store_ids, engine):
    _, ids = store_ids
    spans = list(ex.export_spans(engine, run_ids=[ids["a"]], now=NOW))
    assert len(spans) == 13 and {s.run_id for s in spans} == {ids["a"]}
    buf = io.StringIO()
    assert ex.write_spans(spans, "jsonl", buf) == 13
    assert [json.loads(line)["id"] for line in buf.getvalue().splitlines()] == [s.id for s in spans]
    buf = io.StringIO()
    ex.write_spans(spans, "csv", buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(rows[0]) == list(ex.CSV_COLUMNS) and len(rows) == 13
    assert json.loads(next(r for r in rows if r["kind"] == "problem")["attributes"])["problem"] == {"id": "p1"}
    with pytest.raises(an.BadFilter):
        ex.write_spans(spans, "xml", io.StringIO())


def _attrs(span):
    return {a["key"]: a["value"] for a in span["attributes"]}


def test_otlp_json_follows_the_encoding_rules(store_ids, engine):
    _, ids = store_ids
    buf = io.StringIO()
    n = ex.write_spans(ex.export_spans(engine, run_ids=[ids["b"], "batch-run-1"], now=NOW), "otlp", buf)
    doc = json.loads(buf.getvalue())
    (rs,) = doc["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": "ttc"}} in rs["resource"]["attributes"]
    (scope,) = rs["scopeSpans"]
    spans = scope["spans"]
    assert scope["scope"]["name"] == "ttc" and len(spans) == n == 16 + 4
    ids_in = {s["spanId"] for s in spans}
    for s in spans:
        assert re.fullmatch(r"[0-9a-f]{32}", s["traceId"]) and re.fullmatch(r"[0-9a-f]{16}", s["spanId"])
        assert s.get("parentSpanId") is None or s["parentSpanId"] in ids_in
        assert isinstance(s["startTimeUnixNano"], str) and int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"])
        assert s["kind"] in (1, 3) and s["status"]["code"] in (1, 2)
        for v in _attrs(s).values():
            assert len(v) == 1 and next(iter(v)) in ("stringValue", "intValue", "doubleValue", "boolValue",
                                                     "arrayValue")
            assert "intValue" not in v or isinstance(v["intValue"], str)
    assert {s["traceId"] for s in spans} == {ids["b"], ex._hex_id("batch-run-1", 32)}
    llms = [s for s in spans if s["kind"] == 3 and s["traceId"] == ids["b"]]
    assert len(llms) == 5 and {s["name"] for s in llms} == {"text_completion m2"}
    at = [_attrs(s) for s in llms]
    assert {a["gen_ai.usage.output_tokens"]["intValue"] for a in at} == {"2", "5"}  # the failed try, the others
    assert all(a["gen_ai.request.model"] == {"stringValue": "m2"} and a["gen_ai.usage.input_tokens"]["intValue"] == "3"
               and a["gen_ai.response.finish_reasons"] == {"arrayValue": {"values": [{"stringValue": "stop"}]}}
               for a in at)
    failed = next(s for s in spans if s["status"]["code"] == 2)
    assert _attrs(failed)["ttc.span.kind"] == {"stringValue": "problem"}
    batch_llm = next(s for s in spans if s["kind"] == 3 and _attrs(s).get("ttc.run_id"))
    assert _attrs(batch_llm)["ttc.run_id"] == {"stringValue": "batch-run-1"}
    assert len(_attrs(batch_llm)["gen_ai.response.finish_reasons"]["arrayValue"]["values"]) == 2
    empty = io.StringIO()
    assert ex.write_spans([], "otlp", empty) == 0 and json.loads(empty.getvalue()) == {"resourceSpans": []}


def test_to_dataframe(store_ids, engine, monkeypatch):
    pd = pytest.importorskip("pandas")
    df = an.to_dataframe(an.stats_by(engine, "strategy", now=NOW))
    assert isinstance(df, pd.DataFrame) and "accuracy" in df.columns and len(df) == 5
    assert len(an.to_dataframe(an.query_outcomes(engine, now=NOW))) == 4 + 4 + 2 + 1 + 2 + 1
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        an.to_dataframe([])


# ---------------------------------------------------------------------- CLI


def ttc(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def one_json(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return json.loads(lines[0])


def test_cli_list_and_stats(capsys, store_ids):
    url, ids = store_ids
    code, out, _ = ttc(capsys, "traces", "list", "--db", url, "--model", "m1", "--kind", "eval", "--json")
    assert code == 0 and [r["id"] for r in one_json(out)["runs"]] == [ids["a"]]
    code, out, _ = ttc(capsys, "traces", "stats", "--db", url, "--by", "strategy", "--json")
    st = one_json(out)
    groups = {g["key"]: g for g in st["groups"]}
    assert code == 0 and st["by"] == "strategy" and groups["best_of_n"]["known"] == 3 + 1  # eval A + plan stage
    assert groups["sample"]["ci95"][0] < groups["sample"]["accuracy"] < groups["sample"]["ci95"][1]
    code, out, err = ttc(capsys, "traces", "stats", "--db", url, "--by", "strategy")
    assert code == 0 and EVIL in out and "total" in out, err
    code, out, _ = ttc(capsys, "traces", "stats", "--db", url, "--json")  # no filter: the store totals
    assert code == 0 and one_json(out)["runs"] == 6 and "groups" not in one_json(out)


@pytest.mark.parametrize("args", [
    ["traces", "list", "--status", "done"], ["traces", "stats", "--since", "last week"],
    ["traces", "stats", "--by", "colour"], ["traces", "export", "--all", "--format", "xml"],
    ["traces", "export"], ["traces", "export", "--all", "--json"], ["traces", "plot", "--x", "joules"],
    ["traces", "plot", "--compare", "a", "b", "--kind", "eval"], ["traces", "export", "abcdef", "--kind", "eval"],
])
def test_cli_bad_values_exit_2_with_one_line(capsys, store_ids, args):
    code, out, err = ttc(capsys, *args, "--db", store_ids[0], "--json")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert set(one_json(out)) == {"error"}


def test_cli_export_to_files(capsys, store_ids, tmp_path):
    url, ids = store_ids
    target = tmp_path / "spans.otlp.json"
    code, out, _ = ttc(capsys, "traces", "export", "--all", "--kind", "eval", "--since", "2026-02-28", "--format", "otlp",
                       "-o", str(target), "--db", url, "--json")
    summary = one_json(out)
    assert code == 0 and summary == {"path": str(target), "format": "otlp", "runs": 2, "spans": 13 + 16}
    assert len(json.loads(target.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 29
    code, out, _ = ttc(capsys, "traces", "export", ids["g"][:8], "--format", "csv", "--db", url)
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 7
    code, _, err = ttc(capsys, "traces", "export", ids["g"], "-o", str(tmp_path / "no" / "x.jsonl"), "--db", url)
    assert code == 2 and "does not exist" in err


def test_plot_draws_intervals_that_end_at_the_point(tmp_path):
    """At 0/n the Wilson interval's lower end can be a rounding error above 0: the plot still draws."""
    from ttc.orchestrator._cli_traces import _draw_points
    from ttc.store.records import RunPoint

    points = [RunPoint(run_id=f"r{n}", kind="eval", name="x", task=None, strategy=EVIL, model=None, created_at=NOW,
                       problems=n, known=n, correct=c, accuracy=c / n, mean_tokens=10.0 * n, mean_flops=None)
              for n, c in ((3, 0), (6, 0), (7, 7))]
    _draw_points(points, "tokens", tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_plot_and_compare(capsys, store_ids, tmp_path):
    url, ids = store_ids
    png = tmp_path / "acc.png"
    code, out, err = ttc(capsys, "traces", "plot", "-o", str(png), "--db", url, "--json")
    data = one_json(out)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p["run_id"] for p in data["points"]} == {ids["a"], ids["b"], ids["old"]}
    assert data["skipped"] == [ids["old"]]  # nothing graded
    # The solve is 1/1 and the grid stage 0/1: interval ends that round past the point still draw.
    code, out, err = ttc(capsys, "traces", "plot", ids["s"], ids["g"], "--x", "flops", "-o", str(png), "--db", url)
    assert code == 0 and EVIL in out, err
    cmp_png = tmp_path / "cmp.png"
    code, out, _ = ttc(capsys, "traces", "plot", "--compare", ids["a"], ids["b"], "-o", str(cmp_png), "--db", url,
                       "--json")
    cmp = one_json(out)
    assert code == 0 and (cmp["both"], cmp["only_a"], cmp["only_b"], cmp["neither"]) == (1, 1, 1, 0)
    assert cmp_png.stat().st_size > 1000
    code, out, _ = ttc(capsys, "traces", "plot", "--compare", ids["a"], ids["b"], "--db", url)
    assert code == 0 and "3 problems graded in both" in out


@pytest.mark.slow  # two real evals: about 10-20 s on two shared cores
def test_real_evals_through_stats_plot_and_export(capsys, tmp_path):
    """Two real evals of the built-in CountDown model on the same problems, then every query over them."""
    url = f"sqlite:///{tmp_path / 'real.db'}"
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "numbers": n, "target": t}) + "\n"
                                for i, (n, t) in enumerate([([2, 3, 4], 10), ([5, 1, 6], 30), ([7, 2, 3], 17)])))
    reports = []
    for extra in (["-s", "sample"], ["-s", "best_of_n", "-n", "2"]):
        code, out, err = ttc(capsys, "eval", "--task", "countdown", "--problems", str(problems), *extra,
                             "--max-tokens", "48", "--seed", "3", "--device", "cpu", "--db", url, "--json")
        assert code == 0, err
        reports.append(one_json(out))
    code, out, _ = ttc(capsys, "traces", "stats", "--by", "strategy", "--kind", "eval", "--db", url, "--json")
    groups = {g["key"]: g for g in one_json(out)["groups"]}
    for rep in reports:  # the store's figures are the eval's own
        g = groups[rep["strategy"]]
        assert (g["problems"], g["correct"], g["tokens"]) == (3, rep["n_correct"], rep["tokens"])
        assert g["flops"] == pytest.approx(rep["flops"])
    code, out, _ = ttc(capsys, "traces", "plot", "--compare", reports[0]["trace_id"], reports[1]["trace_id"],
                       "--db", url, "--json")
    cmp = one_json(out)
    verdicts = {r["trace_id"]: {p["id"]: p["correct"] for p in r["problems"]} for r in reports}
    assert cmp["matched"] == 3 and cmp["both"] == sum(verdicts[cmp["a"]][k] and verdicts[cmp["b"]][k]
                                                      for k in ("q0", "q1", "q2"))
    code, out, err = ttc(capsys, "traces", "plot", "-o", str(tmp_path / "a.png"), "--db", url, "--json")
    assert code == 0, err
    assert len(one_json(out)["points"]) == 2 and (tmp_path / "a.png").stat().st_size > 1000
    code, out, _ = ttc(capsys, "traces", "export", reports[1]["trace_id"], "--format", "otlp", "--db", url)
    spans = json.loads(out)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    llm = [s for s in spans if s["kind"] == 3]
    assert llm and sum(int(_attrs(s)["gen_ai.usage.input_tokens"]["intValue"])
                       + int(_attrs(s)["gen_ai.usage.output_tokens"]["intValue"]) for s in llm) == reports[1]["tokens"]


def test_limit_counts_runs_with_matching_outcomes(store_ids, engine):
    ids = store_ids[1]
    # The newest run with a "plan" stage is the graph, though the solve and the batch are newer.
    st = an.stats_by(engine, "stage", an.make_filter(stage="plan", limit=1), now=NOW)
    assert [(g.key, g.runs, g.problems) for g in st.groups] == [("plan", 1, 1)]
    st = an.stats_by(engine, None, an.make_filter(model="m2", limit=2), now=NOW)
    assert (st.total.runs, st.total.problems) == (2, 2 + 4)  # the batch's jobs and eval B's problems
    outs = an.query_outcomes(engine, an.make_filter(model="m1", limit=2), now=NOW)
    assert [o.run_id for o in outs] == [ids["s"], ids["g"]]  # the solve, then the graph's plan stage


def test_nested_outcomes_count_once(tmp_path):
    """A problem span inside a batch job is part of the job, not a second outcome."""
    url = f"sqlite:///{tmp_path / 'n.db'}"
    with TraceStore.open(url) as store:
        rid = store.start_run("batch", "b.jsonl", {"batch": {"input": "b.jsonl"}})
        job = _span(rid, "job", "line 0", 0, 1.0, attributes={"custom_id": "x", "correct": True})
        _problem(store, rid, job.id, "p1", 0, False, 12, 0.5)
        store.add_span(job)
        store.end_run(rid)
    from ttc.store.engine import make_engine

    eng = make_engine(url)
    try:
        (o,) = an.query_outcomes(eng)
        # Tokens, model and strategy from the spans below it: the job span and its run name none.
        assert (o.source, o.key, o.correct, o.tokens, o.model, o.strategy) == ("job", "x", True, 12, "m1", "x")
    finally:
        eng.dispose()
