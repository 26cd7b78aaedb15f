"""Measures CountDown checkpoints: the numbers of a model card.

Direct models: pass@k with the unbiased estimator 1 - C(n-c, k) / C(n, k) from n samples
at T = 0.7, greedy pass@1, majority vote over parsed answers (verifier-free), and how often
a hint in the prompt is followed. Search models: solve rate within 256, 512, 1024...
generated tokens (one generation; a problem counts as solved within L tokens when its
verified answer ends by token L, which is what a run with max_tokens = L would give).

All sampling goes through :class:`backends.transformers_backend.TransformersBackend`, the
same path strategies use. Reference solutions (for hints) come from the exact solver.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

from ttc.backends.types import SamplingParams

from .countdown import COUNTDOWN
from .countdown.formats import follows_hint, hint_for
from .countdown.solver import solve
from ttc.verifiers.countdown import parse_answer

__all__ = [
    "pass_at_k",
    "mean_ci95",
    "evaluate_direct",
    "sampled_card",
    "evaluate_search",
    "evaluate_checkpoint",
    "checkpoint_kind",
    "checkpoint_task",
    "write_card",
    "ship_checkpoint",
]

_SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_ci95(values: list[float]) -> list[float]:
    """Normal-approximation 95% interval of a mean over problems, clipped to [0, 1]."""
    if not values:
        return [0.0, 0.0]
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / max(1, len(values) - 1)
    h = 1.96 * math.sqrt(var / len(values))
    return [round(max(0.0, m - h), 4), round(min(1.0, m + h), 4)]


def _backend(model):
    if isinstance(model, (str, Path)):
        from ttc.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, device="cpu")
    return model


def sampled_card(be, verifier, problems: list[dict], prompts: list[str], *, n: int, ks, temperature: float,
                 seed: int, max_tokens: int, stop, greedy: bool, vote_key) -> dict:
    """The card numbers every direct model shares: pass@k, majority vote, greedy pass@1.

    Args:
        be: A backend.
        verifier: The task's verifier.
        problems, prompts: The problems and their prompts, in the same order.
        n, ks, temperature, seed, max_tokens, stop: Sampling of the ``n`` samples per problem.
        greedy: Also measure greedy pass@1.
        vote_key: ``(text, verdict) -> key or None``: which samples are the same answer.
    """
    gens = be.generate(prompts, SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                               stop=stop))
    per_k: dict[int, list[float]] = {k: [] for k in ks if k <= n}
    maj, tokens = [], []
    for prob, gen in zip(problems, gens):
        verdicts = [verifier.verify(prob, c.text) for c in gen.completions]
        c = sum(bool(v.correct) for v in verdicts)
        for k in per_k:
            per_k[k].append(pass_at_k(n, c, k))
        tokens += [comp.completion_tokens for comp in gen.completions]
        keys = [vote_key(comp.text, v) for comp, v in zip(gen.completions, verdicts)]
        votes = Counter(key for key in keys if key)
        if votes:
            top = votes.most_common(1)[0][0]
            maj.append(float(bool(next(v for key, v in zip(keys, verdicts) if key == top).correct)))
        else:
            maj.append(0.0)
    out: dict = {
        "n_problems": len(problems),
        "temperature": temperature,
        "samples_per_problem": n,
        "seed": seed,
        "pass_at_1": round(sum(per_k[1]) / len(problems), 4) if 1 in per_k else None,
        "pass_at_1_ci95": mean_ci95(per_k.get(1, [])),
        "pass_at_k": {str(k): round(sum(v) / len(problems), 4) for k, v in per_k.items()},
        "pass_at_k_ci95": {str(k): mean_ci95(v) for k, v in per_k.items()},
        f"majority_at_{n}": round(sum(maj) / len(problems), 4),
        "mean_completion_tokens": round(sum(tokens) / max(1, len(tokens)), 2),
    }
    if greedy:
        g = be.generate(prompts, SamplingParams(n=1, max_tokens=max_tokens, temperature=0.0, stop=stop))
        ok = [float(bool(verifier.verify(p, x.completions[0].text).correct)) for p, x in zip(problems, g)]
        out["pass_at_1_greedy"] = round(sum(ok) / len(ok), 4)
        out["pass_at_1_greedy_ci95"] = mean_ci95(ok)
    return out


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
    be = _backend(model)
    ver = COUNTDOWN.verifier
    prompts = [COUNTDOWN.prompt(p) for p in problems]
    out = sampled_card(be, ver, problems, prompts, n=n, ks=ks, temperature=temperature, seed=seed,
                       max_tokens=max_tokens, stop=COUNTDOWN.stop, greedy=greedy,
                       vote_key=lambda text, verdict: ver.canonical(text))
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
    gens = be.generate(prompts, SamplingParams(n=1, max_tokens=max_tokens, temperature=temperature, seed=seed, stop=COUNTDOWN.stop))
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
    be = _backend(model)
    ctx = be.info.max_context or 1024
    if budgets is None:
        # From 64: a 3-number trace that solves at its first node is ~60 characters long.
        budgets, b = [], 64
        while b < ctx:
            budgets.append(b)
            b *= 2
        budgets.append(ctx)
    prompts = [COUNTDOWN.prompt(p, "search") for p in problems]
    gens = be.generate(prompts, SamplingParams(n=1, max_tokens=max(budgets), temperature=temperature, seed=seed, stop=COUNTDOWN.stop))
    solved_at = []
    lengths = []
    for p, g in zip(problems, gens):
        comp = g.completions[0]
        lengths.append(comp.completion_tokens)
        ok = COUNTDOWN.verifier.verify(p, comp.text).correct
        solved_at.append(comp.completion_tokens if ok else None)
    def within(b: int) -> list[float]:
        return [1.0 if s is not None and s <= b else 0.0 for s in solved_at]

    rates = {str(b): round(sum(within(b)) / len(problems), 4) for b in budgets}
    return {
        "n_problems": len(problems),
        "temperature": temperature,
        "seed": seed,
        "solve_rate_within_tokens": rates,
        "solve_rate_ci95": {str(b): mean_ci95(within(b)) for b in budgets},
        "pass_at_1": rates[str(max(budgets))],
        "mean_completion_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
    }


def checkpoint_task(path: str | Path) -> str:
    """The task a checkpoint was trained on, from card.json (or train_state.json); default "countdown"."""
    path = Path(path)
    for name in ("card.json", "train_state.json"):
        f = path / name
        if f.is_file():
            data = json.loads(f.read_text())
            return data.get("task") or data.get("config", {}).get("task", "countdown")
    return "countdown"


def checkpoint_kind(path: str | Path) -> str:
    """"direct" or "search", from card.json (or train_state.json) beside the weights."""
    path = Path(path)
    for name in ("card.json", "train_state.json"):
        f = path / name
        if f.is_file():
            data = json.loads(f.read_text())
            return data.get("kind") or data.get("config", {}).get("kind", "direct")
    return "direct"


def evaluate_checkpoint(
    path: str | Path, problems: list[dict] | None = None, limit: int = 200, n_numbers: int = 4,
    temperature: float = 0.7, seed: int = 0, quick: bool = False,
) -> dict:
    """Reproduces a card's measurement (held-out "test" split, seed 0) or runs on given problems."""
    if checkpoint_task(path) == "sudoku":
        from .sudoku.evaluate import evaluate_checkpoint as evaluate_sudoku

        return evaluate_sudoku(path, problems=problems, limit=limit, temperature=temperature, seed=seed, quick=quick)
    if problems is None:
        problems = COUNTDOWN.make_problems(limit, seed=0, split="test", n_numbers=n_numbers)
    else:
        problems = problems[:limit]
    if checkpoint_kind(path) == "search":
        return evaluate_search(path, problems, temperature=0.0 if not quick else 0.0, seed=seed)
    return evaluate_direct(path, problems, temperature=temperature, seed=seed, n=4 if quick else 16,
                           ks=(1, 4) if quick else (1, 4, 16), greedy=not quick, hints=not quick)


