"""``ttc bench pooled-budget``: does a token budget buy the samples it could?

Best-of-N without early stop, at one per-problem token budget, three ways on the same
held-out problems with the same seeds:

- ``pooled``: one draw whose pooled cap is the budget left (the default now): the prompt
  is prefilled once and samples are started while the pool can finish them.
- ``rounds``: rounds of 4 samples, each round prefilling the prompt again, the last round
  pooled (how best_of_n spent a budget before pooled caps).
- the one-draw pass@n curve: 64 samples per problem drawn once, the unbiased pass@n
  estimator at the n the budget buys (prompt once + n mean-length samples), with a
  bootstrap 95% interval over problems. Pooled best-of-N is right when its accuracy lies
  in that interval while it draws about as many uncut samples as the curve assumes.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from ttc.core.budget import Budget
from ttc.core.metrics import bootstrap_ci95, pass_at_k_per_problem

from .common import bench_header, one_draw, write_result

__all__ = ["run_pooled_bench"]

SEED = 0
DRAW = 64  # samples per problem in the one-draw curve


def _curve_at(task, backend, problems, budget_tokens: int) -> dict[str, Any]:
    correct, prompt, per = one_draw(task, backend, problems, DRAW, seed=SEED + 77)
    n_float = (budget_tokens - prompt) / per
    lo_n, hi_n = max(1, int(n_float)), min(DRAW, int(n_float) + 1)
    w = n_float - lo_n if hi_n > lo_n else 0.0
    # Per-problem pass@n, interpolated linearly between the two whole n around the budget.
    per_problem = [(1 - w) * a + w * b for a, b in zip(pass_at_k_per_problem(correct, DRAW, lo_n),
                                                      pass_at_k_per_problem(correct, DRAW, hi_n))]
    return {"n_at_budget": round(n_float, 2), "mean_sample_tokens": round(per, 2), "prompt_tokens": round(prompt, 2),
            "accuracy": statistics.fmean(per_problem), "ci95": bootstrap_ci95(per_problem, seed=SEED)}


def _row(report) -> dict[str, Any]:
    rows = report.problems
    return {"accuracy": report.accuracy, "ci95": report.ci95,
            "mean_tokens": report.mean_tokens, "max_tokens": max(r["tokens"] for r in rows),
            "samples": statistics.fmean(r["samples"] for r in rows),
            "uncut": statistics.fmean(r["samples"] - r["cut"] for r in rows),
            "cut": statistics.fmean(r["cut"] for r in rows)}


def run_pooled_bench(*, task: str = "countdown", quick: bool = False, budget_tokens: int = 1024,
                     n_problems: int | None = None, db: str | None = None, out_dir: Path = Path("bench/results"),
                     progress=None) -> dict[str, Any]:
    started = time.time()
    from ttc.orchestrator.api import Orchestrator
    from ttc.tasks.registry import get_task

    t = get_task(task)
    n_problems = n_problems or (20 if quick else 100)
    problems = t.make_problems(n_problems, seed=SEED, split="test")
    budget = Budget(tokens=budget_tokens)
    with Orchestrator(db=db or f"sqlite:///{out_dir / 'pooled-budget.db'}") as orc:
        backend = orc.backend(t.default_model)
        runs = {}
        for label, params in (("pooled", {"early_stop": False}), ("rounds", {"early_stop": False, "round_size": 4})):
            if progress is not None:
                progress.print(f"best_of_n {label} at {budget_tokens} tokens on {n_problems} problems")
            runs[label] = _row(orc.evaluate(task, problems, strategy="best_of_n", budget=budget, seed=SEED,
                                            **params))
        curve = _curve_at(t, backend, problems, budget_tokens)
        info = backend.info
    lo, hi = curve["ci95"]
    result = {
        **bench_header("pooled-budget", seed=SEED, quick=quick, n_problems=n_problems, started=started,
                       models=[{"name": info.name, "digest": info.checkpoint_digest}]),
        "task": task, "budget_tokens": budget_tokens, "best_of_n": runs, "one_draw_curve": curve,
        "pooled_within_curve_ci": lo <= runs["pooled"]["accuracy"] <= hi,
    }
    path = write_result("pooled-budget" + ("" if task == "countdown" else f"-{task}"), result, out_dir)
    result["files"] = {"json": str(path)}
    return result
