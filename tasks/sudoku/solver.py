"""Exact Sudoku solver (bitmask DFS, most-constrained cell first).

Used to make training data and reference answers, and to check uniqueness while
generating puzzles. Strategies and verifiers never call it.
"""

from __future__ import annotations

import random
from functools import lru_cache

from ttc.verifiers.sudoku import box_shape

__all__ = ["Geometry", "geometry", "solve", "count_solutions", "candidates_mask", "random_full_grid"]


class Geometry:
    """Row, column and box of every cell of a board size."""

    def __init__(self, size: int):
        br, bc = box_shape(size)
        self.size = size
        self.box = (br, bc)
        self.full = sum(1 << d for d in range(1, size + 1))
        self.rcb = [
            (i // size, i % size, (i // size // br) * (size // bc) + (i % size) // bc) for i in range(size * size)
        ]


@lru_cache(maxsize=None)
def geometry(size: int) -> Geometry:
    return Geometry(size)


def _masks(cells: list[int], g: Geometry):
    n = g.size
    rows, cols, boxes = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(cells):
        if v:
            r, c, b = g.rcb[i]
            bit = 1 << v
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return None
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    return rows, cols, boxes


def candidates_mask(cells: list[int], size: int) -> list[int]:
    """Per cell, a bit mask of the digits still allowed (bit d for digit d; 0 for filled)."""
    g = geometry(size)
    masks = _masks(cells, g)
    if masks is None:
        return [0] * len(cells)
    rows, cols, boxes = masks
    out = []
    for i, v in enumerate(cells):
        if v:
            out.append(0)
        else:
            r, c, b = g.rcb[i]
            out.append(g.full & ~(rows[r] | cols[c] | boxes[b]))
    return out


def _search(cells: list[int], size: int, limit: int, rng: random.Random | None) -> tuple[int, list[int] | None]:
    g = geometry(size)
    masks = _masks(cells, g)
    if masks is None:
        return 0, None
    rows, cols, boxes = masks
    cells = list(cells)
    empties = [i for i, v in enumerate(cells) if not v]
    rcb, full = g.rcb, g.full
    found: list[list[int]] = []
    count = 0

    def rec(k: int) -> bool:
        nonlocal count
        if k == len(empties):
            count += 1
            if not found:
                found.append(list(cells))
            return count >= limit
        best_j, best_m, best_n = -1, 0, 99
        for j in range(k, len(empties)):
            r, c, b = rcb[empties[j]]
            m = full & ~(rows[r] | cols[c] | boxes[b])
            cnt = m.bit_count()
            if cnt < best_n:
                best_j, best_m, best_n = j, m, cnt
                if cnt <= 1:
                    break
        if best_n == 0:
            return False
        empties[k], empties[best_j] = empties[best_j], empties[k]
        i = empties[k]
        r, c, b = rcb[i]
        vals = [d for d in range(1, size + 1) if best_m >> d & 1]
        if rng is not None:
            rng.shuffle(vals)
        for d in vals:
            bit = 1 << d
            cells[i] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            stop = rec(k + 1)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            cells[i] = 0
            if stop:
                return True
        return False

    rec(0)
    return count, (found[0] if found else None)


def solve(cells: list[int], size: int, rng: random.Random | None = None) -> list[int] | None:
    """One solution (the first found; random value order with ``rng``), or None."""
    return _search(cells, size, 1, rng)[1]


def count_solutions(cells: list[int], size: int, limit: int = 2) -> int:
    """Number of solutions, counted up to ``limit``."""
    return _search(cells, size, limit, None)[0]


def random_full_grid(size: int, rng: random.Random) -> list[int]:
    """A uniformly shuffled-search complete grid."""
    grid = solve([0] * (size * size), size, rng)
    assert grid is not None
    return grid
