"""Seeded CountDown problem generator with the paper's distribution.

4 numbers uniform in 1..99, redrawn until the problem is solvable; targets uniform in
10..100. A fixed 10% of the targets (9 of 91) never appear in "train" or "test" and make
up the "val_target" split. "train" and "test" are disjoint: a problem belongs to "test"
when a hash of (sorted numbers, target) falls in a fixed 10% bucket, so freshly generated
training data can never contain a test problem.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np

from .solver import solvable_batch

__all__ = [
    "MIN_NUMBER",
    "MAX_NUMBER",
    "MIN_TARGET",
    "MAX_TARGET",
    "HELD_OUT_TARGETS",
    "SPLITS",
    "split_of",
    "make_problems",
]

MIN_NUMBER, MAX_NUMBER = 1, 99
MIN_TARGET, MAX_TARGET = 10, 100
# Fixed by a constant seed so that every install holds out the same targets.
HELD_OUT_TARGETS: tuple[int, ...] = tuple(
    sorted(random.Random("ttc-countdown-held-out-targets").sample(range(MIN_TARGET, MAX_TARGET + 1), 9))
)
_SEEN_TARGETS = np.array(
    [t for t in range(MIN_TARGET, MAX_TARGET + 1) if t not in HELD_OUT_TARGETS], dtype=np.int64
)
SPLITS = ("train", "test", "val_target")


def _is_test(numbers, target: int) -> bool:
    key = ",".join(map(str, sorted(int(n) for n in numbers))) + f">{int(target)}"
    return hashlib.blake2b(key.encode(), digest_size=4).digest()[0] < 26  # ~10% of 256


def split_of(numbers, target: int) -> str:
    """Which split a problem belongs to: "val_target", "test" or "train"."""
    if int(target) in HELD_OUT_TARGETS:
        return "val_target"
    return "test" if _is_test(numbers, target) else "train"


def make_problems(
    n: int, seed: int = 0, split: str = "train", n_numbers: int = 4, max_number: int = MAX_NUMBER
) -> list[dict]:
    """Draws ``n`` solvable problems of one split, deterministically from ``seed``.

    Args:
        n: How many problems.
        seed: Same seed, split and size give the same problems on every machine.
        split: "train", "test" or "val_target".
        n_numbers: 4 (the paper's task) or 3 (the easier variant).
        max_number: Largest given number (99 in the paper).

    Returns:
        Problems ``{"id", "numbers", "target"}``; numbers in drawn order.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if n_numbers not in (3, 4):
        raise ValueError("n_numbers must be 3 or 4")
    rng = np.random.default_rng(
        [int.from_bytes(hashlib.blake2b(f"{split}/{n_numbers}/{max_number}".encode(), digest_size=4).digest(), "little"), int(seed)]
    )
    targets_pool = np.array(HELD_OUT_TARGETS, dtype=np.int64) if split == "val_target" else _SEEN_TARGETS
    out: list[dict] = []
    while len(out) < n:
        # Target first (uniform), then numbers redrawn until solvable: vectorized batches.
        batch = 4096
        targets = rng.choice(targets_pool, size=batch)
        nums = rng.integers(MIN_NUMBER, max_number + 1, size=(batch, n_numbers))
        ok = solvable_batch(nums, targets)
        for row, tgt, good in zip(nums, targets, ok):
            if not good:
                continue
            if split != "val_target" and (split == "test") != _is_test(row, tgt):
                continue
            out.append(
                {
                    "id": f"cd{n_numbers}-{split}-{seed}-{len(out)}",
                    "numbers": [int(x) for x in row],
                    "target": int(tgt),
                }
            )
            if len(out) == n:
                break
    return out
