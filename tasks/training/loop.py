"""The training loop of the built-in models: model shapes, data stream, batches, checkpoints.

Data is generated fresh (never a fixed file) from the "train" split, so a model never sees
a "test" or "val_target" problem. Runs are seeded; with ``minutes`` set, the schedule
follows wall time, so the number of steps depends on the machine.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ttc.backends.errors import BadInputError

from ..countdown.formats import training_example
from ..countdown.generate import make_problems
from ..tokenizer import build_tokenizer
from .recipes import RECIPES, TrainConfig, with_budget

__all__ = ["build_model", "example_stream", "main", "train"]


def build_model(cfg: TrainConfig, tokenizer):
    """A randomly initialised causal LM of the configured shape."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = Qwen2Config if cfg.arch == "qwen2" else LlamaConfig
    extra = {"attention_bias": cfg.attention_bias} if cfg.arch == "llama" else {}
    mcfg = cls(
        **extra,
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(mcfg)


def example_stream(cfg: TrainConfig, seed: int, pool: list[tuple[str, str]] | None = None) -> Iterator[tuple[str, str]]:
    """Endless (prompt, completion) pairs from the "train" split, mixed as configured; the
    "rft" format draws from ``pool`` (verified model answers)."""
    if cfg.task == "sudoku":
        from ..sudoku.data import example_stream as sudoku_stream

        yield from sudoku_stream(cfg, seed)
        return
    if cfg.task == "stateful-arith":
        from ..stateful_arith.data import example_stream as arith_stream

        yield from arith_stream(cfg, seed)
        return
    rng = random.Random(seed)
    fmts, fw = zip(*cfg.mix.items())
    sizes, sw = zip(*cfg.n_numbers.items())
    chunk = 0
    while True:
        size = rng.choices(sizes, sw)[0]
        for problem in make_problems(256, seed=seed * 100_003 + chunk, split="train", n_numbers=int(size)):
            fmt = rng.choices(fmts, fw)[0]
            if fmt == "rft":
                yield rng.choice(pool)
                continue
            ex = training_example(
                problem, fmt, rng,
                width=cfg.trace_width, max_chars=cfg.trace_max_chars,
            )
            if ex is not None:
                yield ex
        chunk += 1


def _batches(cfg: TrainConfig, tokenizer, seed: int, pool=None) -> Iterator[dict]:
    """Length-bucketed, padded batches with the loss on completion tokens only."""
    stream = example_stream(cfg, seed, pool)
    rng = random.Random(seed + 1)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    while True:
        pool = []
        while sum(len(p) + len(c) for p, c in pool) < cfg.batch_tokens * 16:
            p, c = next(stream)
            pids = tokenizer(p, add_special_tokens=False)["input_ids"]
            cids = tokenizer(c, add_special_tokens=False)["input_ids"]
            ids = ([bos] + pids + cids + [eos])[: cfg.context]
            labels = ([-100] * (1 + len(pids)) + cids + [eos])[: cfg.context]
            pool.append((ids, labels))
        pool.sort(key=lambda x: len(x[0]))
        groups, cur = [], []
        for item in pool:
            if cur and len(item[0]) * (len(cur) + 1) > cfg.batch_tokens:
                groups.append(cur)
                cur = []
            cur.append(item)
        if cur:
            groups.append(cur)
        rng.shuffle(groups)
        for g in groups:
            n = max(len(x[0]) for x in g)
            yield {
                "input_ids": torch.tensor([x[0] + [pad] * (n - len(x[0])) for x in g]),
                "attention_mask": torch.tensor([[1] * len(x[0]) + [0] * (n - len(x[0])) for x in g]),
                "labels": torch.tensor([x[1] + [-100] * (n - len(x[1])) for x in g]),
            }


def _save(model, tokenizer, out_dir: Path, state: dict) -> None:
    """Writes a loadable checkpoint; files are replaced only once fully written."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "train_state.json").write_text(json.dumps(state, indent=2))
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        os.replace(f, out_dir / f.name)
    shutil.rmtree(tmp, ignore_errors=True)


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True, *, _stage: int = 1) -> dict:
    """Trains a model from scratch and saves it to ``out_dir``.

    Args:
        config: What to train.
        out_dir: Checkpoint directory (``from_pretrained``-loadable after the first
            periodic checkpoint and at the end).
        progress: Show a rich progress bar on stderr.

    Returns:
        The final training state: steps, tokens, minutes, loss history.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if config.minutes is None and config.steps is None:
        raise ValueError("set minutes or steps")
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    tokenizer = build_tokenizer()
    prev = {"minutes": 0.0, "steps": 0, "tokens": 0}
    if config.init_from:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(config.init_from)
        # A longer context than the start checkpoint's: RoPE positions are computed, not learned.
        if getattr(model.config, "max_position_embeddings", config.context) < config.context:
            model.config.max_position_embeddings = config.context
        prev_file = Path(config.init_from) / "train_state.json"
        if prev_file.is_file():
            prev_state = json.loads(prev_file.read_text())
            prev = {k: prev_state[k] for k in prev} | {"config": prev_state.get("config")}
    else:
        model = build_model(config, tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95),
    )
    start = time.time()
    pool, rft_stats = None, None
    if config.rft_problems:
        from .rejection import sample_verified

        if not config.init_from or "rft" not in config.mix:
            raise ValueError("rft_problems needs init_from and an 'rft' share in mix")
        pool, rft_stats = sample_verified(
            config.init_from, n_problems=config.rft_problems, samples=config.rft_samples,
            temperature=config.rft_temperature, n_numbers=config.n_numbers, seed=config.seed,
        )
        if not pool:
            # A start checkpoint that solves nothing (a shortened quick run) leaves an empty
            # pool: train on the rest of the mix rather than fail after stage 1.
            rest = {k: v for k, v in config.mix.items() if k != "rft"}
            if not rest:
                raise ValueError("rejection sampling kept no answer and the mix has nothing else to train on")
            rft_stats["fallback"] = "no verified answer; trained on the rest of the mix"
            config = config.model_copy(update={"mix": rest})
            Console(stderr=True).print("[yellow]warning:[/] rejection sampling kept no answer; "
                                       f"training on {', '.join(rest)} only")
    # The schedule spans the time left after sampling; the reported minutes include it.
    sched_start = time.time()
    sched_minutes = None if config.minutes is None else config.minutes - (sched_start - start) / 60
    curriculum = bool(config.first_mix) and config.first_fraction > 0
    first_cfg = config.model_copy(update={"mix": config.first_mix}) if curriculum else config
    batches = _batches(first_cfg, tokenizer, config.seed, pool)
    last_ckpt = time.time()
    step = tokens = 0
    history: list[dict] = []
    ema = None
    total = config.steps or 10**9

    def frac() -> float:
        f = step / total if config.steps else 0.0
        if sched_minutes is not None:
            f = max(f, (time.time() - sched_start) / (60 * max(sched_minutes, 1e-3)))
        return min(f, 1.0)

    def state() -> dict:
        return {
            "name": config.name, "params": n_params, "steps": step + prev["steps"],
            "tokens": tokens + prev["tokens"],
            "minutes": round((time.time() - start) / 60 + prev["minutes"], 2), "loss": ema,
            "continued_from": prev if config.init_from else None, "rejection_sampling": rft_stats,
            "history": history, "config": config.model_dump(mode="json"),
        }

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("step {task.fields[step]} loss {task.fields[loss]}"), TimeElapsedColumn(),
        console=console, disable=not progress,
    )
    model.train()
    with bar:
        task = bar.add_task(config.name, total=1000, step=0, loss="-")
        while frac() < 1.0:
            f = frac()
            if curriculum and f >= config.first_fraction:
                batches, curriculum = _batches(config, tokenizer, config.seed + 7, pool), False
            warm = min(1.0, (step + 1) / config.warmup_steps)
            lr = config.lr * warm * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * f)))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = next(batches)
            loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens += int(batch["attention_mask"].sum())
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            if step % 50 == 0:
                history.append({"step": step, "minutes": round((time.time() - start) / 60, 2), "loss": round(ema, 4), "tokens": tokens, "lr": lr})
            bar.update(task, completed=int(1000 * frac()), step=step, loss=f"{ema:.3f}")
            if time.time() - last_ckpt > 60 * config.checkpoint_minutes:
                _save(model, tokenizer, out_dir, state())
                last_ckpt = time.time()
    final = state()
    _save(model, tokenizer, out_dir, final)
    if config.then is None:
        return final
    # This stage's checkpoint moves aside; the next stage starts from it and writes out_dir.
    out_dir = out_dir.resolve()
    done = out_dir.with_name(f"{out_dir.name}-stage{_stage}")
    shutil.rmtree(done, ignore_errors=True)
    shutil.copytree(out_dir, done)
    return train(config.then.model_copy(update={"init_from": str(done)}), out_dir, progress, _stage=_stage + 1)


def main(argv: list[str] | None = None) -> int:
    """``python -m ttc.tasks.training NAME OUT_DIR [minutes]``: train a recipe (for scripts).

    Prints the final training state (without its loss history) as one JSON line.

    Returns:
        The exit status: 0, or 2 for bad arguments (the message goes to stderr).
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) not in (2, 3):
            raise BadInputError("usage: python -m ttc.tasks.training NAME OUT_DIR [minutes]")
        if argv[0] not in RECIPES:
            raise BadInputError(f"unknown recipe {argv[0]!r}; valid recipes: {', '.join(sorted(RECIPES))}")
        cfg = RECIPES[argv[0]]
        if len(argv) > 2:
            try:
                minutes = float(argv[2])
            except ValueError:
                raise BadInputError(f"minutes must be a number, got {argv[2]!r}") from None
            if not minutes > 0:
                raise BadInputError(f"minutes must be positive, got {argv[2]}")
            cfg = with_budget(cfg, minutes=minutes)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    final = train(cfg, argv[1])
    print(json.dumps({k: v for k, v in final.items() if k != "history"}))
    return 0
