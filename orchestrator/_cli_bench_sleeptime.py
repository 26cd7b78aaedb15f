"""``ttc bench sleeptime``: accuracy vs test tokens with and without sleep-time compute.

Registers itself on ``bench_app`` (``orchestrator/_cli_bench.py``) when imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._cli_bench import ForceOpt, OutOpt, _running, bench_app, bench_out_dir, bench_problems
from ._cli_common import JsonOption, emit_json, esc, make_table, stderr, stdout

__all__ = ["bench_sleeptime"]


@bench_app.command("sleeptime")
def bench_sleeptime(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer budget points, same 200 contexts (minutes).")] = False,
    problems_file: Annotated[Path | None, typer.Option(
        "--problems-file", help="JSONL of stateful-arith problems ({context, query}) instead of generated ones.")] = None,
    contexts: Annotated[int, typer.Option("--contexts", min=1, help="Generated contexts, 10 queries each.")] = 200,
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint (default: stateful-arith).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seeds problems and sampling.")] = 0,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    json_out: JsonOption = False,
) -> None:
    """Sleep time (notes written before the queries) vs deriving each query, at equal accuracy; cost per query."""
    out_dir = bench_out_dir(out_dir, quick=quick, name="sleeptime", force=force)
    problems = bench_problems(problems_file, "stateful-arith")
    from .bench.sleeptime import HEADLINE_K, run_sleeptime_bench

    with _running("sleeptime"):
        r = run_sleeptime_bench(quick=quick, problems=problems, model=model, n_contexts=contexts, seed=seed,
                                out_dir=out_dir, progress=stderr)
    if json_out:
        emit_json(r)
        return
    table = make_table("arm", "notes", "samples", "accuracy", "95% CI", "gen. test tokens/query",
                       title=f"stateful-arith, {r['n_contexts']} contexts x {r['queries_per_context']:.0f} queries")
    rows = [("baseline", "-", p) for p in r["baseline"]]
    rows += [("sleep time", k, p) for k, pts in r["sleeptime"].items() for p in pts]
    for arm, k, p in rows:
        lo, hi = p["ci95"]
        table.add_row(arm, str(k), str(p["samples"]), f"{p['accuracy']:.1%}", f"{lo:.1%}-{hi:.1%}",
                      f"{p['test_generated_tokens_per_query']:.1f}")
    stdout.print(table)
    cost = r["economics"][str(HEADLINE_K)]["generated"]["cost_per_query"]["10"]
    stdout.print("cost per query (generated tokens, test x10), baseline / sleep time: " + ", ".join(
        f"{n} q/ctx {c['baseline']:.0f}/{c['sleeptime']:.0f}" for n, c in cost.items()))
    stdout.print(f"test_token_reduction {r['test_token_reduction']:.2f}x (paper ~5x), "
                 f"cost_per_query_reduction_at_10 {r['cost_per_query_reduction_at_10']:.2f}x (paper 2.5x); "
                 f"sleep time's best accuracy {r['sleeptime_best_accuracy']:.1%} vs baseline's best "
                 f"{r['baseline_best_accuracy']:.1%}")
    stdout.print(esc(r["counterfactuals"]))
    stdout.print(f"written to {esc(r['files']['json'])}")