def _earlier_stage(train_state: dict) -> dict | None:
    prev = train_state.get("continued_from") or {}
    if not prev.get("config"):
        return None
    from .training import TrainConfig

    cfg = TrainConfig(**prev["config"])
    return {"minutes": prev["minutes"], "steps": prev["steps"], "tokens": prev["tokens"],
            "data": cfg.data_description(), "lr": cfg.lr, "config": prev["config"]}


def write_card(out_dir: str | Path, config, train_state: dict, results: dict, notes: str = "") -> dict:
    """Writes card.json and README.md (the model card) into a checkpoint directory."""
    out_dir = Path(out_dir)
    arch, params = config.arch, int(train_state["params"])
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        from safetensors import safe_open

        # What ships may differ from what trained (qwen2 -> llama adds zero o_proj biases).
        arch = json.loads((out_dir / "config.json").read_text()).get("model_type", arch)
        with safe_open(str(out_dir / "model.safetensors"), "pt") as f:
            params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    card = {
        "name": config.name,
        "task": "countdown",
        "kind": config.kind,
        "params": params,
        "arch": arch,
        "trained_as": config.arch,
        "config": config.model_dump(mode="json"),
        "data": config.data_description(),
        "train_minutes": float(train_state["minutes"]),
        "train_steps": int(train_state["steps"]),
        "train_tokens": int(train_state["tokens"]),
        "final_loss": train_state.get("loss"),
        "hardware": "2 shared CPU cores, torch.set_num_threads(1)",
        # A run continued from an earlier stage (a recipe's ``then``): its totals above include
        # that stage, whose own figures and config are kept here.
        "earlier_stage": _earlier_stage(train_state),
        "results": results,
        "notes": notes,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    lines = [
        f"# {config.name}",
        "",
        f"A {card['params']:,}-parameter {arch} causal LM trained from scratch on CountDown "
        f"({config.kind} format). Loads with `AutoModelForCausalLM.from_pretrained` and "
        "`AutoTokenizer.from_pretrained` (character-level tokenizer).",
        "",
        f"- Shape: hidden {config.hidden_size}, {config.layers} layers, {config.heads} heads "
        f"({config.kv_heads} KV), MLP {config.intermediate_size}, context {config.context}",
        f"- Data: {card['data']}",
        f"- Training: {card['train_minutes']:.1f} min on {card['hardware']}; {card['train_steps']} steps, "
        f"{card['train_tokens']:,} tokens; AdamW lr {config.lr} cosine, seed {config.seed}; final loss {card['final_loss']:.3f}",
        *([(f"- Earlier stage (included in the totals): {card['earlier_stage']['minutes']:.1f} min, "
             f"{card['earlier_stage']['steps']} steps, {card['earlier_stage']['tokens']:,} tokens; "
             f"{card['earlier_stage']['data']}; lr {card['earlier_stage']['lr']}")] if card["earlier_stage"] else []),
        f"- Prompt: `{COUNTDOWN.prompt({'numbers': [48, 27, 5, 81], 'target': 30}, 'search' if config.kind == 'search' else 'direct')!s}`"
        .replace("\n", "\\n"),
        "",
        "## Results\n\nHeld-out 'test' split (never in training data), 200 problems per size, seed 0; "
        "`4_numbers` is the paper's task, `3_numbers` the easier variant. Reproduce with "
        f"`ttc models eval {config.name}`." if results else "",
        "",
        "```json",
        json.dumps(results, indent=2),
        "```",
        "",
        notes,
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))
    return card


