"""``ttc bench NAME``: side-by-side measurements, JSON (and PNG) under bench/results/.

Full runs write under ``bench/results/`` (the committed figures), ``--quick`` runs under
``bench/results/quick/`` (git-ignored). An explicit ``--out DIR`` that already holds the
bench's JSON is refused before any work unless ``--force`` is given.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from ttc.backends.errors import BadInputError

from ._cli_common import (
    DbOption,
    JsonOption,
    emit_json,
    esc,
    make_table,
    stderr,
    stdout,
)

__all__ = ["QUICK_RESULTS_DIR", "RESULTS_DIR", "bench_app", "bench_out_dir", "bench_problems"]

RESULTS_DIR = Path("bench/results")
QUICK_RESULTS_DIR = RESULTS_DIR / "quick"

OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory for the JSON (and plot); default "
                                             "bench/results, or bench/results/quick with --quick.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite the bench's JSON in an explicit --out.")]


def bench_out_dir(out: Path | None, *, quick: bool, name: str, force: bool = False) -> Path:
    """The directory a bench writes ``<name>.json`` into, checked before any work.

    Args:
        out: ``--out`` as given (None: the default for a full or a quick run).
        quick: A ``--quick`` run (its default directory is git-ignored).
        name: The bench's file name without ``.json`` (as the bench module names it).
        force: Overwrite an existing file in an explicit ``--out``.

    Raises:
        BadInputError: ``--out`` is a file, or already holds ``<name>.json`` and ``force`` is off.
    """
    if out is None:
        return QUICK_RESULTS_DIR if quick else RESULTS_DIR
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file; give a directory")
    target = out / f"{name}.json"
    if target.exists() and not force:
        raise BadInputError(f"{target} already exists; pass --force to overwrite it or choose another --out")
    return out


def bench_problems(path: Path | None, task: str) -> list[dict] | None:
    """The problems of a bench's ``--problems-file`` for ``task`` (None without one), read and
    checked before any work."""
    if path is None:
        return None
    from ttc.tasks.registry import get_task

    from ._cli_models import read_problems_file

    return read_problems_file(path, get_task(task))


def _task_name(task: str) -> str:
    # The task is part of the file name: only a registered task may reach the path.
    from ttc.tasks.registry import get_task

    get_task(task)
    return task


@contextmanager
def _running(what: str):
    """A transient spinner on stderr while a bench runs; its own progress lines print above it."""
    with stderr.status(f"bench {esc(what)} ..."):
        yield


bench_app = typer.Typer(help="Benchmarks; results go to bench/results/.", no_args_is_help=True)


@bench_app.callback()
def _threads(threads: Annotated[int, typer.Option("--threads", min=1, help="torch CPU threads for the benchmark; "
                                                  "1 keeps figures stable on a shared machine.")] = 1) -> None:
    """Benchmarks: side-by-side measurements, JSON (and PNG) under bench/results/."""
    import torch

    torch.set_num_threads(threads)


@bench_app.command("throughput")
def bench_throughput(
    quick: Annotated[bool, typer.Option("--quick", help="Fixed seeds, fewer repeats (minutes at most).")] = False,
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint to measure (default: a ~1M model).")] = None,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Tokens/s of 16 samples: separate calls vs a batch vs a batch sharing the prompt's prefill,
    each beside a bare KV-cached forward loop over the same model (hf_forward_1, hf_forward_16)."""
    out_dir = bench_out_dir(out_dir, quick=quick, name="throughput", force=force)
    from .bench.throughput import run_throughput

    with _running("throughput"):
        result = run_throughput(quick=quick, model=model, out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(result)
        return
    table = make_table("mode", "tokens/s", "wall s", title=f"throughput: {result['model']['name']}")
    for mode, row in result["modes"].items():
        table.add_row(esc(mode), f"{row['tokens_per_s']:.0f}", f"{row['wall_s_median']:.2f}")
    stdout.print(table)
    goal = result["goal"]
    for text, key, target in [
        ("speedup (shared prefix vs separate calls)", "speedup", goal["speedup_at_least"]),
        ("shared prefix vs hf_forward_16 (batch 16)", "shared_prefix_vs_hf", goal["shared_prefix_vs_hf_at_least"]),
        ("separate vs hf_forward_1 (batch 1)", "separate_vs_hf", goal["separate_vs_hf_at_least"]),
    ]:
        met = "[green]met[/green]" if result[key] >= target else "[red]not met[/red]"
        stdout.print(f"{text}: {result[key]:.2f}x (goal >= {target:g}x, {met})")
    stdout.print(f"written to {esc(result['files']['json'])}")


@bench_app.command("backtrack-vs-parallel")
def bench_backtrack(
    task: Annotated[str, typer.Option("--task", help="countdown or sudoku.")],
    quick: Annotated[bool, typer.Option("--quick", help="40 problems, n up to 64, two tree-search budgets.")] = False,
    n_problems: Annotated[int | None, typer.Option("--problems", min=1, help="Held-out problems (default 200, quick 40).")] = None,
    direct_model: Annotated[str | None, typer.Option("--direct-model", help="Default: TASK-direct.")] = None,
    search_model: Annotated[str | None, typer.Option("--search-model", help="Default: TASK-search.")] = None,
    tree_search: Annotated[bool, typer.Option("--tree-search/--no-tree-search")] = True,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Accuracy vs compute: direct model best-of-n vs search model traces vs tree search, paper FLOPs."""
    name = f"backtrack-vs-parallel-{_task_name(task)}"
    out_dir = bench_out_dir(out_dir, quick=quick, name=name, force=force)
    from .bench.backtrack import run_backtrack_vs_parallel

    with _running(name):
        r = run_backtrack_vs_parallel(task=task, quick=quick, n_problems=n_problems, direct_model=direct_model,
                                      search_model=search_model, with_tree_search=tree_search, out_dir=out_dir,
                                      progress=stderr)
    if json_out:
        emit_json(r)
        return
    for curve, pts in r["curves"].items():
        table = make_table("budget FLOPs", "tokens", "solved", "95% CI", title=curve)
        for p in pts:
            table.add_row(f"{p['budget_flops']:.3g}", f"{p['budget_tokens']:.0f}", f"{p['accuracy']:.1%}",
                          f"{p['ci95'][0]:.1%}-{p['ci95'][1]:.1%}")
        stdout.print(table)
    paper = r["paper"] or {}
    stdout.print(esc(f"paper ({paper.get('model_size')}): backtracking {paper.get('backtracking')} "
                     f"vs direct {paper.get('direct')}"))
    stdout.print(esc(f"winner at the largest common compute: {r['winner_at_max_budget']}; "
                     f"search scales with L: {r['search_scales']}; written to {r['files']['json']}"))


@bench_app.command("auto")
def bench_auto(
    task: Annotated[str, typer.Option("--task", help="Task family.")] = "countdown",
    quick: Annotated[bool, typer.Option("--quick", help="30 calibration and 30 evaluation problems.")] = False,
    budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", min=1, help="Per-problem budget.")] = None,
    n_problems: Annotated[int | None, typer.Option("--problems", min=1, help="Evaluation problems.")] = None,
    n_calibration: Annotated[int | None, typer.Option("--calibration", min=1, help="Calibration problems.")] = None,
    db: DbOption = None,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """strategy=auto (calibrated per difficulty bin) vs fixed strategies at equal budget; BoN budget to match."""
    name = f"auto-{_task_name(task)}"
    out_dir = bench_out_dir(out_dir, quick=quick, name=name, force=force)
    from .bench.auto import run_auto_bench

    with _running(name):
        r = run_auto_bench(task=task, quick=quick, budget_tokens=budget_tokens, n_problems=n_problems,
                           n_calibration=n_calibration, db=db, out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(r)
        return
    table = make_table("strategy", "accuracy", "95% CI", "tokens/problem",
                       title=f"{task} at {r['budget_tokens']} tokens")
    for strategy, row in r["strategies"].items():
        table.add_row(esc(strategy), f"{row['accuracy']:.1%}", f"{row['ci95'][0]:.1%}-{row['ci95'][1]:.1%}",
                      f"{row['mean_tokens']:.0f}")
    stdout.print(table)
    ratio = r["bon_budget_ratio"]
    match = r["bon_tokens_to_match_auto"]
    stdout.print(f"best-of-N needs {f'{match:,.0f}' if match else 'more than measured'} tokens to match auto"
                 + (f" ({ratio:.2f}x auto's spend)" if ratio else "") + f"; written to {esc(r['files']['json'])}")


@bench_app.command("overhead")
def bench_overhead(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer problems and runs (minutes at most).")] = False,
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint (default: the CountDown direct model).")] = None,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Orchestrated, traced best-of-16 vs a hand-written loop making the same backend calls."""
    out_dir = bench_out_dir(out_dir, quick=quick, name="overhead", force=force)
    from .bench.overhead import run_overhead

    with _running("overhead"):
        result = run_overhead(quick=quick, model=model, out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(result)
        return
    m = result["modes"]
    stdout.print(f"hand-written {m['hand_written']['wall_s_median']:.3f}s, orchestrated "
                 f"{m['orchestrated']['wall_s_median']:.3f}s (median of {result['runs']}): "
                 f"ratio {result['ratio']:.3f}; written to {esc(result['files']['json'])}")


@bench_app.command("pooled-budget")
def bench_pooled(
    task: Annotated[str, typer.Option("--task", help="Task with a direct built-in model.")] = "countdown",
    quick: Annotated[bool, typer.Option("--quick", help="20 problems instead of 100.")] = False,
    budget_tokens: Annotated[int, typer.Option("--budget-tokens", min=1, help="Per-problem token budget.")] = 1024,
    n_problems: Annotated[int | None, typer.Option("--problems", min=1, help="Held-out problems (default 100).")] = None,
    db: DbOption = None,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Best-of-N at a token budget: one pooled draw vs rounds vs the one-draw pass@n curve."""
    name = "pooled-budget" + ("" if _task_name(task) == "countdown" else f"-{task}")
    out_dir = bench_out_dir(out_dir, quick=quick, name=name, force=force)
    from .bench.pooled import run_pooled_bench

    with _running(name):
        r = run_pooled_bench(task=task, quick=quick, budget_tokens=budget_tokens, n_problems=n_problems, db=db,
                             out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(r)
        return
    table = make_table("best_of_n", "accuracy", "95% CI", "samples", "uncut", "mean tokens", "max tokens",
                       title=f"{esc(task)} at {budget_tokens} tokens/problem, {r['n_problems']} problems")
    for label, row in r["best_of_n"].items():
        table.add_row(esc(label), f"{row['accuracy']:.1%}", f"{row['ci95'][0]:.1%}-{row['ci95'][1]:.1%}",
                      f"{row['samples']:.1f}", f"{row['uncut']:.1f}", f"{row['mean_tokens']:.0f}",
                      str(row["max_tokens"]))
    c = r["one_draw_curve"]
    table.add_row("one-draw pass@n", f"{c['accuracy']:.1%}", f"{c['ci95'][0]:.1%}-{c['ci95'][1]:.1%}",
                  f"{c['n_at_budget']:.1f}", "-", str(budget_tokens), "-")
    stdout.print(table)
    stdout.print(f"pooled within the curve's interval: {r['pooled_within_curve_ci']}; "
                 f"written to {esc(r['files']['json'])}")


@bench_app.command("allocation")
def bench_allocation(
    quick: Annotated[bool, typer.Option("--quick", help="12 train and 12 test problems instead of 200 and 100.")] = False,
    table: Annotated[list[Path] | None, typer.Option("--table", help="Replay a recorded table (JSON lines) "
                                                     "instead of recording it; repeatable.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Searches per method and table.")] = 10,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes running the graphs.")] = 2,
    db: DbOption = None,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Allocation search (AgentTTS): trials to the optimum for planner, random, grid and tpe."""
    out_dir = bench_out_dir(out_dir, quick=quick, name="allocation", force=force)
    for path in table or []:
        if not path.is_file():
            raise BadInputError(f"--table {path}: no such file")
    from .bench.allocation import run_allocation_bench

    with _running("allocation"):
        r = run_allocation_bench(quick=quick, tables=table or None, seeds=seeds, workers=workers, db=db,
                                 out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(r)
        return
    for t in r["tables"]:
        view = make_table("method", "trials to optimum (median)", "reached", "test score", "95% CI",
                          title=f"{esc(t['name'])}: {t['n_allocations']} allocations, {t['n_optimal']} optimal, "
                                f"{r['seeds']} seeds, cap {r['trial_cap']}")
        for m in ("planner", "random", "grid", "tpe"):
            lo, hi = t["test_score_ci95"][m]
            view.add_row(m, f"{t['trials_to_optimum'][m]:g}", f"{t['reached_fraction'][m]:.0%}",
                         f"{t['test_score'][m]:.1%}", f"{lo:.1%}-{hi:.1%}")
        view.add_row("default", "-", "-", f"{t['default_test_score']:.1%}", "-")
        stdout.print(view)
    if r["reallocation"]:
        view = make_table("policy", "accuracy", "95% CI", "mean spend", title="run-time reallocation (plan-solve)")
        for p in ("static", "carry", "carry_weighted"):
            row = r["reallocation"][p]
            view.add_row(p, f"{row['accuracy']:.1%}", f"{row['ci95'][0]:.1%}-{row['ci95'][1]:.1%}", f"{row['spend']:.0f}")
        stdout.print(view)
    stdout.print(f"written to {esc(r['files']['json'])}")


@bench_app.command("plansearch")
def bench_plansearch(
    quick: Annotated[bool, typer.Option("--quick", help="200 held-out problems instead of 500.")] = False,
    problems_file: Annotated[Path | None, typer.Option(
        "--problems-file", help="JSONL of CountDown problems to use instead of held-out ones.")] = None,
    n_problems: Annotated[int | None, typer.Option("--problems", min=1, help="Held-out problems (default 500, "
                                                   "quick 200).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes sharing the problems "
                                         "(the figures do not depend on it).")] = 2,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """PlanSearch (first-step plans) vs repeated sampling, tree_search and best-of-n at T=1, at equal tokens."""
    if problems_file is not None and n_problems is not None:
        raise BadInputError("give --problems-file or --problems, not both")
    out_dir = bench_out_dir(out_dir, quick=quick, name="plansearch", force=force)
    problems = bench_problems(problems_file, "countdown")
    from .bench.plansearch import KS, run_plansearch_bench

    with _running("plansearch"):
        r = run_plansearch_bench(quick=quick, problems=problems, n_problems=n_problems, workers=workers,
                                 out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(r)
        return
    table = make_table("method", "solved", "95% CI", "tokens/problem",
                       title=f"CountDown, {r['n_problems']} problems, at PlanSearch's tokens")
    for method, row in r["equal_tokens"].items():
        lo, hi = row["accuracy_ci95"]
        table.add_row(esc(method), f"{row['accuracy']:.1%}", f"{lo:.1%}-{hi:.1%}", f"{row['tokens']:.0f}")
    stdout.print(table)
    view = make_table("16 candidates", *(f"pass@{k}" for k in KS), "diversity", "(parseable)", "tokens",
                      title="equal candidates")
    for method in ("plansearch", "repeated"):
        v = r[method]
        div = [f"{x:.3f}" if x is not None else "-" for x in (v["diversity"], v["diversity_parseable"])]
        view.add_row(method, *(f"{v['pass_at_k'].get(str(k), float('nan')):.1%}" for k in KS), *div,
                     f"{v['tokens']:.0f}")
    stdout.print(view)
    d = r["plansearch_minus_repeated"]
    lo, hi = d["ci95_paired_bootstrap"]
    stdout.print(f"PlanSearch minus repeated at equal tokens: {d['accuracy']:+.1%} (95% CI {lo:+.1%} to {hi:+.1%}); "
                 f"critique/fix {esc(r['settings']['critique_fix'])}; written to {esc(r['files']['json'])}")


@bench_app.command("store")
def bench_store(
    quick: Annotated[bool, typer.Option("--quick", help="20k inserts, 100k spans for stats, 5k per writer.")] = False,
    pg_url: Annotated[str, typer.Option(
        "--pg-url", envvar="TTC_TEST_PG_URL", help="PostgreSQL database in which scratch schemas are made and "
        "dropped (never TTC_DB); unreachable: the PostgreSQL part is reported skipped.")] = (
        "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    spans: Annotated[int | None, typer.Option("--spans", min=1, hidden=True, help="Spans per insert round.")] = None,
    stats_spans: Annotated[int | None, typer.Option("--stats-spans", min=1, hidden=True,
                                                    help="Spans in the stats table.")] = None,
    writer_spans: Annotated[int | None, typer.Option("--writer-spans", min=1, hidden=True,
                                                     help="Spans per concurrent writer.")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", min=1, hidden=True,
                                               help="Interleaved rounds per measurement.")] = None,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Store at scale: span inserts vs raw executemany, stats vs one raw GROUP BY, 4 concurrent writers."""
    from ttc.store.engine import parse_db_url

    if parse_db_url(pg_url).get_backend_name() != "postgresql":
        raise BadInputError(f"--pg-url must be a postgresql:// URL, not {pg_url.split('://')[0]}://...")
    out_dir = bench_out_dir(out_dir, quick=quick, name="store", force=force)
    from .bench.store_bench import run_store_bench

    with _running("store"):
        r = run_store_bench(quick=quick, pg_url=pg_url, n=spans, stats_n=stats_spans, writer_n=writer_spans,
                            rounds=rounds, out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(r)
        return
    goals = r["goals"]
    table = make_table("backend", "store rows/s", "raw rows/s", "ratio", "stats s", "raw scan s", "ratio",
                       title=f"store at scale: {r['n']['inserts']} inserts, stats over {r['n']['stats_spans']} spans")
    for backend in ("sqlite", "postgresql"):
        b = r[backend]
        if b["skipped"]:
            table.add_row(backend, "skipped", esc(b["reason"]), "", "", "", "")
            continue
        ins, st = b["inserts"], b["stats"]
        table.add_row(backend, f"{ins['store_rows_per_s']:,.0f}", f"{ins['raw_rows_per_s']:,.0f}",
                      f"{ins['insert_vs_raw']:.2f}", f"{st['store_s']:.3f}", f"{st['raw_s']:.3f}",
                      f"{st['stats_vs_raw']:.2f}")
    stdout.print(table)
    w = r["concurrent_writers"]
    writers = (f"skipped ({esc(w['reason'])})" if w.get("skipped") else
               f"{w['processes']} x {w['spans_each']} spans, lost {w['lost']}")
    stdout.print(f"goals: insert/raw >= {goals['insert_vs_raw_at_least']}, stats/raw <= "
                 f"{goals['stats_vs_raw_at_most']}; concurrent writers on PostgreSQL: {writers}; "
                 f"written to {esc(r['files']['json'])}")


@bench_app.command("batch")
def bench_batch(
    quick: Annotated[bool, typer.Option("--quick", help="48 problems instead of 256.")] = False,
    n_problems: Annotated[int | None, typer.Option("--problems", min=1, help="CountDown problems (default 256, quick 48).")] = None,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Batch jobs/s and tokens/s at concurrency 1 vs 16 (the generation queue), beside `ttc eval`."""
    out_dir = bench_out_dir(out_dir, quick=quick, name="batch", force=force)
    from .bench.batch_bench import run_batch_bench

    with _running("batch"):
        r = run_batch_bench(quick=quick, out_dir=out_dir, n_problems=n_problems, progress=stderr)
    if json_out:
        emit_json(r)
        return
    table = make_table("mode", "jobs/s", "generated tokens/s", "accuracy", "wall s",
                       title=f"batch: {r['n_problems']} CountDown problems")
    for mode, row in r["modes"].items():
        table.add_row(esc(mode), f"{row['jobs_per_s']:.2f}", f"{row['tokens_per_s']:.0f}", f"{row['accuracy']:.1%}",
                      f"{row['wall_s']:.1f}")
    stdout.print(table)
    stdout.print(f"speedup (sample, concurrency 16 vs 1): {r['speedup']:.2f}x (goal >= {r['goal']['speedup_at_least']}); "
                 f"best_of_n: {r['speedup_best_of_n']:.2f}x; concurrency 1 vs ttc eval: {r['c1_vs_eval']:.2f}x; "
                 f"same answers: {esc(r['same_answers'])}")


@bench_app.command("serve")
def bench_serve(
    quick: Annotated[bool, typer.Option("--quick", help="24 requests per level instead of 100.")] = False,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """ttc serve under load: requests/s and p50/p95 latency at 1, 8 and 32 clients, beside the direct backend."""
    out_dir = bench_out_dir(out_dir, quick=quick, name="serve", force=force)
    from .bench.serve_bench import run_serve_bench

    with _running("serve"):
        r = run_serve_bench(quick=quick, out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(r)
        return
    table = make_table("level", "requests", "errors", "req/s", "p50 s", "p95 s", title="ttc serve under load")
    for level, row in r["levels"].items():
        if isinstance(row, dict):
            table.add_row(esc(level), str(row["requests"]), str(row["errors"]), f"{row['requests_per_s']:.2f}",
                          f"{row['latency_p50_s']:.3f}", f"{row['latency_p95_s']:.3f}")
    stdout.print(table)
    stdout.print(f"p50 at 1 client vs direct backend: {r['p50_vs_direct']:.3f}x (goal <= 1.05); "
                 f"req/s at 32 clients vs 1: {r['rps_32_vs_1']:.2f}x (goal >= 4); errors: {r['errors']}")
