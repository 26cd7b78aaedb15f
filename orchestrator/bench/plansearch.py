"""``ttc bench plansearch``: PlanSearch's idea on CountDown vs repeated sampling, in one run.

CountDown's built-in model writes no prose, so PlanSearch runs in its ``steps`` mode:
plans are first steps (one sampled first operation, or one plus a second operation
sampled after it) forced as the start of the completion, and 16 solutions are spread
over the plans. That is stratification of the first steps, PlanSearch's idea carried
over, not its subset search; critique and fix are skipped (the JSON says so).

Every method sees the same problems, and on problem ``i`` every method samples with
seed ``SEED + i``. Two views:

- **equal tokens** (the comparison that counts, DESIGN.md): PlanSearch spends what it
  spends (observation calls included) with no budget; then, on the same problem, under a
  token budget equal to that spend, ``repeated`` (best_of_n at T = 0.7, no early stop:
  one pooled draw buys every sample the budget holds), ``best_of_n_t1`` (the same at
  T = 1.0) and ``tree_search`` (its defaults, over steps) run. A problem is solved when
  the verifier confirms the candidate it picks among all of them (with CountDown's exact
  verifier: when any candidate is right). Accuracy with a Wilson 95% interval; tokens are
  the mean spent per problem.
- **equal candidates** (the paper's view): PlanSearch's 16 candidates vs 16 repeated
  samples (T = 0.7), pass@1, 2, 4, 8, 16 by the unbiased estimator 1 - C(n-c, k)/C(n, k)
  (normal-approximation 95% intervals over problems), and diversity = 1 - the share of
  candidate pairs with equal ``canonical`` form, averaged over problems: over all 16
  candidates (two unparseable candidates count as equal, both having none) and over the
  parseable ones only (problems with fewer than two parseable candidates left out).
"""

from __future__ import annotations

import statistics
import time
from itertools import combinations
from pathlib import Path
from typing import Any

from ttc.core.budget import Budget, Ledger
from ttc.core.contracts import SolveContext
from ttc.core.metrics import (
    bootstrap_ci95,
    pass_at_k_per_problem,
    rate_ci95,
    wilson_ci95,
)

from .common import bench_header, write_result

__all__ = ["FULL_PROBLEMS", "KS", "N_CANDIDATES", "QUICK_PROBLEMS", "diversity", "run_plansearch_bench"]

SEED = 0
N_CANDIDATES = 16
KS = (1, 2, 4, 8, 16)
QUICK_PROBLEMS, FULL_PROBLEMS = 200, 500
MODEL = "countdown-direct"


def diversity(keys: list[str | None], *, parseable_only: bool = False) -> float | None:
    """1 - the share of pairs with equal keys (None when fewer than two keys count)."""
    if parseable_only:
        keys = [k for k in keys if k is not None]
    pairs = len(keys) * (len(keys) - 1) // 2
    if pairs == 0:
        return None
    same = sum(a == b for a, b in combinations(keys, 2))
    return 1.0 - same / pairs


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _candidate_view(rows: list[dict]) -> dict[str, Any]:
    """pass@k (unbiased, over each problem's candidates), diversity and tokens of one method."""
    view: dict[str, Any] = {"pass_at_k": {}, "pass_at_k_ci95": {}}
    for k in KS:
        per = [v for r in rows for v in pass_at_k_per_problem([r["correct"]], r["n"], k) if k <= r["n"]]
        if per:
            view["pass_at_k"][str(k)] = statistics.fmean(per)
            view["pass_at_k_ci95"][str(k)] = rate_ci95(per)
    view["diversity"] = _mean([d for r in rows if (d := diversity(r["keys"])) is not None])
    view["diversity_parseable"] = _mean([d for r in rows
                                         if (d := diversity(r["keys"], parseable_only=True)) is not None])
    view["tokens"] = statistics.fmean(r["tokens"] for r in rows)
    view["candidates"] = statistics.fmean(r["n"] for r in rows)
    view["distinct_first_steps"] = statistics.fmean(r["first_steps"] for r in rows)
    return view


