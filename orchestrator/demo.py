"""``ttc demo``: the main job on built-in defaults.

Solves a handful of held-out CountDown problems with the built-in direct model, one
sample each at T = 0.7, verifies every answer exactly, and records each solve as a run in
the trace store (``sqlite:///ttc.db`` unless ``--db``/``TTC_DB`` say otherwise).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["run_demo"]

N_PROBLEMS = 8


def run_demo(db: str | None = None, console: Console | None = None) -> dict[str, Any]:
    from tasks.registry import get_task

    from .api import Orchestrator

    console = console or Console()
    task = get_task("countdown")
    problems = task.make_problems(N_PROBLEMS, seed=0, split="test")
    rows = []
    with Orchestrator(db=db) as orc:
        model = task.default_model
        console.print(f"solving {len(problems)} held-out CountDown problems with [bold]{model}[/] "
                      f"(one sample each, T=0.7); traces go to {orc.db_url}")
        for p in problems:
            r = orc.solve("countdown", p, strategy="sample", temperature=0.7, seed=0)
            rows.append({"id": p["id"], "numbers": p["numbers"], "target": p["target"], "answer": r.answer,
                         "correct": r.correct, "tokens": r.tokens, "flops": r.flops, "trace_id": r.trace_id})
    table = Table("numbers", "target", "answer", "ok", "tokens", "trace")
    for row in rows:
        table.add_row(" ".join(map(str, row["numbers"])), str(row["target"]), str(row["answer"]),
                      "[green]yes[/]" if row["correct"] else "[red]no[/]", str(row["tokens"]), row["trace_id"][:12])
    console.print(table)
    solved = sum(bool(r["correct"]) for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    console.print(f"solved {solved}/{len(rows)} with one sample each; {tokens} tokens in all. "
                  "Inspect with `ttc traces list` and `ttc traces show ID`.")
    return {"model": model, "n_problems": len(rows), "solved": solved, "accuracy": solved / len(rows),
            "tokens": tokens, "problems": rows}
