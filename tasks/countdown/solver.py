"""Exact CountDown solver: makes training data and reference answers, nothing else.

Rules (the paper's): combine two numbers with +, x, larger minus smaller (result > 0) or
exact division (result an integer); every given number is used exactly once; the last
number left must equal the target. Strategies and verifiers never call this module
(DESIGN.md, honesty of measurements).
"""

from __future__ import annotations

import random
from functools import lru_cache

__all__ = ["Step", "apply_op", "moves", "solve", "solvable", "solvable_batch", "format_step", "format_steps"]

# A step is (a, op, b, result) with a >= b, written "a op b=result".
Step = tuple[int, str, int, int]


def apply_op(a: int, op: str, b: int) -> int | None:
    """Applies ``op`` to ``a`` and ``b`` (a >= b) by the CountDown rules, or None."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a > b else None
    if op == "/":
        # Dividing by 1 repeats "*1"; dropping it keeps traces and searches smaller.
        return a // b if b > 1 and a % b == 0 else None
    return None


def moves(nums: tuple[int, ...]) -> list[tuple[Step, tuple[int, ...]]]:
    """All distinct legal moves from a state: (step, remaining numbers after the step)."""
    out: list[tuple[Step, tuple[int, ...]]] = []
    seen: set[tuple] = set()
    for i in range(len(nums)):
        for j in range(i + 1, len(nums)):
            a, b = (nums[i], nums[j]) if nums[i] >= nums[j] else (nums[j], nums[i])
            rest = nums[:i] + nums[i + 1 : j] + nums[j + 1 :]
            for op in "+-*/":
                r = apply_op(a, op, b)
                if r is None:
                    continue
                key = (a, op, b)
                if key in seen:
                    continue
                seen.add(key)
                out.append(((a, op, b, r), rest + (r,)))
    return out


@lru_cache(maxsize=200_000)
def _reach_all(nums: tuple[int, ...], target: int) -> bool:
    if len(nums) == 1:
        return nums[0] == target
    for _, child in moves(nums):
        if _reach_all(tuple(sorted(child)), target):
            return True
    return False


def solvable(numbers: list[int] | tuple[int, ...], target: int) -> bool:
    """True when some sequence of legal steps uses all numbers and ends at ``target``."""
    return _reach_all(tuple(sorted(numbers)), target)


def solve(
    numbers: list[int] | tuple[int, ...], target: int, rng: random.Random | None = None
) -> list[Step] | None:
    """Finds one solution as a list of steps, or None when there is none.

    Args:
        numbers: The given numbers.
        target: The number to reach.
        rng: When given, moves are tried in a random order, so that repeated calls give
            varied solutions (better training data than always the first in a fixed order).
    """
    nums = tuple(numbers)
    if not solvable(nums, target):
        return None
    path: list[Step] = []

    def dfs(state: tuple[int, ...]) -> bool:
        if len(state) == 1:
            return state[0] == target
        options = moves(state)
        if rng is not None:
            rng.shuffle(options)
        for step, child in options:
            # The cached reachability test prunes dead children before descending.
            if not _reach_all(tuple(sorted(child)), target):
                continue
            path.append(step)
            if dfs(child):
                return True
            path.pop()
        return False

    dfs(nums)
    return path


def format_step(step: Step) -> str:
    """``(81, '-', 48, 33)`` -> ``"81-48=33"``."""
    a, op, b, r = step
    return f"{a}{op}{b}={r}"


def format_steps(steps: list[Step]) -> str:
    """Steps joined by commas: the answer format every CountDown completion ends with."""
    return ",".join(format_step(s) for s in steps)


def _combine(x, y):
    """All legal results of one value from ``x`` with one from ``y``, row by row.

    ``x`` is (N, m), ``y`` is (N, k) int64 with -1 for "no value"; returns (N, 4 m k).
    """
    import numpy as np

    a = x[:, :, None]
    b = y[:, None, :]
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    ok = lo > 0
    add = np.where(ok, hi + lo, -1)
    mul = np.where(ok, hi * lo, -1)
    sub = np.where(ok & (hi > lo), hi - lo, -1)
    safe = np.where(lo > 1, lo, 1)
    div = np.where(ok & (lo > 1) & (hi % safe == 0), hi // safe, -1)
    n = x.shape[0]
    return np.concatenate([r.reshape(n, -1) for r in (add, mul, sub, div)], axis=1)


def solvable_batch(numbers, targets):
    """Vectorized :func:`solvable` for many problems of 3 or 4 numbers at once.

    Rejection sampling draws several problems per solvable one; checking them in numpy
    keeps data generation from slowing training down.

    Args:
        numbers: int array (N, 3) or (N, 4).
        targets: int array (N,).

    Returns:
        Boolean array (N,).
    """
    import numpy as np

    nums = np.asarray(numbers, dtype=np.int64)
    t = np.asarray(targets, dtype=np.int64)[:, None]
    cols = [nums[:, i : i + 1] for i in range(nums.shape[1])]

    def r3(i, j, k):
        return np.concatenate(
            [
                _combine(_combine(cols[i], cols[j]), cols[k]),
                _combine(_combine(cols[i], cols[k]), cols[j]),
                _combine(_combine(cols[j], cols[k]), cols[i]),
            ],
            axis=1,
        )

    if nums.shape[1] == 3:
        return (r3(0, 1, 2) == t).any(axis=1)
    if nums.shape[1] != 4:
        raise ValueError("solvable_batch handles 3 or 4 numbers")
    parts = [
        _combine(r3(1, 2, 3), cols[0]),
        _combine(r3(0, 2, 3), cols[1]),
        _combine(r3(0, 1, 3), cols[2]),
        _combine(r3(0, 1, 2), cols[3]),
        _combine(_combine(cols[0], cols[1]), _combine(cols[2], cols[3])),
        _combine(_combine(cols[0], cols[2]), _combine(cols[1], cols[3])),
        _combine(_combine(cols[0], cols[3]), _combine(cols[1], cols[2])),
    ]
    return np.concatenate([(p == t).any(axis=1)[:, None] for p in parts], axis=1).any(axis=1)
