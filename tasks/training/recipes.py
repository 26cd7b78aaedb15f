"""What a training run depends on (:class:`TrainConfig`) and the recipes of the built-in models.

Pure configuration: no torch here, so listing or budgeting a recipe stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

__all__ = ["RECIPES", "TrainConfig", "with_budget"]


class TrainConfig(BaseModel):
    """Everything a training run depends on.

    Attributes:
        name: Checkpoint name.
        kind: "direct" (direct + plan-conditioned formats), "search" (DFS traces) or
            "reflective" (thought-marked traces that re-check an answer, for TrimR).
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
    task: Literal["countdown", "sudoku", "stateful-arith"] = "countdown"
    kind: Literal["direct", "search", "reflective"] = "direct"
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
            from ..sudoku.data import data_description

            return data_description(self)
        if self.task == "stateful-arith":
            from ..stateful_arith.data import data_description as arith_description

            return arith_description(self)
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
    # Thought-marked traces for TrimR (tasks/countdown/reflective.py): fine-tuned from the
    # shipped countdown-direct (same tokenizer and shape; its answers are the first thought
    # of a trace). RoPE positions past its 128-token context are computed, not learned, so
    # the 512-token context only needs max_position_embeddings raised in the saved config.
    "countdown-reflective": TrainConfig(
        name="countdown-reflective", kind="reflective", hidden_size=192, layers=4, heads=6, kv_heads=2,
        intermediate_size=512, context=512, lr=1e-3, warmup_steps=50, batch_tokens=4096,
        attention_bias=True, mix={"reflective": 1.0}, n_numbers={4: 0.8, 3: 0.2},
        trace_max_chars=490, minutes=38.0,
        init_from=str(Path(__file__).resolve().parents[1] / "checkpoints" / "countdown-direct"),
    ),
    # Sudoku 6x6 (boxes 2x3), 9..18 givens; board size chosen by pilots (see the model cards).
    "sudoku-direct": TrainConfig(
        name="sudoku-direct", task="sudoku", kind="direct", arch="llama", hidden_size=192, layers=4, heads=6,
        kv_heads=2, intermediate_size=512, context=96, lr=2e-3, batch_tokens=3072, mix={"direct": 1.0},
        sudoku_size=6, sudoku_givens=(9, 18), minutes=30.0,
    ),
    # stateful-arith (sleep-time compute): one model for (a) derivations, (b) notes and
    # (c) answers from notes; examples run 60-260 characters, so a 384-token context holds
    # context + notes + derivation. Same shape as countdown-direct (~1.5M parameters).
    "stateful-arith": TrainConfig(
        name="stateful-arith", task="stateful-arith", kind="direct", arch="llama", hidden_size=192, layers=4,
        heads=6, kv_heads=2, intermediate_size=512, context=384, lr=2e-3, batch_tokens=4096,
        attention_bias=True, mix={"derive": 0.4, "notes": 0.2, "with_notes": 0.4}, minutes=40.0,
        # Then 16 more minutes from stage 1's checkpoint (a fresh warm-up and cosine at 1.5e-3).
        then=TrainConfig(
            name="stateful-arith", task="stateful-arith", kind="direct", arch="llama", hidden_size=192, layers=4,
            heads=6, kv_heads=2, intermediate_size=512, context=384, lr=1.5e-3, warmup_steps=20, batch_tokens=4096,
            attention_bias=True, mix={"derive": 0.4, "notes": 0.2, "with_notes": 0.4}, minutes=16.0, seed=1,
        ),
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

