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
from rich.table import Table

from ttc.core.budget import Budget

__all__ = ["run_demo"]

N_PROBLEMS = 8
BUDGET_TOKENS = 800


def run_demo(db: str | None = None, console: Console | None = None) -> dict[str, Any]:
    from ttc.tasks.registry import get_task

    from .api import Orchestrator

    console = console or Console()
    task = get_task("countdown")
    problems = task.make_problems(N_PROBLEMS, seed=0, split="test")
    rows = []
    with Orchestrator(db=db) as orc:
        model = task.default_model
        console.print(f"{len(problems)} held-out CountDown problems, model [bold]{model}[/]: one sample each, "
                      f"then best-of-n within {BUDGET_TOKENS} tokens per problem. Traces go to {orc.db_url}")
        for p in problems:
            one = orc.solve("countdown", p, strategy="sample", temperature=0.7, seed=0)
            bon = orc.solve("countdown", p, strategy="best_of_n", budget=Budget(tokens=BUDGET_TOKENS),
                            temperature=0.7, seed=0)
            rows.append({"id": p["id"], "numbers": p["numbers"], "target": p["target"],
                         "sample": {"correct": bool(one.correct), "tokens": one.tokens, "trace_id": one.trace_id},
                         "best_of_n": {"answer": bon.answer, "correct": bool(bon.correct), "tokens": bon.tokens,
                                       "samples": len(bon.candidates), "trace_id": bon.trace_id}})
    table = Table("numbers", "target", "1 sample", "best-of-n answer", "ok", "samples", "tokens", "trace")
    for r in rows:
        b = r["best_of_n"]
        table.add_row(" ".join(map(str, r["numbers"])), str(r["target"]),
                      "[green]yes[/]" if r["sample"]["correct"] else "[red]no[/]",
                      re.sub(r":[0-9 ]*", "", b["answer"] or "") if b["correct"] else "-", "[green]yes[/]" if b["correct"] else "[red]no[/]",
                      str(b["samples"]), str(b["tokens"]), b["trace_id"][:12])
    console.print(table)
    summary = {}
    for key in ("sample", "best_of_n"):
        solved = sum(r[key]["correct"] for r in rows)
        tokens = sum(r[key]["tokens"] for r in rows)
        summary[key] = {"solved": solved, "accuracy": solved / len(rows), "tokens": tokens}
        console.print(f"{key}: solved {solved}/{len(rows)} using {tokens} tokens")
    console.print("Inspect with `ttc traces list` and `ttc traces show ID`.")
    return {"model": model, "n_problems": len(rows), "budget_tokens": BUDGET_TOKENS, **summary, "problems": rows}
