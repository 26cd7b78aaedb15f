"""``ttc traces list|show|stats|export|plot|serve``: query the trace store.

The queries themselves live in ``ttc.store.analysis`` (plain records, usable from Python);
this module parses flags, prints tables, and draws. Filter values that cannot be used
exit 2 with one line (``BadFilter``); every text from the store is escaped for Rich.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.tree import Tree

from ttc.backends.errors import BadInputError

from ._cli_common import (
    DbOption,
    JsonOption,
    bind_socket,
    emit_json,
    esc,
    make_table,
    open_orchestrator,
    stderr,
    stdout,
)

__all__ = ["traces_app"]

traces_app = typer.Typer(help="Query the trace store: list, show, stats, export, plot, serve.", no_args_is_help=True)

KindOpt = Annotated[str | None, typer.Option("--kind", help="Only runs of this kind (eval, solve, graph, batch, ...).")]
StatusOpt = Annotated[str | None, typer.Option("--status", help="Only runs with this status: running, ok, error, "
                                                               "interrupted.")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only this task (e.g. countdown).")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="Only this strategy (e.g. best_of_n).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Only this model.")]
StageOpt = Annotated[str | None, typer.Option("--stage", help="Only this task-graph stage.")]
SinceOpt = Annotated[str | None, typer.Option("--since", metavar="TIME",
                                              help="Runs started at or after TIME: ISO (2026-01-31T12:00) or an age "
                                                   "(90s, 15m, 2h, 3d, 1w).")]
UntilOpt = Annotated[str | None, typer.Option("--until", metavar="TIME", help="Runs started at or before TIME.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="The newest N matching runs at most.")]


def _filter(**values: Any):
    from ttc.store.analysis import make_filter

    return make_filter(**values)


def _wilson(correct: int, known: int) -> list[float] | None:
    from ttc.core.metrics import wilson_ci95

    return wilson_ci95(correct, known) if known else None


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if 100 <= abs(value) < 1e7 else f"{value:.3g}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _accuracy(correct: int, known: int) -> tuple[str, str]:
    """Accuracy as ``0.250 1/4`` and its Wilson interval as ``0.05-0.70`` (``-`` when nothing is graded)."""
    if not known:
        return "-", "-"
    lo, hi = _wilson(correct, known)
    return f"{correct / known:.3f} {correct}/{known}", f"{lo:.2f}-{hi:.2f}"


# ---------------------------------------------------------------------- list and show


@traces_app.command("list")
def traces_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Runs to show at most.")] = 20,
    kind: KindOpt = None, status: StatusOpt = None, task: TaskOpt = None, strategy: StrategyOpt = None,
    model: ModelOpt = None, stage: StageOpt = None, since: SinceOpt = None, until: UntilOpt = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List recent runs, newest first."""
    from ttc.store.analysis import query_runs

    f = _filter(limit=limit, kind=kind, status=status, task=task, strategy=strategy, model=model, stage=stage,
                since=since, until=until)
    with open_orchestrator(db) as orc:
        runs = query_runs(orc.store.engine, f)
    if json_out:
        emit_json({"runs": runs})
        return
    table = make_table("id", "kind", "name", "status", "started", "in", "out")
    for r in runs:
        table.add_row(esc(r.id), esc(r.kind), esc(r.name), esc(r.status), r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                      str(r.input_tokens), str(r.output_tokens))
    stdout.print(table if runs else "no runs match" if f.model_dump(exclude={"limit"}, exclude_none=True)
                 else "no runs recorded yet")


def _span_label(s) -> str:
    label = f"{esc(s.kind)}:{esc(s.name)}"
    if s.model:
        label += f" model={esc(s.model)}"
    if s.input_tokens or s.output_tokens:
        label += f" in={s.input_tokens} out={s.output_tokens}"
    if s.finish_reason:
        label += f" finish={esc(s.finish_reason)}"
    if s.latency_s is not None:
        label += f" {s.latency_s * 1000:.0f}ms"
    if s.status == "error":
        label += f" [red]error: {esc(s.error)}[/]"
    return label


