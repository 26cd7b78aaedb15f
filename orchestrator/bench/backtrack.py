"""``ttc bench backtrack-vs-parallel``: "To Backtrack or Not to Backtrack" on ttc's models.

Accuracy against compute for three ways of spending it, on held-out problems:

``best_of_n``
    The direct model at T = 0.7, n = 1, 2, 4 ... samples, the exact verifier picking.
    With an exact verifier best-of-n solves a problem iff one of its n samples is right,
    so every n is read off one draw of ``n_max`` samples per problem with the unbiased
    pass@n estimator 1 - C(N-c, n)/C(N, n) (lower variance than separate draws per n).
    Compute at n: n generations of the direct model (paper formula, mean length).
``sequential``
    The search-trace model, one greedy generation per problem; a problem counts as
    solved within L when its verified answer ends by token L, which is what a run with
    ``max_tokens = L`` returns. Compute at L: one generation of L tokens (the paper's).
``tree_search``
    The direct model driven step by step (``strategies.tree_search``) under token budgets;
    compute is what the strategy actually charged.

All curves share ``budget_flops`` = the paper's FLOPs formula, so they overlap on one
axis; n grows until the parallel curve reaches the longest trace's compute.
``winner_at_max_budget`` compares the curves at the largest compute every curve reaches.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from ttc.backends.types import SamplingParams
from ttc.core.budget import Budget, Ledger
from ttc.core.contracts import SolveContext
from ttc.core.cost import paper_generation_flops
from ttc.core.metrics import mean_pass_at_k, pass_at_k_per_problem, rate_ci95, solved_within

from .common import bench_header, write_result

__all__ = ["PAPER", "run_backtrack_vs_parallel"]

SEED = 0

# Solved (%) at the paper's five compute-matched budgets (L = 256 ... 4096 for the
# backtracking model; n = 1 ... 16 for the direct model), from PAPERS.md.
PAPER = {
    "countdown": {"model_size": "17M", "backtracking": [7.5, 11.5, 25.5, 35, 41.5], "direct": [17, 25, 37, 50, 61]},
    "sudoku": {"model_size": "38M", "backtracking": [9, 40.5, 66, 74.5, 77], "direct": [6.5, 16, 30, 39.5, 58]},
}


def _budgets_l(ctx: int) -> list[int]:
    """Trace-length budgets L for the sequential curve: 128, 192, 256, 384, ... below ``ctx``,
    then ``ctx``. All come from one generation per problem, so half-octave steps are free and
    show where traces start to finish (Sudoku's curve turns between 256 and 512)."""
    out, b = [], 128
    while b < ctx:
        out += [x for x in (b, b * 3 // 2) if x < ctx]
        b *= 2
    return out + [ctx]


def sequential_curve(task, backend, problems, progress=None) -> tuple[list[dict], dict]:
    info = backend.info
    prompts = [task.prompt(p, "search") for p in problems]
    plens = [backend.count_tokens(p) for p in prompts]
    ctx = info.max_context or 4096
    gens = backend.generate(prompts, SamplingParams(n=1, temperature=0.0, max_tokens=ctx - max(plens),
                                                    stop=tuple(task.stop)))
    solved_at = []
    for p, g in zip(problems, gens):
        c = g.completions[0]
        solved_at.append(c.completion_tokens if task.verifier.verify(p, c.text).correct else None)
    if progress:
        progress.print(f"sequential: {sum(s is not None for s in solved_at)}/{len(problems)} solved within "
                       f"{ctx} tokens")
    prompt_mean = statistics.fmean(plens)
    points = []
    for L in _budgets_l(ctx - max(plens)):
        ok = solved_within(solved_at, L)
        points.append({"L": L, "budget_tokens": prompt_mean + L,
                       "budget_flops": paper_generation_flops(info, round(prompt_mean) + L),
                       "accuracy": statistics.fmean(ok), "ci95": rate_ci95(ok)})
    lengths = [g.completions[0].completion_tokens for g in gens]
    return points, {"mean_trace_tokens": statistics.fmean(lengths), "max_context": ctx}


def parallel_curve(task, backend, problems, n_max: int, target_flops: float | None, progress=None):
    info = backend.info
    prompts = [task.prompt(p) for p in problems]
    params = SamplingParams(n=n_max, temperature=0.7, seed=SEED, max_tokens=task.max_tokens(None, "direct"),
                            stop=tuple(task.stop))
    gens = backend.generate(prompts, params)
    correct, gen_flops, gen_tokens, plens = [], [], [], []
    for p, g in zip(problems, gens):
        correct.append(sum(bool(task.verifier.verify(p, c.text).correct) for c in g.completions))
        gen_flops += [paper_generation_flops(info, g.prompt_tokens + c.completion_tokens) for c in g.completions]
        gen_tokens += [c.completion_tokens for c in g.completions]
        plens.append(g.prompt_tokens)
    per_gen_flops, per_gen_tokens, prompt_mean = map(statistics.fmean, (gen_flops, gen_tokens, plens))
    if progress:
        progress.print(f"best_of_n: {sum(c > 0 for c in correct)}/{len(problems)} solved within {n_max} samples")
    points, n = [], 1
    while n <= n_max:
        points.append({"n": n, "budget_tokens": prompt_mean + n * per_gen_tokens, "budget_flops": n * per_gen_flops,
                       "accuracy": mean_pass_at_k(correct, n_max, n),
                       "ci95": rate_ci95(pass_at_k_per_problem(correct, n_max, n))})
        n *= 2
    reaches = target_flops is None or points[-1]["budget_flops"] >= target_flops
    return points, {"mean_direct_tokens": per_gen_tokens, "n_max": n_max, "reaches_search_compute": reaches}


def tree_search_curve(task, backend, problems, budgets: list[int], progress=None) -> list[dict]:
    from ttc.strategies.registry import get_strategy

    run = get_strategy("tree_search")
    points = []
    for b in budgets:
        ok, flops, toks = [], [], []
        for p in problems:
            r = run(SolveContext.of(task, p, backend, ledger=Ledger(Budget(tokens=b))), seed=SEED)
            ok.append(1.0 if r.correct else 0.0)
            flops.append(r.paper_flops or 0.0)
            toks.append(r.tokens)
        points.append({"budget_tokens_limit": b, "budget_tokens": statistics.fmean(toks),
                       "budget_flops": statistics.fmean(flops), "accuracy": statistics.fmean(ok), "ci95": rate_ci95(ok)})
        if progress:
            progress.print(f"tree_search @ {b} tokens: {statistics.fmean(ok):.1%}")
    return points


def accuracy_within(points: list[dict], flops: float) -> float:
    """Best accuracy a curve reaches without spending more than ``flops``."""
    return max((p["accuracy"] for p in points if p["budget_flops"] <= flops * (1 + 1e-9)), default=0.0)


def run_backtrack_vs_parallel(*, task: str, quick: bool = False, n_problems: int | None = None,
                              direct_model: str | None = None, search_model: str | None = None,
                              with_tree_search: bool = True, out_dir: Path = Path("bench/results"),
                              progress=None) -> dict[str, Any]:
    started = time.time()
    from ttc.backends.transformers_backend import TransformersBackend
    from ttc.strategies.registry import STRATEGIES
    from ttc.tasks.registry import get_task

    from ..models import resolve_checkpoint

    t = get_task(task)
    n_problems = n_problems or (40 if quick else 200)
    problems = t.make_problems(n_problems, seed=SEED, split="test")
    d_name, d_path = resolve_checkpoint(direct_model or f"{task}-direct")
    s_name, s_path = resolve_checkpoint(search_model or f"{task}-search")
    direct, search = TransformersBackend(d_path, name=d_name), TransformersBackend(s_path, name=s_name)

    seq_points, seq_meta = sequential_curve(t, search, problems, progress)
    target = max(p["budget_flops"] for p in seq_points)
    # Extend n until the parallel curve reaches the longest trace's compute.
    one = paper_generation_flops(direct.info, 32) or 1.0
    n_max = 16 if quick else 32
    while n_max * one < target and n_max < (64 if quick else 512):
        n_max *= 2
    par_points, par_meta = parallel_curve(t, direct, problems, n_max, target, progress)
    curves = {"best_of_n": par_points, "sequential": seq_points}
    # tree_search needs a task with a step structure (CountDown: one operation per step;
    # Sudoku: one row per step).
    if with_tree_search and "tree_search" in STRATEGIES and getattr(t, "steps", None) is not None:
        ts_problems = problems[: max(10, n_problems // (4 if quick else 2))]
        curves["tree_search"] = tree_search_curve(t, direct, ts_problems, [256, 1024] if quick else [128, 256, 512, 1024, 2048],
                                                  progress)
    common = min(max(p["budget_flops"] for p in pts) for pts in curves.values())
    at_common = {name: accuracy_within(pts, common) for name, pts in curves.items()}
    best = max(at_common.values())
    leaders = [n for n, a in at_common.items() if a == best]
    first, last = seq_points[0]["accuracy"], seq_points[-1]["accuracy"]
    search_scales = last - first >= 2 / n_problems

    models = [{"name": b.name, "params": b.info.parameters, "digest": b.info.checkpoint_digest} for b in (direct, search)]
    result = bench_header("backtrack-vs-parallel", seed=SEED, quick=quick, models=models, n_problems=n_problems, started=started)
    result.update({
        "task": task, "curves": curves,
        "winner_at_max_budget": leaders[0] if len(leaders) == 1 else "tie:" + ",".join(leaders),
        "max_common_budget_flops": common, "accuracy_at_max_common_budget": at_common,
        "search_scales": search_scales, "sequential": seq_meta, "parallel": par_meta,
        "paper": PAPER.get(task), "flops_unit": "paper_flops: layers x [(2h^2 + 2h kv + 3h mlp) L + h L(L+1)/2]",
    })
    png = out_dir / f"backtrack-vs-parallel-{task}.png"
    result["files"] = {"json": str(out_dir / f"backtrack-vs-parallel-{task}.json"), "png": str(png)}
    _plot(task, curves, png)
    write_result(f"backtrack-vs-parallel-{task}", result, out_dir)
    return result


def _plot(task: str, curves: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, pts in curves.items():
        xs = [p["budget_flops"] for p in pts]
        ys = [100 * p["accuracy"] for p in pts]
        lo = [100 * p["ci95"][0] for p in pts]
        hi = [100 * p["ci95"][1] for p in pts]
        ax.plot(xs, ys, marker="o", label=name)
        ax.fill_between(xs, lo, hi, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("compute per problem (paper FLOPs)")
    ax.set_ylabel("solved (%)")
    ax.set_title(f"{task}: sequential search vs parallel sampling")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
