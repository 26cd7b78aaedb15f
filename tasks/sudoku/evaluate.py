"""Measures Sudoku checkpoints: the numbers of a model card.

Direct models: pass@k (unbiased estimator from n samples at T = 0.7), greedy pass@1 and
verifier-free majority vote over the stated grids. Search models: solve rate within
128, 256, 512 ... generated tokens of one greedy generation (a problem counts as solved
within L tokens when its verified answer ends by token L, which is what a run with
max_tokens = L gives), and the same at T = 0.7 (4 samples per problem).

All sampling goes through :class:`backends.transformers_backend.TransformersBackend`, the
same path strategies use. The verifier checks candidates against the givens only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ttc.backends.types import SamplingParams

from ..evaluate import mean_ci95, sampled_card
from . import DEFAULT_SIZE, SUDOKU

__all__ = ["evaluate_direct", "evaluate_search", "evaluate_checkpoint", "held_out", "write_card"]


def _backend(model):
    if isinstance(model, (str, Path)):
        from ttc.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, device="cpu")
    return model


def held_out(limit: int = 200, size: int = DEFAULT_SIZE, givens: int | None = None, seed: int = 0) -> list[dict]:
    """The card's held-out problems: "test" split, seed 0."""
    return SUDOKU.make_problems(limit, seed=seed, split="test", size=size, givens=givens)


def evaluate_direct(
    model, problems: list[dict], n: int = 16, ks=(1, 4, 16), temperature: float = 0.7,
    seed: int = 0, greedy: bool = True,
) -> dict:
    """Card numbers of a direct model on ``problems``."""
    be = _backend(model)
    ver = SUDOKU.verifier
    size = problems[0].get("size", DEFAULT_SIZE) if problems else DEFAULT_SIZE
    max_tokens = SUDOKU.max_tokens("direct", size)
    prompts = [SUDOKU.prompt(p) for p in problems]
    card = sampled_card(be, ver, problems, prompts, n=n, ks=ks, temperature=temperature, seed=seed,
                        max_tokens=max_tokens, stop=SUDOKU.stop, greedy=greedy,
                        vote_key=lambda text, verdict: verdict.answer)
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
    be = _backend(model)
    if budgets is None:
        prompt_len = len(SUDOKU.prompt(problems[0], "search")) + 1 if problems else 0
        budgets = _budgets((be.info.max_context or 1024) - prompt_len)
    prompts = [SUDOKU.prompt(p, "search") for p in problems]
    gens = be.generate(prompts, SamplingParams(n=n, max_tokens=max(budgets), temperature=temperature, seed=seed, stop=SUDOKU.stop))
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

    def rate(b: int) -> list[float]:
        return [sum(1 for s in row if s is not None and s <= b) / len(row) for row in solved_at]

    rates = {str(b): round(sum(rate(b)) / len(problems), 4) for b in budgets}
    return {
        "n_problems": len(problems),
        "size": problems[0].get("size", DEFAULT_SIZE) if problems else None,
        "givens": sorted({p.get("givens") for p in problems if p.get("givens") is not None}),
        "temperature": temperature,
        "samples_per_problem": n,
        "seed": seed,
        "solve_rate_within_tokens": rates,
        "solve_rate_ci95": {str(b): mean_ci95(rate(b)) for b in budgets},
        "pass_at_1": rates[str(max(budgets))],
        "mean_completion_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "finished_rate": round(finished / max(1, len(lengths)), 4),
    }


def evaluate_checkpoint(
    path: str | Path, problems: list[dict] | None = None, limit: int = 200,
    temperature: float = 0.7, seed: int = 0, quick: bool = False, kind: str | None = None,
) -> dict:
    """Reproduces a card's measurement (held-out "test" split, seed 0, the card's size and
    givens) or measures on the given problems."""
    from ..evaluate import checkpoint_kind

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


def write_card(out_dir: str | Path, config, train_state: dict, results: dict, notes: str = "") -> dict:
    """Writes card.json and README.md (the model card) into a checkpoint directory."""
    out_dir = Path(out_dir)
    card = {
        "name": config.name,
        "task": "sudoku",
        "kind": config.kind,
        "params": int(train_state["params"]),
        "arch": config.arch,
        "config": config.model_dump(mode="json"),
        "data": config.data_description(),
        "train_minutes": float(train_state["minutes"]),
        "train_steps": int(train_state["steps"]),
        "train_tokens": int(train_state["tokens"]),
        "final_loss": train_state.get("loss"),
        "hardware": "2 shared CPU cores, torch.set_num_threads(1)",
        "results": results,
        "notes": notes,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    size = results.get("size", config.sudoku_size)
    example = SUDOKU.make_problems(1, seed=0, split="test", size=size)[0]
    lines = [
        f"# {config.name}",
        "",
        f"A {card['params']:,}-parameter {config.arch} causal LM trained from scratch on {size}x{size} Sudoku "
        f"({config.kind} format). Loads with `AutoModelForCausalLM.from_pretrained` and "
        "`AutoTokenizer.from_pretrained` (character-level tokenizer).",
        "",
        f"- Shape: hidden {config.hidden_size}, {config.layers} layers, {config.heads} heads "
        f"({config.kv_heads} KV), MLP {config.intermediate_size}, context {config.context}",
        f"- Data: {card['data']}",
        f"- Training: {card['train_minutes']:.1f} min on {card['hardware']}; {card['train_steps']} steps, "
        f"{card['train_tokens']:,} tokens; AdamW lr {config.lr} cosine, seed {config.seed}; final loss {card['final_loss']:.3f}",
        "- Prompt: `" + SUDOKU.prompt(example, config.kind).replace("\n", "\\n") + "`",
        "- Problem JSON: `" + json.dumps({"grid": example["grid"], "size": size}) + "`",
        "",
        f"## Results (200 held-out 'test' puzzles, {size}x{size}, {results.get('givens')} givens, seed 0)",
        "",
        "```json",
        json.dumps(results, indent=2),
        "```",
        "",
        f"Reproduce: `ttc models eval {config.name} --json`.",
        "",
        notes,
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))
    return card
