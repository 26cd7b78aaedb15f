"""Measures a ``stateful-arith`` checkpoint: the numbers of its model card.

On held-out "test" contexts (seed 0, 10 queries each), all greedy:

- notes (b): one notes completion per context; notes accuracy is the share of the
  context's quantities the notes state correctly (a missing quantity counts wrong);
- without notes (a): each query answered by derivation from the context;
- with notes (c): each query answered from the context plus the model's own notes;

accuracy per query kind with 95% Wilson intervals, and mean generated tokens per format.
Generation is batched through :class:`TransformersBackend`; the verifier checks answers
against the context only.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from ttc.backends.types import SamplingParams
from ttc.core.metrics import wilson_ci95
from ttc.verifiers.arith import evaluate, parse_context

from . import STATEFUL_ARITH
from .formats import notes_prompt, notes_query_prompt, parse_notes, query_prompt
from .generate import KINDS, make_problems
from .solver import notes_text

__all__ = ["evaluate_checkpoint", "held_out", "measure"]


def held_out(contexts: int = 100, seed: int = 0, queries: int = 10) -> list[dict]:
    """The card's held-out problems: ``contexts`` "test" contexts x ``queries`` queries."""
    return make_problems(contexts, seed=seed, split="test", queries=queries)


def _by_context(problems: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for p in problems:
        groups.setdefault(p.get("context_id") or p["context"], []).append(p)
    return groups


def _generate(be, prompts: list[str], max_tokens: int) -> list:
    params = SamplingParams(n=1, max_tokens=max_tokens, temperature=0.0, seed=0, stop=STATEFUL_ARITH.stop)
    return [g.completions[0] for g in be.generate(prompts, params)]


def _rate(flags: list[bool]) -> dict:
    n, k = len(flags), sum(flags)
    return {"n": n, "accuracy": round(k / n, 4) if n else None, "ci95": [round(x, 4) for x in wilson_ci95(k, n)]
            if n else None}


def _per_kind(problems: list[dict], correct: list[bool]) -> dict:
    out = {"all": _rate(correct)}
    for kind in KINDS:
        flags = [c for p, c in zip(problems, correct) if p.get("kind") == kind]
        if flags:
            out[kind] = _rate(flags)
    return out


def _mean_tokens(problems: list[dict], comps: list) -> dict:
    by: dict[str, list[int]] = defaultdict(list)
    for p, c in zip(problems, comps):
        by["all"].append(c.completion_tokens)
        by[p.get("kind", "?")].append(c.completion_tokens)
    return {k: round(sum(v) / len(v), 1) for k, v in by.items()}


def measure(model, problems: list[dict]) -> dict:
    """Card numbers of ``model`` (a checkpoint path or a backend) on ``problems``."""
    if isinstance(model, (str, Path)):
        from ttc.backends.transformers_backend import TransformersBackend

        be = TransformersBackend(model, device="cpu")
    else:
        be = model
    groups = _by_context(problems)
    t0 = time.time()
    contexts = [g[0]["context"] for g in groups.values()]
    notes = _generate(be, [notes_prompt(c) for c in contexts], STATEFUL_ARITH.max_tokens(fmt="notes"))
    right = total = exact = 0
    notes_of: dict[str, str] = {}
    for ctx, comp in zip(contexts, notes):
        truth = evaluate(parse_context(ctx))
        got = parse_notes(comp.text)
        k = sum(got.get(n) == v for n, v in truth.items())
        right, total, exact = right + k, total + len(truth), exact + (k == len(truth))
        notes_of[ctx] = comp.text
    ver = STATEFUL_ARITH.verifier
    plain = _generate(be, [query_prompt(p["context"], p["query"]) for p in problems],
                      STATEFUL_ARITH.max_tokens(fmt="direct"))
    with_notes = _generate(be, [notes_query_prompt(p["context"], notes_of[p["context"]], p["query"]) for p in problems],
                           STATEFUL_ARITH.max_tokens(fmt="with_notes"))
    # The same with the solver's notes: what (c) does when the notes are right, e.g. after
    # a sleep phase combines several notes (a diagnostic; the sleep phase never uses the solver).
    with_ref = _generate(be, [notes_query_prompt(p["context"], notes_text(p["context"]), p["query"]) for p in problems],
                         STATEFUL_ARITH.max_tokens(fmt="with_notes"))
    ok_plain = [bool(ver.verify(p, c.text).correct) for p, c in zip(problems, plain)]
    ok_notes = [bool(ver.verify(p, c.text).correct) for p, c in zip(problems, with_notes)]
    ok_ref = [bool(ver.verify(p, c.text).correct) for p, c in zip(problems, with_ref)]
    return {
        "n_contexts": len(groups),
        "n_queries": len(problems),
        "decoding": "greedy",
        "notes": {
            "quantity_accuracy": round(right / max(1, total), 4),
            "quantity_ci95": [round(x, 4) for x in wilson_ci95(right, total)] if total else None,
            "all_right_rate": round(exact / max(1, len(contexts)), 4),
            "mean_generated_tokens": round(sum(c.completion_tokens for c in notes) / max(1, len(notes)), 1),
        },
        "without_notes": {"accuracy": _per_kind(problems, ok_plain), "mean_generated_tokens": _mean_tokens(problems, plain)},
        "with_notes": {"accuracy": _per_kind(problems, ok_notes), "mean_generated_tokens": _mean_tokens(problems, with_notes),
                       "notes_from": "the model's own greedy notes (format b)"},
        "with_reference_notes": {"accuracy": _per_kind(problems, ok_ref),
                                 "mean_generated_tokens": _mean_tokens(problems, with_ref),
                                 "notes_from": "the task's solver (diagnostic only)"},
        "eval_seconds": round(time.time() - t0, 1),
    }


def evaluate_checkpoint(path: str | Path, problems: list[dict] | None = None, limit: int = 100,
                        temperature: float = 0.0, seed: int = 0, quick: bool = False) -> dict:
    """Reproduces the card's measurement or measures on given problems.

    Args:
        path: Checkpoint directory.
        problems: Problems to use instead of the held-out split (grouped by context).
        limit: Contexts to use at most (each with all its queries).
        temperature: Unused: the card's numbers are greedy (kept for the common signature).
        seed: Seed of the held-out contexts.
        quick: 20 contexts at most.
    """
    limit = min(limit, 20) if quick else limit
    if problems is None:
        problems = held_out(limit, seed=seed)
    else:
        keep = list(_by_context(problems))[:limit]
        problems = [p for g in keep for p in _by_context(problems)[g]]
    return measure(Path(path), problems)