def _row(task, problem: dict, result) -> dict[str, Any]:
    cands = result.candidates
    return {"correct": sum(c.verdict.correct is True for c in cands), "n": len(cands), "tokens": result.tokens,
            "keys": [task.verifier.canonical(problem, c.text) for c in cands],
            "first_steps": len({c.text.split(",")[0].split(":")[0].strip() for c in cands})}


def _equal(solved: list[bool], tokens: list[int]) -> dict[str, Any]:
    return {"accuracy": statistics.fmean(solved), "accuracy_ci95": wilson_ci95(sum(solved), len(solved)),
            "tokens": statistics.fmean(tokens)}


# The worker's model and strategies (set once per process by _init).
_WORKER: dict[str, Any] = {}


def _init(path: str, name: str, threads: int | None) -> None:
    import torch
    from ttc.backends.transformers_backend import TransformersBackend
    from ttc.strategies.registry import get_strategy
    from ttc.tasks.countdown import COUNTDOWN

    if threads is not None:
        torch.set_num_threads(threads)
    _WORKER.update(task=COUNTDOWN, backend=TransformersBackend(path, name=name),
                   **{s: get_strategy(s) for s in ("plansearch", "best_of_n", "tree_search")})


def _problem(job: tuple[int, dict, dict[str, Any]]) -> dict[str, Any]:
    """Every method on one problem (index ``i``: seed ``SEED + i`` everywhere); plain records."""
    i, p, ps_params = job
    w = _WORKER
    task, backend, seed = w["task"], w["backend"], SEED + i

    def ctx(tokens: int | None = None) -> SolveContext:
        return SolveContext.of(task, p, backend, ledger=Ledger(Budget(tokens=tokens) if tokens else None))

    ps = w["plansearch"](ctx(), seed=seed, **ps_params)
    spent = ps.tokens  # everything PlanSearch charged, its observation calls included
    runs = {"plansearch": ps,
            "repeated": w["best_of_n"](ctx(spent), early_stop=False, temperature=0.7, seed=seed),
            "best_of_n_t1": w["best_of_n"](ctx(spent), early_stop=False, temperature=1.0, seed=seed),
            "tree_search": w["tree_search"](ctx(spent), seed=seed)}
    rep16 = w["best_of_n"](ctx(), n=N_CANDIDATES, early_stop=False, temperature=0.7, seed=seed)
    return {"plansearch": _row(task, p, ps), "repeated": _row(task, p, rep16),
            "equal": {m: (r.correct is True, r.tokens) for m, r in runs.items()}}


