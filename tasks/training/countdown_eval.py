"""Measures CountDown checkpoints: the numbers of a model card.

Direct models: pass@k (unbiased estimator) from n samples at T = 0.7, greedy pass@1,
majority vote over parsed answers (verifier-free), and how often a hint in the prompt is
followed. Search models: solve rate within 64, 128, 256 ... generated tokens (one
generation; a problem counts as solved within L tokens when its verified answer ends by
token L, which is what a run with max_tokens = L would give).

Reference solutions (for hints) come from the exact solver; the verifier checks
candidates against the problem's constraints only.
"""

from __future__ import annotations

import random
from pathlib import Path

from ttc.backends.types import SamplingParams
from ttc.verifiers.countdown import parse_answer

from ..countdown import COUNTDOWN
from ..countdown.formats import follows_hint, hint_for
from ..countdown.reflective import REFLECTIVE_MAX_TOKENS, redundancy_points, split_thoughts, thought_answers
from ..countdown.solver import solve
from .measure import _r4, checkpoint_kind, load_backend, sampled_card, solve_rate_card

__all__ = ["evaluate_checkpoint", "evaluate_direct", "evaluate_reflective", "evaluate_search", "reflective_figures"]


def evaluate_direct(
    model, problems: list[dict], n: int = 16, ks=(1, 4, 16), temperature: float = 0.7,
    seed: int = 0, greedy: bool = True, hints: bool = True, max_tokens: int = 96,
) -> dict:
    """Card numbers of a direct model on ``problems``.

    Args:
        model: A checkpoint path or a backend with ``generate``.
        problems: CountDown problems.
        n: Samples per problem at ``temperature`` (pass@k for every k <= n in ``ks``).
        ks: Which pass@k to report.
        temperature: Sampling temperature of the n samples (and of the hinted sample).
        seed: Sampling seed.
        greedy: Also measure greedy pass@1.
        hints: Also measure hint following (one hinted sample per problem).
        max_tokens: Completion cap.
    """
    be = load_backend(model)
    ver = COUNTDOWN.verifier
    prompts = [COUNTDOWN.prompt(p) for p in problems]
    out = sampled_card(be, ver, problems, prompts, n=n, ks=ks, temperature=temperature, seed=seed,
                       max_tokens=max_tokens, stop=COUNTDOWN.stop, greedy=greedy,
                       vote_key=lambda problem, text, verdict: ver.canonical(problem, text))
    if hints:
        out["hint"] = _hint_following(be, problems, temperature, seed, max_tokens)
    return out


def _hint_following(be, problems: list[dict], temperature: float, seed: int, max_tokens: int) -> dict:
    """Hints taken from reference solutions (alternating first-op and value hints)."""
    rng = random.Random(seed)
    hints, prompts = [], []
    for i, p in enumerate(problems):
        steps = solve(p["numbers"], p["target"], rng)
        hints.append(hint_for(steps, rng, "op" if i % 2 == 0 else "value"))
        prompts.append(COUNTDOWN.prompt(p, hint=hints[-1]))
    gens = be.generate(prompts, SamplingParams(n=1, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                               stop=COUNTDOWN.stop))
    followed, solved = [], []
    for p, h, g in zip(problems, hints, gens):
        text = g.completions[0].text
        parsed = parse_answer(text)
        followed.append(float(bool(parsed and parsed.steps and follows_hint(parsed.steps, h))))
        solved.append(float(bool(COUNTDOWN.verifier.verify(p, text).correct)))
    return {
        "follow_rate": round(sum(followed) / len(problems), 4),
        "solve_rate_with_hint": round(sum(solved) / len(problems), 4),
        "temperature": temperature,
        "hints": "from a reference solution; first operation on even problems, an intermediate value on odd ones",
    }


def evaluate_search(
    model, problems: list[dict], budgets=None, temperature: float = 0.0, seed: int = 0
) -> dict:
    """Solve rate of a search model within each token budget (one generation each)."""
    be = load_backend(model)
    ctx = be.info.max_context or 1024
    if budgets is None:
        # From 64: a 3-number trace that solves at its first node is ~60 characters long.
        budgets, b = [], 64
        while b < ctx:
            budgets.append(b)
            b *= 2
        budgets.append(ctx)
    prompts = [COUNTDOWN.prompt(p, "search") for p in problems]
    gens = be.generate(prompts, SamplingParams(n=1, max_tokens=max(budgets), temperature=temperature, seed=seed,
                                               stop=COUNTDOWN.stop))
    solved_at: list[int | None] = []
    lengths = []
    for p, g in zip(problems, gens):
        comp = g.completions[0]
        lengths.append(comp.completion_tokens)
        ok = COUNTDOWN.verifier.verify(p, comp.text).correct
        solved_at.append(comp.completion_tokens if ok else None)
    card = solve_rate_card(solved_at, budgets)
    return {
        "n_problems": len(problems),
        "temperature": temperature,
        "seed": seed,
        **card,
        "pass_at_1": card["solve_rate_within_tokens"][str(max(budgets))],
        "mean_completion_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
    }


