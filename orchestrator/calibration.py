"""Calibration for ``strategy="auto"``: accuracy-vs-spend curves per difficulty bin.

On a calibration split (never the evaluation problems), every problem is probed the way
``auto`` probes, then every strategy on the menu is run under the same per-problem token
budget. Problems are binned by the probe's confidence (quantiles), and per bin each menu
item's accuracy and mean spend are recorded in the trace store as a run of kind
``calibration`` whose attributes hold the resulting Policy; ``auto`` reads it back
through the solve context's artifact lookup (``ttc.strategies.auto.load_policy``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from ttc.core.budget import Budget, Ledger
from ttc.core.contracts import ModelPool, SolveContext
from ttc.strategies.auto import (
    CALIBRATION_KIND,
    MenuItem,
    Policy,
    PolicyEntry,
    inner_params,
    probe,
)
from ttc.strategies.registry import get_strategy
from ttc.tasks.registry import find_builtin

__all__ = ["default_menu", "calibrate"]


def default_menu(task, with_search: bool) -> list[MenuItem]:
    """Best-of-n caps, step-level tree search (tasks with steps), and (with a search model)
    traces of length L."""
    menu = [MenuItem(strategy="best_of_n", params={"n": n}) for n in (4, 8, 16, 32)]
    if getattr(task, "steps", None) is not None:
        menu.append(MenuItem(strategy="tree_search", params={}))
    if with_search:
        # Up to the longest trace the task's search model writes (2,048 on CountDown).
        cap = task.max_tokens(None, "search")
        menu += [MenuItem(strategy="sequential", params={"max_tokens": L}, model="search")
                 for L in [L for L in (256, 1024) if L < cap] + [cap]]
    return menu


def calibrate(
    orc,
    task_name: str,
    problems: Sequence[dict],
    *,
    model: str | None = None,
    search_model: str | None = None,
    menu: list[MenuItem] | None = None,
    budget_tokens: int | None = None,
    probe_samples: int = 4,
    bins: int = 3,
    on_problem: Callable[[int], None] | None = None,
) -> Policy:
    """Measures the menu on ``problems`` and records the Policy in the store (see module doc)."""
    from ttc.tasks.registry import get_task

    task = get_task(task_name)
    backend = orc.backend(model or task.default_model)
    if search_model is None and find_builtin(f"{task_name}-search") is not None:
        search_model = f"{task_name}-search"
    search = orc.backend(search_model) if search_model else None
    menu = menu or default_menu(task, with_search=search is not None)
    rows: list[dict[str, Any]] = []
    probe_tokens: list[int] = []
    with orc.run(CALIBRATION_KIND, f"{task_name}/{backend.name}", task=task_name, model=backend.name,
                 search_model=search.name if search else None, budget_tokens=budget_tokens,
                 menu=[m.label for m in menu], n_problems=len(problems)) as tracer:
        for i, p in enumerate(problems):
            p = task.parse_problem(p)
            with tracer.span("problem", str(p["id"])) as span:
                ctx = SolveContext(task=task, problem=p, verifier=task.verifier, ledger=Ledger(Budget(tokens=budget_tokens)),
                                   models=ModelPool({"policy": backend}), tracer=tracer)
                rounds, conf = probe(ctx, span, m=probe_samples)
                probe_tokens.append(rounds.usage.total_tokens)
                solved = any(c.verdict.correct for c in rounds.candidates)
                row = {"id": p["id"], "confidence": conf, "probe_solved": solved, "items": {}}
                if not solved:
                    for item in menu:
                        run = get_strategy(item.strategy)
                        m = search if item.model == "search" else backend
                        # The item gets what the probe left, as it would under auto.
                        left = None if budget_tokens is None else budget_tokens - rounds.usage.total_tokens
                        item_ctx = SolveContext(task=task, problem=p, verifier=task.verifier, tracer=tracer,
                                                ledger=Ledger(Budget(tokens=max(1, left)) if left else Budget()),
                                                models=ModelPool({"policy": m, "search": m}))
                        r = run(item_ctx, **inner_params(item, seed=0))
                        row["items"][item.label] = {"correct": bool(r.correct), "tokens": r.tokens}
                span.set(**{"ttc.confidence": conf, "ttc.probe_solved": solved})
                rows.append(row)
            if on_problem:
                on_problem(i)
        policy = _fit(task_name, backend.name, search.name if search else None, menu, rows, probe_samples, bins,
                      statistics.fmean(probe_tokens) if probe_tokens else 0.0)
        tracer.outcome.update(policy=policy.model_dump(mode="json"), rows=rows)
    return policy


def _fit(task, model, search_model, menu, rows, probe_samples, bins, probe_tokens) -> Policy:
    hard = [r for r in rows if not r["probe_solved"] and r["confidence"] is not None]
    confs = sorted(r["confidence"] for r in hard)
    edges = [confs[int(len(confs) * q / bins)] for q in range(1, bins)] if len(confs) >= bins else []
    policy = Policy(task=task, model=model, search_model=search_model, probe=probe_samples,
                    probe_tokens=probe_tokens, edges=edges)
    by_bin: dict[int, list[dict]] = {}
    for r in hard:
        by_bin.setdefault(policy.bin_of(r["confidence"]), []).append(r)
    for b, members in by_bin.items():
        policy.table[str(b)] = _entries(menu, members)
    policy.overall = _entries(menu, hard)
    return policy


def _entries(menu: list[MenuItem], members: list[dict]) -> list[PolicyEntry]:
    entries = []
    for item in menu:
        got = [m["items"][item.label] for m in members if item.label in m["items"]]
        if got:
            entries.append(PolicyEntry(item=item, n=len(got),
                                       accuracy=statistics.fmean(float(g["correct"]) for g in got),
                                       mean_tokens=statistics.fmean(g["tokens"] for g in got)))
    return entries
