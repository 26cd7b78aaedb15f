"""Model cards of the built-in checkpoints (card.json and README.md) and their shipping.

A card records how a checkpoint was trained (config, data, minutes, steps, tokens, any
earlier stage) and what it measures on its held-out split (``evaluate``).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from ttc.backends.errors import BadInputError

from ..countdown import COUNTDOWN
from ..sudoku import SUDOKU
from ..tokenizer import build_tokenizer
from .countdown_eval import evaluate_direct, evaluate_reflective, evaluate_search, reflective_figures
from .recipes import TrainConfig

__all__ = ["qwen2_to_llama", "ship_checkpoint", "write_card"]

_SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def write_card(out_dir: str | Path, config: TrainConfig, train_state: dict, results: dict, notes: str = "") -> dict:
    """Writes card.json and README.md (the model card) into a checkpoint directory.

    Args:
        out_dir: The checkpoint directory.
        config: What was trained (its ``task`` picks the card's layout).
        train_state: The final training state (``train``'s return value or train_state.json).
        results: The card's measurements.
        notes: Markdown appended to the README.

    Returns:
        The card (what card.json holds).
    """
    if config.task == "sudoku":
        return _write_sudoku_card(out_dir, config, train_state, results, notes)
    if config.task == "stateful-arith":
        from ..stateful_arith.card import write_card as write_arith_card

        return write_arith_card(out_dir, config, train_state, results, notes)
    return _write_countdown_card(out_dir, config, train_state, results, notes)


def _earlier_stage(train_state: dict) -> dict | None:
    prev = train_state.get("continued_from") or {}
    if not prev.get("config"):
        return None
    cfg = TrainConfig(**prev["config"])
    return {"minutes": prev["minutes"], "steps": prev["steps"], "tokens": prev["tokens"],
            "data": cfg.data_description(), "lr": cfg.lr, "config": prev["config"]}


def _write_countdown_card(out_dir: str | Path, config: TrainConfig, train_state: dict, results: dict,
                          notes: str = "") -> dict:
    """The CountDown card: results on 4- and 3-number problems, any earlier stage."""
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
        f"A {card['params']:,}-parameter {arch} causal LM "
        + (f"fine-tuned from `{Path(config.init_from).name}` " if config.init_from else "trained from scratch ")
        + f"on CountDown ({config.kind} format). Loads with `AutoModelForCausalLM.from_pretrained` and "
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
        f"- Prompt: `{COUNTDOWN.prompt({'numbers': [48, 27, 5, 81], 'target': 30}, config.kind if config.kind in ('search', 'reflective') else 'direct')!s}`"
        .replace("\n", "\\n"),
        "",
        f"## Results\n\nHeld-out 'test' split (never in training data), {results.get('4_numbers', {}).get('n_problems', 200)} problems per size, seed 0; "
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


def _write_sudoku_card(out_dir: str | Path, config: TrainConfig, train_state: dict, results: dict,
                       notes: str = "") -> dict:
    """The Sudoku card: results on one board size, with an example problem."""
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


def qwen2_to_llama(src: str | Path, dst: str | Path) -> None:
    """Rewrites a Qwen2 checkpoint as the identical Llama one (attention_bias=True, zero
    o_proj bias), so that AutoTokenizer loads its character tokenizer unchanged."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    q = AutoModelForCausalLM.from_pretrained(src)
    c = q.config
    lc = LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps, rope_parameters=c.rope_parameters, tie_word_embeddings=True,
        attention_bias=True, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
    )
    llama = LlamaForCausalLM(lc)
    missing, unexpected = llama.load_state_dict(q.state_dict(), strict=False)
    if unexpected or any(not k.endswith("o_proj.bias") for k in missing):
        raise RuntimeError(f"qwen2 -> llama mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for layer in llama.model.layers:
            layer.self_attn.o_proj.bias.zero_()
    llama.generation_config = q.generation_config
    llama.save_pretrained(dst, safe_serialization=True)
    build_tokenizer().save_pretrained(dst)


def _raise_context(dest: Path, context: int) -> None:
    """Sets max_position_embeddings to the trained context: a run continued from a
    shorter-context checkpoint keeps its config (RoPE positions are computed, so the
    weights need no change), and backends cap prompts and generation by that field."""
    cfg_file = dest / "config.json"
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("max_position_embeddings", context) < context:
        cfg["max_position_embeddings"] = context
        cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def reflective_trace_figures(n: int = 2000, seed: int = 0, n_numbers: dict | None = None,
                             max_chars: int = 490) -> dict:
    """:func:`reflective_figures` of the training trace distribution: ``n`` fresh traces
    of 'train' problems (sizes mixed as in ``n_numbers``), seeded."""
    import random

    from ..countdown.generate import make_problems
    from ..countdown.reflective import reflective_trace

    rng = random.Random(seed)
    sizes = n_numbers or {4: 0.8, 3: 0.2}
    samples = []
    for size, share in sizes.items():
        for p in make_problems(round(n * share), seed=seed + 7919, split="train", n_numbers=int(size)):
            text = reflective_trace(p, rng, max_chars=max_chars)
            if text is not None:
                samples.append((p, text, len(text)))
    return reflective_figures(samples)


def ship_checkpoint(run_dir: str | Path, dest: str | Path, notes: str = "", n_problems: int = 200, seed: int = 0) -> dict:
    """Copies a trained CountDown run into a shipped checkpoint directory, measures it, writes its card.

    Measurements: ``n_problems`` held-out "test" problems of 4 numbers (the card's main
    numbers) and of 3 numbers (the easier variant), seed ``seed``.

    Raises:
        BadInputError: The run did not train a CountDown model.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    state = json.loads((run_dir / "train_state.json").read_text())
    config = TrainConfig(**state["config"])
    if config.task != "countdown":
        raise BadInputError(f"ship_checkpoint measures CountDown models; {run_dir} trained {config.task}")
    dest.mkdir(parents=True, exist_ok=True)
    if json.loads((run_dir / "config.json").read_text()).get("model_type") == "qwen2":
        # See TrainConfig.arch: a qwen2 checkpoint would not load its own tokenizer.
        qwen2_to_llama(run_dir, dest)
    else:
        for f in _SHIPPED_FILES:
            if (run_dir / f).is_file():
                shutil.copy2(run_dir / f, dest / f)
    _raise_context(dest, config.context)
    results: dict = {}
    for size in (4, 3):
        problems = COUNTDOWN.make_problems(n_problems, seed=0, split="test", n_numbers=size)
        if config.kind == "reflective":
            results[f"{size}_numbers"] = evaluate_reflective(dest, problems, seed=seed)
        elif config.kind == "search":
            results[f"{size}_numbers"] = evaluate_search(dest, problems, seed=seed)
        else:
            results[f"{size}_numbers"] = evaluate_direct(dest, problems, seed=seed, hints=size == 4)
    if config.kind == "reflective":
        results["training_traces"] = reflective_trace_figures(
            seed=seed, n_numbers=config.n_numbers, max_chars=config.trace_max_chars)
    main = results["4_numbers"]
    # Top-level mirrors of the main (4-number) numbers, for tools that read one field.
    results = {"pass_at_1": main["pass_at_1"], **({"pass_at_k": main["pass_at_k"]} if "pass_at_k" in main else {}), **results}
    state["history"] = state.get("history", [])[-1:]
    write_card(dest, config, state, results, notes)
    return results
