"""What the model-card measurements of every task share: loading a checkpoint, reading what
it was trained for, and the card's numbers for sampled answers and for search traces.

All sampling goes through the backend's ``generate``, the same path strategies use; the
figures come from :mod:`ttc.core.metrics`, rounded to 4 decimals for the card.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ttc.backends.types import SamplingParams
from ttc.core.metrics import normal_ci95, pass_at_k_curve, pass_at_k_per_problem, solve_rate_curve, solved_within

__all__ = ["checkpoint_kind", "checkpoint_task", "load_backend", "sampled_card", "solve_rate_card"]


def load_backend(model):
    """A backend for ``model``: a checkpoint directory (loaded on the CPU) or a backend as is."""
    if isinstance(model, (str, Path)):
        from ttc.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, device="cpu")
    return model


def _card_field(path: str | Path, field: str, default: str) -> str:
    """A field of card.json (or of train_state.json's config) beside the weights."""
    path = Path(path)
    for name in ("card.json", "train_state.json"):
        f = path / name
        if f.is_file():
            data = json.loads(f.read_text())
            return data.get(field) or data.get("config", {}).get(field, default)
    return default


def checkpoint_task(path: str | Path) -> str:
    """The task a checkpoint was trained on, from card.json (or train_state.json); default "countdown"."""
    return _card_field(path, "task", "countdown")


def checkpoint_kind(path: str | Path) -> str:
    """"direct" or "search", from card.json (or train_state.json) beside the weights."""
    return _card_field(path, "kind", "direct")


def _r4(interval: list[float]) -> list[float]:
    return [round(x, 4) for x in interval]


def sampled_card(be, verifier, problems: list[dict], prompts: list[str], *, n: int, ks: Iterable[int],
                 temperature: float, seed: int, max_tokens: int, stop, greedy: bool,
                 vote_key: Callable[[dict, str, object], str | None]) -> dict:
    """The card numbers every direct model shares: pass@k, majority vote, greedy pass@1.

    Args:
        be: A backend.
        verifier: The task's verifier.
        problems, prompts: The problems and their prompts, in the same order.
        n, ks, temperature, seed, max_tokens, stop: Sampling of the ``n`` samples per problem;
            pass@k is reported for every k <= n in ``ks``.
        greedy: Also measure greedy pass@1.
        vote_key: ``(problem, text, verdict) -> key or None``: which samples are the same answer.
    """
    gens = be.generate(prompts, SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                               stop=stop))
    ks = [k for k in dict.fromkeys(ks) if k <= n]
    correct: list[int] = []
    maj: list[float] = []
    tokens: list[int] = []
    for prob, gen in zip(problems, gens):
        verdicts = [verifier.verify(prob, c.text) for c in gen.completions]
        correct.append(sum(bool(v.correct) for v in verdicts))
        tokens += [comp.completion_tokens for comp in gen.completions]
        keys = [vote_key(prob, comp.text, v) for comp, v in zip(gen.completions, verdicts)]
        votes = Counter(key for key in keys if key)
        if votes:
            top = votes.most_common(1)[0][0]
            maj.append(float(bool(next(v for key, v in zip(keys, verdicts) if key == top).correct)))
        else:
            maj.append(0.0)
    per_k = {k: pass_at_k_per_problem(correct, n, k) for k in ks}
    curve = pass_at_k_curve(correct, n, ks)
    out: dict = {
        "n_problems": len(problems),
        "temperature": temperature,
        "samples_per_problem": n,
        "seed": seed,
        "pass_at_1": round(curve["1"], 4) if "1" in curve else None,
        "pass_at_1_ci95": _r4(normal_ci95(per_k.get(1, []))),
        "pass_at_k": {k: round(v, 4) for k, v in curve.items()},
        "pass_at_k_ci95": {str(k): _r4(normal_ci95(v)) for k, v in per_k.items()},
        f"majority_at_{n}": round(sum(maj) / len(problems), 4),
        "mean_completion_tokens": round(sum(tokens) / max(1, len(tokens)), 2),
    }
    if greedy:
        g = be.generate(prompts, SamplingParams(n=1, max_tokens=max_tokens, temperature=0.0, stop=stop))
        ok = [float(bool(verifier.verify(p, x.completions[0].text).correct)) for p, x in zip(problems, g)]
        out["pass_at_1_greedy"] = round(sum(ok) / len(ok), 4)
        out["pass_at_1_greedy_ci95"] = _r4(normal_ci95(ok))
    return out


def solve_rate_card(solved_at: Sequence, budgets: Sequence[int]) -> dict:
    """A search model's card numbers: solve rate within each token budget and its interval.

    Args:
        solved_at: Per problem, the token count at which its verified answer ended (None:
            not solved), or a list of those for several samples per problem.
        budgets: The token budgets L.
    """
    return {
        "solve_rate_within_tokens": {k: round(v, 4) for k, v in solve_rate_curve(solved_at, budgets).items()},
        "solve_rate_ci95": {str(b): _r4(normal_ci95(solved_within(solved_at, b))) for b in budgets},
    }