@traces_app.command("show")
def traces_show(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix of at least 6 characters.")],
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one run: its spans as a tree, and its candidates."""
    with open_orchestrator(db) as orc:
        detail = orc.get_run(run_id)
    if json_out:
        emit_json(detail)
        return
    r = detail.run
    colour = "green" if r.status == "ok" else "red"
    root = Tree(f"[bold]{esc(r.kind)}[/] {esc(r.name)}  {esc(r.id)}  [{colour}]{esc(r.status)}[/]"
                f"  in={r.input_tokens} out={r.output_tokens}")
    if r.error:
        root.add(f"[red]error: {esc(r.error)}[/]")
    # Parents end after their children, so spans are placed by parent id in a second pass.
    nodes = {s.id: (s, _span_label(s)) for s in detail.spans}
    children: dict[str | None, list[str]] = {}
    for sid, (s, _) in nodes.items():
        parent = s.parent_id if s.parent_id in nodes else None
        children.setdefault(parent, []).append(sid)

    def attach(tree: Tree, parent: str | None) -> None:
        for sid in children.get(parent, []):
            attach(tree.add(nodes[sid][1]), sid)

    attach(root, None)
    stdout.print(root)
    if detail.candidates:
        table = make_table("#", "answer", "correct", "score", "tokens", "text", title="candidates")
        for c in detail.candidates:
            table.add_row(str(c.idx), esc(c.answer), str(c.correct), "" if c.score is None else f"{c.score:.3g}",
                          str(c.tokens), esc(repr(c.text[:80])))
        stdout.print(table)


# ---------------------------------------------------------------------- stats


@traces_app.command("stats")
def traces_stats(
    by: Annotated[str | None, typer.Option("--by", help="Group outcomes by strategy, model, stage, task or kind.")]
    = None,
    kind: KindOpt = None, status: StatusOpt = None, task: TaskOpt = None, strategy: StrategyOpt = None,
    model: ModelOpt = None, stage: StageOpt = None, since: SinceOpt = None, until: UntilOpt = None,
    limit: LimitOpt = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store totals; with --by or a filter other than --kind, accuracy, tokens, FLOPs and latency per group.

    An outcome is an eval problem, a batch job, a graph stage, or a run without those; its
    accuracy counts the outcomes whose verdict is known.
    """
    narrowed = any(v is not None for v in (by, status, task, strategy, model, stage, since, until, limit))
    if not narrowed:
        with open_orchestrator(db) as orc:
            _print_totals(orc.stats(kind=kind), json_out)
        return
    from ttc.store.analysis import stats_by

    f = _filter(kind=kind, status=status, task=task, strategy=strategy, model=model, stage=stage, since=since,
                until=until, limit=limit)
    with open_orchestrator(db) as orc:
        st = stats_by(orc.store.engine, by, f)
    groups = [*st.groups, st.total]
    if json_out:
        out = st.model_dump(mode="json")
        for g, record in zip([*out["groups"], out["total"]], groups, strict=True):
            g["ci95"] = _wilson(record.correct, record.known)
        emit_json(out)
        return
    table = make_table(by or "all", "runs", "n", "accuracy", "95% CI", "tokens", "FLOPs", "p50", "p95", "err")
    table.caption = "n outcomes; accuracy over those graded; tokens and FLOPs per outcome; p50/p95 outcome latency"
    for g in groups:
        name = "total" if g is st.total else "-" if g.key is None else g.key
        table.add_row(esc(name), str(g.runs), str(g.problems), *_accuracy(g.correct, g.known), _num(g.mean_tokens),
                      _num(g.mean_flops), _ms(g.latency_p50_s), _ms(g.latency_p95_s), str(g.errors))
    stdout.print(table if st.total.problems else "no runs match")


def _print_totals(st, json_out: bool) -> None:
    if json_out:
        emit_json(st)
        return
    stdout.print(f"runs: {st.runs} {esc(dict(st.runs_by_status))}; "
                 f"tokens: {st.input_tokens} in, {st.output_tokens} out")
    table = make_table("model", "calls", "in", "out", "mean latency")
    for m in st.models:
        lat = "" if m.mean_latency_s is None else f"{m.mean_latency_s * 1000:.0f}ms"
        table.add_row(esc(m.model), str(m.calls), str(m.input_tokens), str(m.output_tokens), lat)
    stdout.print(table)
    stdout.print(f"spans by kind: {esc(dict(st.span_kinds))}")


# ---------------------------------------------------------------------- export


def _check_output(path: Path) -> None:
    if not path.parent.is_dir():
        raise BadInputError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise BadInputError(f"cannot write {path}: it is a folder")


@traces_app.command("export")
def traces_export(
    run_id: Annotated[str | None, typer.Argument(
        metavar="RUN_ID", help="Run id or unique prefix (or --all with filters).")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Export every run the filters match.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (a span a line), csv (spans table) or otlp (OTLP/JSON "
                                                      "for Phoenix, Langfuse, an OTel collector).")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
    kind: KindOpt = None, status: StatusOpt = None, task: TaskOpt = None, strategy: StrategyOpt = None,
    model: ModelOpt = None, stage: StageOpt = None, since: SinceOpt = None, until: UntilOpt = None,
    limit: LimitOpt = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Export the spans of one run, or of every matching run, as JSONL, CSV or OTLP/JSON."""
    from ttc.store.export import EXPORT_FORMATS, export_spans, write_spans

    filters = {"kind": kind, "status": status, "task": task, "strategy": strategy, "model": model, "stage": stage,
               "since": since, "until": until, "limit": limit}
    if (run_id is None) == (not all_runs):
        raise BadInputError("give a RUN_ID or --all (with filters), not both" if run_id else
                            "give a RUN_ID, or --all to export every run the filters match")
    if run_id is not None and any(v is not None for v in filters.values()):
        raise BadInputError("filters select runs for --all; with a RUN_ID drop them")
    if fmt not in EXPORT_FORMATS:
        raise BadInputError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if json_out and output is None:
        raise BadInputError("--json prints a summary of the export: give -o FILE for the spans")
    if output is not None:
        _check_output(output)
    f = _filter(**filters)
    runs: set[str] = set()

    def counted(spans):
        for s in spans:
            runs.add(s.run_id)
            yield s

    with open_orchestrator(db) as orc:
        spans = counted(export_spans(orc.store.engine, f, run_ids=[run_id] if run_id else None))
        if output is None:
            n = write_spans(spans, fmt, sys.stdout)
            sys.stdout.flush()
            return
        # Written beside the target and renamed: a failed export never leaves half a file.
        tmp = output.with_name(f".{output.name}.tmp")
        try:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                n = write_spans(spans, fmt, fh)
            os.replace(tmp, output)
        except OSError as exc:
            raise BadInputError(f"cannot write {output}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
    summary = {"path": str(output), "format": fmt, "runs": len(runs), "spans": n}
    if json_out:
        emit_json(summary)
    else:
        stdout.print(f"wrote {n} spans of {len(runs)} runs to {esc(output)} ({fmt})")


# ---------------------------------------------------------------------- plot


def _mpl(text: Any) -> str:
    # matplotlib reads $...$ as math: a name from data must not be.
    return str(text).replace("$", r"\$")


def _draw_points(points, x: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups: dict[str, list] = {}
    for p in points:
        groups.setdefault(p.strategy or "?", []).append(p)
    xs_all = []
    for strategy, pts in sorted(groups.items()):
        pts.sort(key=lambda p: getattr(p, f"mean_{x}"))
        xs = [getattr(p, f"mean_{x}") for p in pts]
        ys = [p.accuracy for p in pts]
        cis = [_wilson(p.correct, p.known) for p in pts]
        # max(0, ...): at 0/n or n/n the interval's end can differ from the point by a rounding error.
        below = [max(0.0, y - lo) for y, (lo, _) in zip(ys, cis, strict=True)]
        above = [max(0.0, hi - y) for y, (_, hi) in zip(ys, cis, strict=True)]
        ax.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, linestyle="-" if len(pts) > 1 else "none",
                    label=_mpl(strategy))
        xs_all += xs
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("mean tokens per problem" if x == "tokens" else "mean FLOPs per problem")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("accuracy vs compute per run (95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend(title="strategy", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_compare(cmp, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["both correct", "only A", "only B", "neither"]
    counts = [cmp.both, cmp.only_a, cmp.only_b, cmp.neither]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    bars = ax.barh(labels[::-1], counts[::-1], color=["#bbbbbb", "#d95f02", "#1b9e77", "#4c72b0"])
    ax.bar_label(bars)
    ax.xaxis.get_major_locator().set_params(integer=True)
    acc = f"; accuracy A {cmp.accuracy_a:.3f}, B {cmp.accuracy_b:.3f}" if cmp.matched else ""
    ax.set_xlabel(f"problems ({cmp.matched} graded in both{acc}; exact McNemar p = {cmp.mcnemar_p:.3g})")
    ax.set_title(_mpl(f"A = {cmp.a_name} ({cmp.a[:8]}), B = {cmp.b_name} ({cmp.b[:8]})"), fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@traces_app.command("plot")
def traces_plot(
    run_ids: Annotated[list[str] | None, typer.Argument(
        metavar="RUN_ID", help="Runs to draw (default: every matching eval run).")] = None,
    compare: Annotated[tuple[str, str] | None, typer.Option(
        "--compare", metavar="A B", help="Compare two runs problem by problem instead.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Image to write (.png, .svg, .pdf).")] = None,
    x: Annotated[str, typer.Option("--x", help="Compute axis: tokens or flops.")] = "tokens",
    kind: KindOpt = None, status: StatusOpt = None, task: TaskOpt = None, strategy: StrategyOpt = None,
    model: ModelOpt = None, stage: StageOpt = None, since: SinceOpt = None, until: UntilOpt = None,
    limit: LimitOpt = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Accuracy against mean compute, one point per stored run; or --compare A B problem by problem."""
    from ttc.store.analysis import compare_runs, run_points

    filters = {"kind": kind, "status": status, "task": task, "strategy": strategy, "model": model, "stage": stage,
               "since": since, "until": until, "limit": limit}
    if x not in ("tokens", "flops"):
        raise BadInputError(f"--x must be tokens or flops, got {x!r}")
    if compare and (run_ids or any(v is not None for v in filters.values())):
        raise BadInputError("--compare A B takes two runs: drop the other run ids and filters")
    if run_ids and any(v is not None for v in filters.values()):
        raise BadInputError("filters select runs when no RUN_ID is given; with run ids drop them")
    if output is not None:
        _check_output(output)
        if output.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise BadInputError(f"-o {output}: give a .png, .svg or .pdf file")
    with open_orchestrator(db) as orc:
        engine = orc.store.engine
        if compare:
            cmp = compare_runs(engine, *compare)
        else:
            f = _filter(**{**filters, "kind": kind or (None if run_ids else "eval")})
            points = run_points(engine, f, run_ids=run_ids or None)
    if compare:
        _show_compare(cmp, output, json_out)
        return
    drawable = [p for p in points if p.known and getattr(p, f"mean_{x}") is not None]
    if output is not None:
        if not drawable:
            raise BadInputError("nothing to plot: no matching run has graded problems"
                                + (" with FLOPs" if x == "flops" and points else ""))
        _draw_points(drawable, x, output)
    if json_out:
        rows = [{**p.model_dump(mode="json"), "ci95": _wilson(p.correct, p.known)} for p in points]
        shown = {p.run_id for p in drawable}
        emit_json({"x": x, "points": rows, "skipped": [p.run_id for p in points if p.run_id not in shown],
                   "path": None if output is None else str(output)})
        return
    table = make_table("run", "strategy", "model", "n", "accuracy", "95% CI", "tokens" if x == "tokens" else "FLOPs")
    for p in sorted(points, key=lambda p: (p.strategy or "", getattr(p, f"mean_{x}") or 0)):
        table.add_row(esc(p.run_id[:12]), esc(p.strategy or "-"), esc(p.model or "-"), str(p.problems),
                      *_accuracy(p.correct, p.known), _num(getattr(p, f"mean_{x}")))
    stdout.print(table if points else "no runs match")
    if output is not None:
        stdout.print(f"plot: {esc(output)}")


def _show_compare(cmp, output: Path | None, json_out: bool) -> None:
    if output is not None:
        _draw_compare(cmp, output)
    if json_out:
        out = cmp.model_dump(mode="json")
        out.update(ci95_a=_wilson(cmp.both + cmp.only_a, cmp.matched), ci95_b=_wilson(cmp.both + cmp.only_b, cmp.matched),
                   path=None if output is None else str(output))
        emit_json(out)
        return
    stdout.print(f"A = {esc(cmp.a_name)} ({esc(cmp.a)})\nB = {esc(cmp.b_name)} ({esc(cmp.b)})")
    table = make_table("", "B correct", "B wrong")
    table.add_row("A correct", str(cmp.both), str(cmp.only_a))
    table.add_row("A wrong", str(cmp.only_b), str(cmp.neither))
    stdout.print(table)
    acc = f"accuracy A {_num(cmp.accuracy_a)}, B {_num(cmp.accuracy_b)}" if cmp.matched else "no problem graded in both"
    stdout.print(f"{cmp.matched} problems graded in both; {acc}; exact McNemar p = {cmp.mcnemar_p:.3g}; "
                 f"graded in A only {cmp.unmatched_a}, in B only {cmp.unmatched_b}")
    if output is not None:
        stdout.print(f"plot: {esc(output)}")


# ---------------------------------------------------------------------- serve


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@traces_app.command("serve")
def traces_serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")]
    = 8000,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="TTC_API_KEY", show_envvar=True,
        help="Require this key: 'Authorization: Bearer KEY', or open /?key=KEY once in a browser.")] = None,
    db: DbOption = None,
) -> None:
    """Serve the trace viewer: runs with filters, span trees, candidates, plots and comparisons.

    The page is at http://HOST:PORT/ and its JSON under /api/ (runs, runs/ID, runs/ID/points,
    points, compare?a=&b=). Stop it with Ctrl-C.
    """
    import socket

    import uvicorn

    from ._run_guard import stop_on_signals
    from .viewer import viewer_app

    if api_key is not None and not api_key:
        raise BadInputError("--api-key must not be empty")
    app = viewer_app(db, api_key=api_key)  # opens the store first: a bad --db fails before anything listens
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    stderr.print(f"trace viewer at http://{esc(shown)}:{bound}/" + ("  (key required)" if api_key else ""))
    if api_key is None and not _loopback(host):
        stderr.print(f"[yellow]warning:[/] serving on {esc(host)} without --api-key: anyone who can reach it "
                     "reads every trace")
    # uvicorn shuts down on SIGINT/SIGTERM, puts back the handlers it found and raises the signal
    # again: stop_on_signals' handler makes it RunInterrupted, which the CLI ends with 130 or 143.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        with stop_on_signals():
            server.run(sockets=[sock])
    finally:
        sock.close()
