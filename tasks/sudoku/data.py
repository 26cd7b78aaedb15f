"""Training data of the built-in Sudoku models (used by ``tasks.training`` when
``TrainConfig.task == "sudoku"``): fresh "train"-split puzzles, never a fixed file."""

from __future__ import annotations

import random
from typing import Iterator

from .formats import training_example
from .generate import train_puzzles

__all__ = ["example_stream", "data_description"]


def example_stream(cfg, seed: int) -> Iterator[tuple[str, str]]:
    """Endless (prompt, completion) pairs: puzzles of ``cfg.sudoku_size`` with givens drawn
    uniformly from ``cfg.sudoku_givens``, formats mixed by ``cfg.mix`` ("direct", "search");
    search traces longer than ``cfg.trace_max_chars`` are left out."""
    rng = random.Random(f"sudoku-mix/{seed}")
    fmts, fw = zip(*cfg.mix.items())
    for cells, sol in train_puzzles(seed, cfg.sudoku_size, tuple(cfg.sudoku_givens)):
        ex = training_example(cells, sol, cfg.sudoku_size, rng.choices(fmts, fw)[0], max_chars=cfg.trace_max_chars)
        if ex is not None:
            yield ex


def data_description(cfg) -> str:
    """One line for the model card."""
    lo, hi = cfg.sudoku_givens
    mix = ", ".join(f"{k} {v:.0%}" for k, v in cfg.mix.items())
    extra = f"; traces of at most {cfg.trace_max_chars} chars (longer ones left out)" if "search" in cfg.mix else ""
    return (
        f"freshly generated uniquely solvable {cfg.sudoku_size}x{cfg.sudoku_size} Sudoku, 'train' split "
        f"(CRC-32 of the grid not 0 mod 10), {lo}..{hi} givens uniform, each puzzle in 8 random board "
        f"symmetries; formats: {mix}{extra}"
    )