def run_plansearch_bench(*, quick: bool = False, problems: list[dict] | None = None, n_problems: int | None = None,
                         model: str = MODEL, plansearch_params: dict[str, Any] | None = None, workers: int = 1,
                         out_dir: Path = Path("bench/results"), progress=None) -> dict[str, Any]:
    """Runs the bench and writes ``plansearch.json`` (and ``plansearch.png``) under ``out_dir``.

    Args:
        quick: 200 held-out problems instead of 500 (ignored when ``problems`` is given).
        problems: The problems (validated CountDown problems); default: held-out test problems.
        n_problems: How many held-out problems (overrides the quick/full default).
        model: The CountDown direct model (built-in name or checkpoint directory).
        plansearch_params: Extra parameters of the plansearch strategy (``n`` stays 16).
        workers: Processes sharing the problems (one model each, one torch thread each);
            the figures do not depend on it (every call is seeded by its problem).
        out_dir: Where the JSON and the plot go.
        progress: A console with ``print`` for progress lines (stderr), or None.
    """
    started = time.time()
    from ttc.tasks.countdown import COUNTDOWN

    from ..models import resolve_checkpoint

    if problems is None:
        problems = COUNTDOWN.make_problems(n_problems or (QUICK_PROBLEMS if quick else FULL_PROBLEMS), seed=SEED,
                                           split="test")
    name, path = resolve_checkpoint(model)
    ps_params = {**(plansearch_params or {}), "n": N_CANDIDATES}
    jobs = [(i, p, ps_params) for i, p in enumerate(problems)]
    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        if progress is not None and (len(rows) % 25 == 0 or len(rows) == len(jobs)):
            acc = {m: f"{statistics.fmean(r['equal'][m][0] for r in rows):.1%}" for m in rows[0]["equal"]}
            progress.print(f"plansearch bench: {len(rows)}/{len(jobs)} problems, {time.time() - started:.0f}s; "
                           f"solved at equal tokens {acc}")

    if workers <= 1:
        _init(str(path), name, None)
        for job in jobs:
            report(_problem(job))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                                 initargs=(str(path), name, 1)) as pool:
            for row in pool.map(_problem, jobs, chunksize=4):
                report(row)
    info = _WORKER["backend"].info if _WORKER else _info(path, name)
    equal_tokens = {m: _equal([r["equal"][m][0] for r in rows], [r["equal"][m][1] for r in rows])
                    for m in ("plansearch", "repeated", "tree_search", "best_of_n_t1")}
    diff = [float(r["equal"]["plansearch"][0]) - float(r["equal"]["repeated"][0]) for r in rows]
    ps_view = _candidate_view([r["plansearch"] for r in rows])
    rep_view = _candidate_view([r["repeated"] for r in rows])
    from ttc.strategies.plansearch import SKIPPED

    result = {
        **bench_header("plansearch", seed=SEED, quick=quick, n_problems=len(problems), started=started,
                       models=[{"name": info.name, "digest": info.checkpoint_digest}]),
        "task": "countdown",
        "equal_tokens": equal_tokens,
        "plansearch": ps_view,
        "repeated": rep_view,
        "plansearch_minus_repeated": {"accuracy": statistics.fmean(diff), "ci95_paired_bootstrap":
                                      bootstrap_ci95(diff, seed=SEED)},
        "goal": {"more_solved_at_equal_tokens": equal_tokens["plansearch"]["accuracy"]
                 > equal_tokens["repeated"]["accuracy"],
                 "more_diverse": (ps_view["diversity"] or 0) > (rep_view["diversity"] or 0)},
        "settings": {"plansearch": {"mode": "steps", **ps_params}, "critique_fix": SKIPPED,
                     "repeated": {"strategy": "best_of_n", "temperature": 0.7, "early_stop": False},
                     "best_of_n_t1": {"strategy": "best_of_n", "temperature": 1.0, "early_stop": False},
                     "tree_search": {"strategy": "tree_search", "defaults": True},
                     "seeds": f"problem i samples with seed {SEED} + i in every method", "workers": workers},
    }
    png = out_dir / "plansearch.png"
    _plot(ps_view, rep_view, len(problems), png)
    path = write_result("plansearch", result, out_dir)
    result["files"] = {"json": str(path), "png": str(png)}
    return result


def _info(path, name: str):
    from ttc.backends.transformers_backend import checkpoint_digest
    from ttc.backends.types import ModelInfo

    return ModelInfo(name=name, path=str(path), checkpoint_digest=checkpoint_digest(path))


def _plot(ps_view: dict, rep_view: dict, n: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, view in (("PlanSearch (first-step plans)", ps_view), ("repeated sampling (T=0.7)", rep_view)):
        ks = [int(k) for k in view["pass_at_k"]]
        ax.plot(ks, [100 * v for v in view["pass_at_k"].values()], marker="o", label=label)
        ax.fill_between(ks, [100 * lo for lo, _ in view["pass_at_k_ci95"].values()],
                        [100 * hi for _, hi in view["pass_at_k_ci95"].values()], alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (candidates)")
    ax.set_ylabel("pass@k (%)")
    ax.set_title(f"CountDown, {n} problems: PlanSearch vs repeated sampling")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
