"""Measures Sudoku checkpoints: the numbers of a model card.

Direct models: pass@k (unbiased estimator from n samples at T = 0.7), greedy pass@1 and
verifier-free majority vote over the stated grids. Search models: solve rate within
128, 192, 256 ... generated tokens of one greedy generation (a problem counts as solved
within L tokens when its verified answer ends by token L, which is what a run with
max_tokens = L gives), and the same at T = 0.7 (4 samples per problem).

The verifier checks candidates against the givens only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ttc.backends.types import SamplingParams

from ..sudoku import DEFAULT_SIZE, SUDOKU
from .measure import checkpoint_kind, load_backend, sampled_card, solve_rate_card

__all__ = ["evaluate_checkpoint", "evaluate_direct", "evaluate_search", "held_out"]


def held_out(limit: int = 200, size: int = DEFAULT_SIZE, givens: int | None = None, seed: int = 0) -> list[dict]:
    """The card's held-out problems: "test" split, seed 0."""
    return SUDOKU.make_problems(limit, seed=seed, split="test", size=size, givens=givens)


def evaluate_direct(
    model, problems: list[dict], n: int = 16, ks=(1, 4, 16), temperature: float = 0.7,
    seed: int = 0, greedy: bool = True,
) -> dict:
    """Card numbers of a direct model on ``problems``."""
    be = load_backend(model)
    ver = SUDOKU.verifier
    size = problems[0].get("size", DEFAULT_SIZE) if problems else DEFAULT_SIZE
    max_tokens = SUDOKU.max_tokens(problems[0] if problems else None, fmt="direct")
    prompts = [SUDOKU.prompt(p) for p in problems]
    card = sampled_card(be, ver, problems, prompts, n=n, ks=ks, temperature=temperature, seed=seed,
                        max_tokens=max_tokens, stop=SUDOKU.stop, greedy=greedy,
                        vote_key=lambda problem, text, verdict: verdict.answer)
    # The same fields as before, with the board's size and givens after n_problems.
    return {"n_problems": card.pop("n_problems"), "size": size,
            "givens": sorted({p.get("givens") for p in problems if p.get("givens") is not None}), **card}


def _budgets(ctx: int) -> list[int]:
    """128, 192, 256, 384, 512, 768 ... (powers of two and half-way points) below ``ctx``, then ``ctx``:
    6x6 traces are 140-600 tokens long, so the finer steps show where the curve rises."""
    budgets, b = [], 128
    while b < ctx:
        budgets.append(b)
        if b + b // 2 < ctx:
            budgets.append(b + b // 2)
        b *= 2
    return budgets + [ctx]


def evaluate_search(
    model, problems: list[dict], budgets=None, temperature: float = 0.0, seed: int = 0, n: int = 1,
) -> dict:
    """Solve rate of a search model within each token budget (one generation per sample;
    with ``n`` > 1 the rates average over the n samples of each problem)."""
    be = load_backend(model)
    if budgets is None:
        prompt_len = len(SUDOKU.prompt(problems[0], "search")) + 1 if problems else 0
        budgets = _budgets((be.info.max_context or 1024) - prompt_len)
    prompts = [SUDOKU.prompt(p, "search") for p in problems]
    gens = be.generate(prompts, SamplingParams(n=n, max_tokens=max(budgets), temperature=temperature, seed=seed,
                                               stop=SUDOKU.stop))
    solved_at: list[list[int | None]] = []
    lengths, finished = [], 0
    for p, g in zip(problems, gens):
        row = []
        for comp in g.completions:
            lengths.append(comp.completion_tokens)
            finished += comp.finish_reason == "stop"
            ok = SUDOKU.verifier.verify(p, comp.text).correct
            row.append(comp.completion_tokens if ok else None)
        solved_at.append(row)
    card = solve_rate_card(solved_at, budgets)
    return {
        "n_problems": len(problems),
        "size": problems[0].get("size", DEFAULT_SIZE) if problems else None,
        "givens": sorted({p.get("givens") for p in problems if p.get("givens") is not None}),
        "temperature": temperature,
        "samples_per_problem": n,
        "seed": seed,
        **card,
        "pass_at_1": card["solve_rate_within_tokens"][str(max(budgets))],
        "mean_completion_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "finished_rate": round(finished / max(1, len(lengths)), 4),
    }


def evaluate_checkpoint(
    path: str | Path, problems: list[dict] | None = None, limit: int = 200,
    temperature: float = 0.7, seed: int = 0, quick: bool = False, kind: str | None = None,
) -> dict:
    """Reproduces a Sudoku card's measurement (held-out "test" split, seed 0, the card's size and
    givens) or measures on the given problems."""
    path = Path(path)
    kind = kind or checkpoint_kind(path)
    if problems is None:
        size, givens = DEFAULT_SIZE, None
        card = path / "card.json"
        if card.is_file():
            res = json.loads(card.read_text()).get("results") or {}
            size, givens = res.get("size", size), (res.get("givens") or [None])[0]
        problems = held_out(limit, size=size, givens=givens)
    else:
        problems = problems[:limit]
    if kind == "search":
        out = evaluate_search(path, problems, temperature=0.0, seed=seed)
        if not quick:
            out["sampled"] = evaluate_search(path, problems[:100], temperature=temperature, seed=seed, n=4)
            out["sampled"]["note"] = "first 100 of the 200 held-out puzzles, 4 samples each at T = 0.7"
        return out
    return evaluate_direct(path, problems, temperature=temperature, seed=seed, n=4 if quick else 16,
                           ks=(1, 4) if quick else (1, 4, 16), greedy=not quick)