def reflective_figures(samples: list[tuple[dict, str, int]]) -> dict:
    """How much of a reflective model's thinking is redundant, from (problem, completion,
    completion tokens) samples: the shares of all tokens that come after the first stated
    answer and after the third agreeing answer (what TrimR could cut), and the share of
    samples whose first stated answer is wrong but whose final answer is right (what
    cutting at the first answer would lose). Thoughts are segmented at the format's marker
    words; an answer is stated when the verifier's ``canonical`` reads one (never checked
    against the target); agreement is equality of canonical forms."""
    ver = COUNTDOWN.verifier
    total = after_first = after_third = 0
    corrected = first_right = stated = final_right = reached_third = 0
    rounds = 0
    for problem, text, tokens in samples:
        answers = thought_answers(problem, text, ver.canonical)
        first, third = redundancy_points(answers)
        total += tokens
        final_ok = bool(ver.verify(problem, text).correct)
        final_right += final_ok
        rounds += sum(a is not None for _, a in answers)
        if first is None:
            continue
        stated += 1
        after_first += max(0, tokens - first)
        if third is not None:
            reached_third += 1
            after_third += max(0, tokens - third)
        first_text = next(t for t in split_thoughts(text) if ver.canonical(problem, t) is not None)
        first_ok = bool(ver.verify(problem, first_text).correct)
        first_right += first_ok
        corrected += (not first_ok) and final_ok
    n = max(1, len(samples))
    return {
        "n_samples": len(samples),
        "mean_completion_tokens": round(total / n, 2),
        "share_tokens_after_first_answer": round(after_first / max(1, total), 4),
        "share_tokens_after_third_agreeing_answer": round(after_third / max(1, total), 4),
        "share_samples_with_three_agreeing": round(reached_third / n, 4),
        "corrected_share": round(corrected / n, 4),
        "first_answer_accuracy": round(first_right / n, 4),
        "final_accuracy": round(final_right / n, 4),
        "share_samples_stating_an_answer": round(stated / n, 4),
        "mean_answer_rounds": round(rounds / n, 3),
    }


def evaluate_reflective(
    model, problems: list[dict], n: int = 2, temperature: float = 0.7, seed: int = 0, greedy: bool = True,
    max_tokens: int = REFLECTIVE_MAX_TOKENS,
) -> dict:
    """Card numbers of a reflective model: accuracy of the final answer (pass@1 at
    ``temperature`` over ``n`` samples per problem, and greedy), mean completion tokens, and
    :func:`reflective_figures` on the model's own samples (the sampled ones and the greedy ones)."""
    from ttc.core.metrics import normal_ci95

    be = load_backend(model)
    ver = COUNTDOWN.verifier
    prompts = [COUNTDOWN.prompt(p, "reflective") for p in problems]
    gens = be.generate(prompts, SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                               stop=COUNTDOWN.stop))
    samples = [(p, c.text, c.completion_tokens) for p, g in zip(problems, gens) for c in g.completions]
    per_problem = [sum(bool(ver.verify(p, c.text).correct) for c in g.completions) / n for p, g in zip(problems, gens)]
    out: dict = {
        "n_problems": len(problems),
        "temperature": temperature,
        "samples_per_problem": n,
        "seed": seed,
        "pass_at_1": round(sum(per_problem) / max(1, len(problems)), 4),
        "pass_at_1_ci95": _r4(normal_ci95(per_problem)),
        "mean_completion_tokens": round(sum(t for _, _, t in samples) / max(1, len(samples)), 2),
        "redundancy": reflective_figures(samples),
    }
    if greedy:
        g = be.generate(prompts, SamplingParams(n=1, max_tokens=max_tokens, temperature=0.0, stop=COUNTDOWN.stop))
        gs = [(p, x.completions[0].text, x.completions[0].completion_tokens) for p, x in zip(problems, g)]
        ok = [float(bool(ver.verify(p, t).correct)) for p, t, _ in gs]
        out["pass_at_1_greedy"] = round(sum(ok) / max(1, len(ok)), 4)
        out["pass_at_1_greedy_ci95"] = _r4(normal_ci95(ok))
        out["greedy_mean_completion_tokens"] = round(sum(t for _, _, t in gs) / max(1, len(gs)), 2)
        out["greedy_redundancy"] = reflective_figures(gs)
    return out


def evaluate_checkpoint(
    path: str | Path, problems: list[dict] | None = None, limit: int = 200, n_numbers: int = 4,
    temperature: float = 0.7, seed: int = 0, quick: bool = False,
) -> dict:
    """Reproduces a CountDown card's measurement (held-out "test" split, seed 0) or runs on
    given problems."""
    if problems is None:
        problems = COUNTDOWN.make_problems(limit, seed=0, split="test", n_numbers=n_numbers)
    else:
        problems = problems[:limit]
    if checkpoint_kind(path) == "search":
        return evaluate_search(path, problems, temperature=0.0, seed=seed)
    if checkpoint_kind(path) == "reflective":
        return evaluate_reflective(path, problems, temperature=temperature, seed=seed, n=1 if quick else 2,
                                   greedy=not quick)
    return evaluate_direct(path, problems, temperature=temperature, seed=seed, n=4 if quick else 16,
                           ks=(1, 4) if quick else (1, 4, 16), greedy=not quick, hints=not quick)
