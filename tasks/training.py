"""Training of the built-in CountDown models: config, data stream, loop, checkpoints.

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
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator

from .countdown.formats import training_example
from .countdown.generate import make_problems
from .tokenizer import build_tokenizer

__all__ = ["RECIPES", "TrainConfig", "build_model", "example_stream", "qwen2_to_llama", "train", "with_budget"]


class TrainConfig(BaseModel):
    """Everything a training run depends on.

    Attributes:
        name: Checkpoint name.
        kind: "direct" (direct + plan-conditioned formats) or "search" (DFS traces).
        arch: "qwen2" or "llama" (transformers config class).
        hidden_size, layers, heads, kv_heads, intermediate_size: Model shape.
        context: max_position_embeddings; also the longest training sequence.
        lr, min_lr_ratio, warmup_steps, weight_decay: AdamW and a cosine schedule.
        batch_tokens: Padded tokens per optimizer step.
        mix: Share of each format ("direct", "plan", "search").
        n_numbers: Share of problem sizes (3 or 4 numbers).
        trace_width, trace_max_chars: Pruning width per depth and length cap of traces.
        first_mix, first_fraction: A curriculum: the first ``first_fraction`` of the run
            (by the schedule's clock) trains on ``first_mix`` instead of ``mix``.
        rft_problems, rft_samples, rft_temperature: Rejection-sampling fine-tuning (needs
            ``init_from``): before training, sample ``rft_samples`` answers per training
            problem from the start checkpoint and keep those the verifier accepts; the
            "rft" share of ``mix`` draws from them. Sampling time counts in the minutes.
        minutes: Wall-time budget (the schedule follows it); steps: or a step budget.
        then: A follow-on stage that starts from this stage's checkpoint (its ``init_from``
            is set to it); the run's minutes, steps and tokens add up across stages.
        seed: Seeds data, initialisation and dropout-free training order.
        checkpoint_minutes: Interval of periodic checkpoints (overwritten in place).
    """

    name: str = "countdown-direct"
    task: Literal["countdown", "sudoku"] = "countdown"
    kind: Literal["direct", "search"] = "direct"
    # Llama by default: transformers 5 forces Qwen2Tokenizer on AutoTokenizer.from_pretrained
    # of a "qwen2" checkpoint, which re-tokenizes with GPT-2 rules and drops the spaces of
    # the character tokenizer. A Llama checkpoint keeps the saved tokenizer.json as is.
    arch: Literal["qwen2", "llama"] = "llama"
    hidden_size: int = 256
    layers: int = 6
    heads: int = 8
    kv_heads: int = 4
    intermediate_size: int = 768
    context: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.1
    batch_tokens: int = 4096
    mix: dict[str, float] = Field(default_factory=lambda: {"direct": 0.7, "plan": 0.3})
    n_numbers: dict[int, float] = Field(default_factory=lambda: {4: 0.85, 3: 0.15})
    rft_problems: int = 0
    rft_samples: int = 8
    rft_temperature: float = 1.0
    first_mix: dict[str, float] | None = None
    first_fraction: float = 0.0
    trace_width: tuple[int, ...] = (8, 6)
    trace_max_chars: int = 1000
    minutes: float | None = 45.0
    steps: int | None = None
    seed: int = 0
    checkpoint_minutes: float = 5.0
    attention_bias: bool = False
    # Continue from a checkpoint (fresh optimizer and schedule); its train_state.json
    # minutes, steps and tokens are added to this run's, so a card shows the whole cost.
    init_from: str | None = None
    then: TrainConfig | None = None
    sudoku_size: int = 6
    sudoku_givens: tuple[int, int] = (10, 20)

    @model_validator(mode="after")
    def _rft_needs_samples(self) -> TrainConfig:
        if ("rft" in self.mix or "rft" in (self.first_mix or {})) and not self.rft_problems:
            raise ValueError("an 'rft' share in the mix needs rft_problems > 0 (and init_from)")
        return self

    def stages(self) -> list[TrainConfig]:
        """This stage and every follow-on stage (``then``), in training order."""
        return [self] + (self.then.stages() if self.then else [])

    def data_description(self) -> str:
        """One line for the model card."""
        if self.task == "sudoku":
            from .sudoku.data import data_description

            return data_description(self)
        names = {"rft": "the start checkpoint's own verified answers (rejection sampling)"}
        mix = ", ".join(f"{names.get(k, k)} {v:.0%}" for k, v in self.mix.items())
        sizes = ", ".join(f"{k} numbers {v:.0%}" for k, v in sorted(self.n_numbers.items()))
        if self.first_mix and self.first_fraction > 0:
            first = ", ".join(f"{k} {v:.0%}" for k, v in self.first_mix.items())
            mix = f"first {self.first_fraction:.0%} of the run {first}, then {mix}"
        extra = f"; traces pruned to widths {list(self.trace_width)}, at most {self.trace_max_chars} chars" if "search" in self.mix else ""
        return f"freshly generated CountDown 'train' split (numbers 1..99, targets 10..100 minus 9 held out); formats: {mix}; sizes: {sizes}{extra}"


# Sized for this machine: two shared CPU cores give ~1-3k tokens/s, so a ~1.5M-parameter
# model seeing ~7M tokens in 50 minutes beats a 4.7M one seeing ~2.5M (measured: 950 tok/s).
RECIPES: dict[str, TrainConfig] = {
    # One thread with the other core busy gives ~6k tokens/s at this shape (~20M tokens in
    # 50 minutes); the paper's task is 4 numbers, so 3-number problems are a small share.
    "countdown-direct": TrainConfig(
        name="countdown-direct", hidden_size=192, layers=4, heads=6, kv_heads=2,
        intermediate_size=512, lr=2e-3, batch_tokens=3072, minutes=48.0, attention_bias=True,
        mix={"direct": 0.75, "plan": 0.25}, n_numbers={4: 0.9, 3: 0.1},
        # Then rejection-sampling fine-tuning (STaR / RFT): the model's own verified answers
        # to 6,000 training problems, half of the examples, solver answers the other half.
        then=TrainConfig(
            name="countdown-direct", hidden_size=192, layers=4, heads=6, kv_heads=2,
            intermediate_size=512, lr=5e-4, warmup_steps=20, batch_tokens=3072, minutes=10.0,
            attention_bias=True, mix={"rft": 0.5, "direct": 0.3, "plan": 0.2}, n_numbers={4: 0.9, 3: 0.1},
            rft_problems=6000, rft_samples=8, rft_temperature=1.0,
            # Seed 0 as stage 1 (so its solver half replays stage 1's first problems): what
            # the shipped checkpoint was trained with; a new run would do better with seed 1.
        ),
    ),
    "countdown-direct-small": TrainConfig(
        name="countdown-direct-small", hidden_size=128, layers=3, heads=4, kv_heads=2,
        intermediate_size=384, lr=3e-3, batch_tokens=3072, minutes=8.0,
        n_numbers={4: 0.8, 3: 0.2},
        # The shipped checkpoint continued 11 more minutes at a lower rate (see its card).
        then=TrainConfig(
            name="countdown-direct-small", hidden_size=128, layers=3, heads=4, kv_heads=2,
            intermediate_size=384, lr=1.5e-3, warmup_steps=20, batch_tokens=3072, minutes=11.0,
            n_numbers={4: 0.8, 3: 0.2}, seed=1,
        ),
    ),
    # The pruned search finds 34% / 52% / 71% of 4-number solutions within 256 / 512 /
    # 1,024 characters, so the solve rate can rise with the budget. Direct examples (short:
    # ~100 problems per step against ~5 traces) teach copying numbers and arithmetic; a
    # trace-only run saw ~4,000 problems in 40 minutes and still could not copy its prompt.
    "countdown-search": TrainConfig(
        name="countdown-search", kind="search", hidden_size=192, layers=4, heads=6, kv_heads=2,
        intermediate_size=512, context=1024, lr=2e-3, batch_tokens=4096,
        first_mix={"direct": 1.0}, first_fraction=0.35,
        mix={"search": 0.6, "direct": 0.4}, n_numbers={4: 0.5, 3: 0.5}, trace_max_chars=1000, minutes=58.0,
    ),
    # Sudoku 6x6 (boxes 2x3), 9..18 givens; board size chosen by pilots (see the model cards).
    "sudoku-direct": TrainConfig(
        name="sudoku-direct", task="sudoku", kind="direct", arch="llama", hidden_size=192, layers=4, heads=6,
        kv_heads=2, intermediate_size=512, context=96, lr=2e-3, batch_tokens=3072, mix={"direct": 1.0},
        sudoku_size=6, sudoku_givens=(9, 18), minutes=30.0,
    ),
    # Grid-per-line traces: 12-given puzzles need a median of 338 characters (91% within
    # 512); traces of the hardest 9-given puzzles beyond 1,000 characters are left out.
    "sudoku-search": TrainConfig(
        name="sudoku-search", task="sudoku", kind="search", arch="llama", hidden_size=192, layers=4, heads=6,
        kv_heads=2, intermediate_size=512, context=1024, lr=2e-3, batch_tokens=6144, mix={"search": 1.0},
        sudoku_size=6, sudoku_givens=(9, 18), trace_max_chars=1000, minutes=58.0,
    ),
}


def with_budget(cfg: TrainConfig, *, minutes: float | None = None, steps: int | None = None,
                seed: int | None = None) -> TrainConfig:
    """A copy of a (possibly staged) recipe whose whole run gets ``minutes`` or ``steps``.

    The budget is split across the stages in proportion to the recipe's own minutes (each
    stage gets at least one step); ``seed`` replaces the first stage's seed and shifts the
    others by the same amount.
    """
    stages = cfg.stages()
    weights = [st.minutes or 1.0 for st in stages]
    total = sum(weights)
    out = None
    for st, w in zip(reversed(stages), reversed(weights)):
        update: dict = {"then": out}
        if steps is not None:
            update.update(steps=max(1, round(steps * w / total)), minutes=None if minutes is None else minutes * w / total)
        elif minutes is not None:
            update["minutes"] = minutes * w / total
        if seed is not None:
            update["seed"] = seed + st.seed - cfg.seed  # keeps the recipe's per-stage offsets
        if st.rft_problems and st.minutes and (steps is not None or minutes is not None):
            # Sampling is part of a stage's time: a shorter stage samples fewer problems
            # (~100 optimizer steps a minute here when the budget is in steps).
            new = update["minutes"] if update.get("minutes") is not None else update["steps"] / 100
            update["rft_problems"] = max(16, min(st.rft_problems, round(st.rft_problems * new / st.minutes)))
        out = st.model_copy(update=update)
    return out


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
        from .sudoku.data import example_stream as sudoku_stream

        yield from sudoku_stream(cfg, seed)
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


def qwen2_to_llama(src: str | Path, dst: str | Path) -> None:
    """Rewrites a Qwen2 checkpoint as the identical Llama one (attention_bias=True, zero
    o_proj bias), so that AutoTokenizer loads its character tokenizer unchanged."""
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
        from .rejection_sampling import sample_verified

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


def main(argv: list[str] | None = None) -> None:
    """``python -m ttc.tasks.training NAME OUT_DIR [minutes]``: train a recipe (for scripts)."""
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    cfg = RECIPES[argv[0]]
    if len(argv) > 2:
        cfg = with_budget(cfg, minutes=float(argv[2]))
    final = train(cfg, argv[1])
    print(json.dumps({k: v for k, v in final.items() if k != "history"}))


if __name__ == "__main__":
    main()
