"""``ttc bench auto``: compute-optimal strategy choice against fixed strategies, equal budget.

1. Calibrate ``auto`` on a calibration split disjoint from the evaluation problems (the
   policy lands in the trace store, where ``auto`` reads it).
2. Evaluate ``auto`` and every fixed strategy on the same held-out problems with the same
   seeds and the same per-problem token budget: ``sample``, best-of-N spending the whole
   budget, best-of-N with early stop (already adaptive per problem), majority vote,
   tree search, and the search model's ``sequential`` trace when there is one.
3. How much budget does best-of-N (no early stop) need to match ``auto``? Read off one
   draw of many samples per problem with the unbiased pass@n estimator; tokens at n are
   the prompt once plus n mean-length samples. Snell et al. report about 4x.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ttc.core.budget import Budget
from ttc.core.metrics import mean_pass_at_k

from .common import bench_header, one_draw, write_result

__all__ = ["run_auto_bench"]

SEED = 0


def _key(problem: dict) -> str:
    return json.dumps({k: v for k, v in problem.items() if k != "id"}, sort_keys=True)


def _bon_curve(task, backend, problems, n_max: int) -> list[dict]:
    """Best-of-n accuracy and tokens for n = 1 ... n_max from one draw per problem."""
    correct, prompt, per = one_draw(task, backend, problems, n_max, seed=SEED + 77)
    out = []
    for n in range(1, n_max + 1):
        acc = mean_pass_at_k(correct, n_max, n)
        out.append({"n": n, "tokens": prompt + n * per, "accuracy": acc})
    return out


def run_auto_bench(*, task: str = "countdown", quick: bool = False, budget_tokens: int | None = None,
                   n_problems: int | None = None, n_calibration: int | None = None, db: str | None = None,
                   out_dir: Path = Path("bench/results"), progress=None) -> dict[str, Any]:
    started = time.time()
    from ttc.tasks.registry import find_builtin, get_task

    from ..api import Orchestrator
    from ..calibration import calibrate

    t = get_task(task)
    n_problems = n_problems or (30 if quick else 200)
    n_calibration = n_calibration or (30 if quick else 100)
    budget = budget_tokens or (4 * t.max_tokens(None, "direct") + 4 * 16 if task == "countdown" else 1024)
    problems = t.make_problems(n_problems, seed=SEED, split="test")
    seen = {_key(p) for p in problems}
    cal = [p for p in t.make_problems(3 * n_calibration, seed=SEED + 1, split="test") if _key(p) not in seen]
    cal = cal[:n_calibration]
    search_model = f"{task}-search" if find_builtin(f"{task}-search") else None
    tmp = tempfile.TemporaryDirectory(prefix="ttc-auto-")
    orc = Orchestrator(db=db or f"sqlite:///{Path(tmp.name) / 'auto.db'}")
    try:
        direct = orc.backend(t.default_model)

        def say(msg):
            if progress is not None:
                progress.print(msg)

        say(f"calibrating on {len(cal)} problems at {budget} tokens per problem ...")
        policy = calibrate(orc, task, cal, model=t.default_model, search_model=search_model, budget_tokens=budget)
        runs: dict[str, tuple[str, dict, str | None]] = {
            "sample": ("sample", {}, None),
            "best_of_n": ("best_of_n", {"early_stop": False}, None),
            "best_of_n_early_stop": ("best_of_n", {"early_stop": True}, None),
            "majority_vote": ("majority_vote", {"n": None}, None),
            "auto": ("auto", {}, None),
        }
        if getattr(t, "steps", None) is not None:
            runs["tree_search"] = ("tree_search", {}, None)
        if search_model:
            runs["sequential"] = ("sequential", {}, search_model)
        reports = {}
        for label, (strategy, params, model) in runs.items():
            rep = orc.evaluate(task, problems, strategy=strategy, model=model, budget=Budget(tokens=budget),
                               seed=SEED, **params)
            reports[label] = {"strategy": strategy, "params": params, "model": rep.model, "accuracy": rep.accuracy,
                              "ci95": rep.ci95, "mean_tokens": rep.mean_tokens, "flops": rep.flops,
                              "paper_flops": rep.paper_flops, "trace_id": rep.trace_id}
            say(f"{label}: {rep.accuracy:.1%} at {rep.mean_tokens:.0f} tokens per problem")
        bon = _bon_curve(t, direct, problems, n_max=32 if quick else 64)
        target = reports["auto"]["accuracy"]
        match = next((p for p in bon if p["accuracy"] >= target), None)
        models = [{"name": b.name, "params": b.info.parameters, "digest": b.info.checkpoint_digest}
                  for b in [direct] + ([orc.backend(search_model)] if search_model else [])]
    finally:
        orc.close()
        tmp.cleanup()
    result = bench_header("auto", seed=SEED, quick=quick, models=models, n_problems=n_problems, started=started)
    fixed = {k: v["accuracy"] for k, v in reports.items() if k != "auto"}
    result.update({
        "task": task, "budget_tokens": budget, "n_calibration": len(cal), "strategies": reports,
        "auto_accuracy": target, "best_fixed": max(fixed, key=fixed.get), "auto_minus_best_fixed": target - max(fixed.values()),
        "bon_curve": bon[:: max(1, len(bon) // 16)],
        "bon_tokens_to_match_auto": match["tokens"] if match else None,
        "bon_n_to_match_auto": match["n"] if match else None,
        "bon_budget_ratio": (match["tokens"] / reports["auto"]["mean_tokens"]) if match else None,
        "bon_budget_ratio_vs_budget": (match["tokens"] / budget) if match else None,
        "policy": policy.model_dump(mode="json"),
        "snell_reference": "compute-optimal selection over 4x more efficient than best-of-N (arXiv 2408.03314)",
        "files": {"json": str(out_dir / f"auto-{task}.json")},
    })
    write_result(f"auto-{task}", result, out_dir)
    return result
