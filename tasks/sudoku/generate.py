"""Seeded generator of uniquely solvable Sudoku puzzles with a set number of givens.

A puzzle is made by filling a random complete grid, then blanking cells in random order,
keeping a blank only while the puzzle still has exactly one solution, until ``givens``
cells remain (restarting from a new grid when that order gets stuck). Difficulty is the
number of givens: fewer givens, more deduction (and more backtracking) needed.

Splits: a puzzle belongs to "test" when the CRC-32 of its grid string is 0 mod 10, else to
"train". Training data only ever holds "train" puzzles, the held-out set only "test" ones
(a puzzle is moved into its split by a random symmetry of the board: relabelled digits,
rows permuted within and across bands, columns within and across stacks), so the two
never share a puzzle.
"""

from __future__ import annotations

import random
import zlib
from typing import Iterator

from ttc.verifiers.sudoku import box_shape, format_grid

from .solver import count_solutions, random_full_grid

__all__ = ["SPLITS", "DEFAULT_GIVENS", "MIN_GIVENS", "make_puzzle", "make_problems", "split_of", "transform", "train_puzzles"]

SPLITS = ("train", "test")
#: Givens of the held-out card measurements per board size (chosen by calibration).
DEFAULT_GIVENS: dict[int, int] = {4: 6, 6: 12, 8: 26, 9: 32}
#: Fewest givens the generator is asked for (random removal rarely gets lower).
MIN_GIVENS: dict[int, int] = {4: 4, 6: 9, 8: 20, 9: 24}


def split_of(cells: list[int], size: int) -> str:
    """"test" for a held-out puzzle, else "train"."""
    return "test" if zlib.crc32(format_grid(cells, size).encode()) % 10 == 0 else "train"


def transform(cells: list[int], size: int, rng: random.Random, solution: list[int] | None = None):
    """A random symmetry of the board applied to a puzzle (and its solution)."""
    br, bc = box_shape(size)
    bands = list(range(size // br))
    rng.shuffle(bands)
    rows = []
    for b in bands:
        inner = list(range(br))
        rng.shuffle(inner)
        rows += [b * br + i for i in inner]
    stacks = list(range(size // bc))
    rng.shuffle(stacks)
    cols = []
    for s in stacks:
        inner = list(range(bc))
        rng.shuffle(inner)
        cols += [s * bc + j for j in inner]
    digits = list(range(1, size + 1))
    rng.shuffle(digits)
    relabel = [0] + digits
    transpose = br == bc and rng.random() < 0.5

    def apply(g: list[int]) -> list[int]:
        out = [relabel[g[rows[r] * size + cols[c]]] for r in range(size) for c in range(size)]
        if transpose:
            out = [out[c * size + r] for r in range(size) for c in range(size)]
        return out

    return apply(cells), (apply(solution) if solution is not None else None)


def make_puzzle(size: int, givens: int, rng: random.Random, max_tries: int = 200) -> tuple[list[int], list[int]]:
    """(puzzle, solution): a uniquely solvable puzzle with exactly ``givens`` givens.

    Raises:
        ValueError: ``givens`` out of range, or no puzzle found in ``max_tries`` grids.
    """
    box_shape(size)
    n = size * size
    if not MIN_GIVENS[size] <= givens <= n:
        raise ValueError(f"givens must be in {MIN_GIVENS[size]}..{n} for {size}x{size}, got {givens}")
    for _ in range(max_tries):
        solution = random_full_grid(size, rng)
        cells = list(solution)
        order = list(range(n))
        rng.shuffle(order)
        filled = n
        for i in order:
            if filled == givens:
                break
            v = cells[i]
            cells[i] = 0
            if count_solutions(cells, size, 2) == 1:
                filled -= 1
            else:
                cells[i] = v
        if filled == givens:
            return cells, solution
    raise ValueError(f"no unique {size}x{size} puzzle with {givens} givens found in {max_tries} tries")


def _into_split(cells, solution, size, split, rng):
    for _ in range(1000):
        if split_of(cells, size) == split:
            return cells, solution
        cells, solution = transform(cells, size, rng, solution)
    raise RuntimeError("could not move a puzzle into its split")  # pragma: no cover


def make_problems(n: int, seed: int = 0, split: str = "test", size: int = 6, givens: int | None = None) -> list[dict]:
    """``n`` seeded problems ``{"id", "grid", "size", "givens"}`` of one split.

    Args:
        n: How many.
        seed: Same seed, same problems.
        split: "test" (held out) or "train".
        size: Board size (4, 6, 8 or 9).
        givens: Givens per puzzle (default :data:`DEFAULT_GIVENS`).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    givens = DEFAULT_GIVENS[size] if givens is None else givens
    rng = random.Random(f"sudoku/{split}/{size}/{givens}/{seed}")
    out = []
    for i in range(n):
        cells, sol = make_puzzle(size, givens, rng)
        cells, sol = _into_split(cells, sol, size, split, rng)
        out.append({"id": f"sd{size}-g{givens}-{split}-{seed}-{i}", "grid": format_grid(cells, size), "size": size, "givens": givens})
    return out


def train_puzzles(seed: int, size: int, givens: tuple[int, int], variants: int = 8) -> Iterator[tuple[list[int], list[int]]]:
    """Endless "train" (puzzle, solution) pairs: a fresh puzzle with givens drawn uniformly
    from the inclusive range, then ``variants`` random symmetries of it (cheap, and each is
    again uniquely solvable with the same number of givens)."""
    rng = random.Random(f"sudoku-train/{size}/{seed}")
    lo, hi = givens
    while True:
        base, base_sol = make_puzzle(size, rng.randint(lo, hi), rng)
        for _ in range(variants):
            cells, sol = transform(base, size, rng, base_sol)
            if split_of(cells, size) == "train":
                yield cells, sol
