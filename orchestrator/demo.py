"""``ttc demo``: the main job on built-in defaults.

Solves a handful of held-out CountDown problems with the built-in direct model twice:
one sample each (the baseline), then best-of-n with the exact verifier under a token
budget, which keeps sampling in shared-prefix rounds until an answer verifies. Every solve
is a run in the trace store (``sqlite:///ttc.db`` unless ``--db``/``TTC_DB`` say otherwise).
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttc.core.budget import Budget

from ._cli_common import RemoteOptions, esc, make_table, open_orchestrator

__all__ = ["run_demo"]

N_PROBLEMS = 8
BUDGET_TOKENS = 800


def run_demo(db: str | None = None, console: Console | None = None, *, progress: Console | None = None,
             device: str = "auto", remote: RemoteOptions | None = None) -> dict[str, Any]:
    """Runs the demo and returns its summary (what ``ttc demo --json`` prints).

    Args:
        db: Trace store URL (default: ``TTC_DB``, then ``sqlite:///ttc.db``).
        console: Where the human-readable report goes.
        progress: Where the progress bar goes (a stderr console); None shows none.
        device: Where the built-in model runs.
        remote: Trust and remote options for the Orchestrator.
    """
    from ttc.tasks.registry import get_task

    console = console or Console()
    task = get_task("countdown")
    problems = task.make_problems(N_PROBLEMS, seed=0, split="test")
    rows = []
    bar = Progress(TextColumn("[bold]demo"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=progress, disable=progress is None, transient=True)
    with open_orchestrator(db, device, remote) as orc, bar:
        model = task.default_model
        console.print(f"{len(problems)} held-out CountDown problems, model [bold]{esc(model)}[/]: one sample each, "
                      f"then best-of-n within {BUDGET_TOKENS} tokens per problem. Traces go to {esc(orc.db_url)}")
        tid = bar.add_task("demo", total=len(problems))
        for p in problems:
            one = orc.solve("countdown", p, strategy="sample", temperature=0.7, seed=0)
            bon = orc.solve("countdown", p, strategy="best_of_n", budget=Budget(tokens=BUDGET_TOKENS),
                            temperature=0.7, seed=0)
            rows.append({"id": p["id"], "numbers": p["numbers"], "target": p["target"],
                         "sample": {"correct": bool(one.correct), "tokens": one.tokens, "trace_id": one.trace_id},
                         "best_of_n": {"answer": bon.answer, "correct": bool(bon.correct), "tokens": bon.tokens,
                                       "samples": len(bon.candidates), "trace_id": bon.trace_id}})
            bar.update(tid, advance=1)
    table = make_table("numbers", "target", "1 sample", "best-of-n answer", "ok", "samples", "tokens", "trace")
    for r in rows:
        b = r["best_of_n"]
        table.add_row(" ".join(map(str, r["numbers"])), str(r["target"]),
                      "[green]yes[/]" if r["sample"]["correct"] else "[red]no[/]",
                      esc(re.sub(r":[0-9 ]*", "", b["answer"] or "")) if b["correct"] else "-",
                      "[green]yes[/]" if b["correct"] else "[red]no[/]",
                      str(b["samples"]), str(b["tokens"]), esc(b["trace_id"][:12]))
    console.print(table)
    summary = {}
    for key in ("sample", "best_of_n"):
        solved = sum(r[key]["correct"] for r in rows)
        tokens = sum(r[key]["tokens"] for r in rows)
        summary[key] = {"solved": solved, "accuracy": solved / len(rows), "tokens": tokens}
        console.print(f"{key}: solved {solved}/{len(rows)} using {tokens} tokens")
    console.print("Inspect with `ttc traces list` and `ttc traces show ID`.")
    return {"model": model, "n_problems": len(rows), "budget_tokens": BUDGET_TOKENS, **summary, "problems": rows}
