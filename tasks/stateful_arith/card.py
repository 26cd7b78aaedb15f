"""The model card of the ``stateful-arith`` checkpoint (card.json and README.md)."""

from __future__ import annotations

import json
from pathlib import Path

from .formats import notes_prompt, notes_query_prompt, query_prompt
from .solver import derivation, notes_text

__all__ = ["write_card"]

_EXAMPLE = "a=7;b=a*3;c=b-4;d=c+a"


def _row(*cells: str) -> str:
    # A "|" inside a table cell, even in code, ends the cell unless escaped.
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _examples() -> list[str]:
    ctx = _EXAMPLE
    rows = [_row("(b) notes", f"`{notes_prompt(ctx)}`", f"`{notes_text(ctx)}.`")]
    for q in ("c", "c+a", "if a=9,c"):
        rows.append(_row(f"(a) derive `{q}`", f"`{query_prompt(ctx, q)}`", f"`{derivation(ctx, q)}.`"))
    for q in ("c", "c+a", "if a=9,c"):
        rows.append(_row(f"(c) with notes `{q}`", f"`{notes_query_prompt(ctx, notes_text(ctx), q)}`",
                         f"`{derivation(ctx, q, with_notes=True)}.`"))
    return ["| format | prompt | completion |", "|---|---|---|", *rows]


def _table(results: dict) -> list[str]:
    rows = ["| query kind | without notes (a) | with model notes (c) | tokens (a) | tokens (c) |", "|---|---|---|---|---|"]
    a, c = results["without_notes"], results["with_notes"]
    for kind in ("defined", "combination", "counterfactual", "all"):
        ra, rc = a["accuracy"].get(kind), c["accuracy"].get(kind)
        if not ra or not rc:
            continue
        rows.append(f"| {kind} | {ra['accuracy']:.1%} [{ra['ci95'][0]:.1%}, {ra['ci95'][1]:.1%}] (n={ra['n']}) | "
                    f"{rc['accuracy']:.1%} [{rc['ci95'][0]:.1%}, {rc['ci95'][1]:.1%}] | "
                    f"{a['mean_generated_tokens'].get(kind)} | {c['mean_generated_tokens'].get(kind)} |")
    return rows


def write_card(out_dir: str | Path, config, train_state: dict, results: dict, notes: str = "") -> dict:
    """Writes card.json and README.md into the checkpoint directory ``out_dir``.

    Returns:
        The card (what card.json holds).
    """
    out_dir = Path(out_dir)
    card = {
        "name": config.name,
        "task": "stateful-arith",
        "kind": config.kind,
        "params": int(train_state["params"]),
        "arch": config.arch,
        "config": config.model_dump(mode="json"),
        "data": config.data_description(),
        "train_minutes": float(train_state["minutes"]),
        "train_steps": int(train_state["steps"]),
        "train_tokens": int(train_state["tokens"]),
        "final_loss": train_state.get("loss"),
        "hardware": "2 shared CPU cores (another training running), torch.set_num_threads(1)",
        "formats": {"a": "query_prompt -> derivation", "b": "notes_prompt -> notes",
                    "c": "notes_query_prompt -> answer from notes", "d": "not built"},
        "results": results,
        "notes": notes,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    nres = results.get("notes", {})
    lines = [
        f"# {config.name}",
        "",
        (f"A {card['params']:,}-parameter {config.arch} causal LM trained from scratch on the `stateful-arith` "
        "task (sleep-time compute): it answers a query by derivation from a context (a), writes notes "
        "(every quantity worked out) from a context alone (b), and answers from context plus notes (c). "
        "Loads with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` "
        "(character-level tokenizer). Every completion ends with `.` (the stop string)."),
        "",
        (f"- Shape: hidden {config.hidden_size}, {config.layers} layers, {config.heads} heads "
        f"({config.kv_heads} KV), MLP {config.intermediate_size}, context {config.context}"),
        f"- Data: {card['data']}",
        (f"- Training: {card['train_minutes']:.1f} min on {card['hardware']}; {card['train_steps']} steps, "
        f"{card['train_tokens']:,} tokens; AdamW lr {config.lr} cosine, seed {config.seed}; final loss "
        f"{(card['final_loss'] or 0):.3f}"),
        "- Formats (skill (d), anticipated queries, is not built):",
        "",
        *_examples(),
        "",
        (f"## Results ({results.get('n_contexts')} held-out 'test' contexts x their queries = "
        f"{results.get('n_queries')} queries, seed 0, greedy)"),
        "",
        *_table(results),
        "",
        (f"Notes (b): {nres.get('quantity_accuracy', 0):.1%} of quantities right (95% CI "
        f"{nres.get('quantity_ci95')}), all quantities right in {nres.get('all_right_rate', 0):.1%} of contexts, "
        f"{nres.get('mean_generated_tokens')} generated tokens per context. Accuracies are shares with 95% "
        "Wilson intervals; tokens are mean generated tokens per query. With notes, the notes are the "
        "model's own (format b, greedy), so a wrong note can make a (c) answer wrong."),
        "",
        (f"Reproduce: `ttc models eval {config.name} --limit {results.get('n_contexts')} --json` (for this task "
        "the limit counts contexts, each with its 10 queries)."),
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