def ship_checkpoint(run_dir: str | Path, dest: str | Path, notes: str = "", n_problems: int = 200, seed: int = 0) -> dict:
    """Copies a trained run into a shipped checkpoint directory, measures it, writes its card.

    Measurements: ``n_problems`` held-out "test" problems of 4 numbers (the card's main
    numbers) and of 3 numbers (the easier variant), seed ``seed``.
    """
    import shutil

    from .training import TrainConfig

    run_dir, dest = Path(run_dir), Path(dest)
    state = json.loads((run_dir / "train_state.json").read_text())
    config = TrainConfig(**state["config"])
    dest.mkdir(parents=True, exist_ok=True)
    if json.loads((run_dir / "config.json").read_text()).get("model_type") == "qwen2":
        from .training import qwen2_to_llama

        # See TrainConfig.arch: a qwen2 checkpoint would not load its own tokenizer.
        qwen2_to_llama(run_dir, dest)
    else:
        for f in _SHIPPED_FILES:
            if (run_dir / f).is_file():
                shutil.copy2(run_dir / f, dest / f)
    results: dict = {}
    for size in (4, 3):
        problems = COUNTDOWN.make_problems(n_problems, seed=0, split="test", n_numbers=size)
        if config.kind == "search":
            results[f"{size}_numbers"] = evaluate_search(dest, problems, seed=seed)
        else:
            results[f"{size}_numbers"] = evaluate_direct(dest, problems, seed=seed, hints=size == 4)
    main = results["4_numbers"]
    # Top-level mirrors of the main (4-number) numbers, for tools that read one field.
    results = {"pass_at_1": main["pass_at_1"], **({"pass_at_k": main["pass_at_k"]} if "pass_at_k" in main else {}), **results}
    state["history"] = state.get("history", [])[-1:]
    write_card(dest, config, state, results, notes)
    return results


if __name__ == "__main__":
    import sys

    import torch

    torch.set_num_threads(1)
    print(json.dumps(evaluate_checkpoint(sys.argv[1], limit=int(sys.argv[2]) if len(sys.argv) > 2 else 200), indent=2))
