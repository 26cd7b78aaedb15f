"""The numbers every measurement reports: pass@k, solve rate within L tokens, 95% intervals.

One home for them, so that a model card, a benchmark and ``Orchestrator.evaluate`` compute
a figure the same way. Curves are dicts keyed by ``str(k)`` or ``str(L)`` (DESIGN.md
contracts: ``{"1": 0.11, "4": 0.32, ...}``). Values are per-problem means over problems;
rounding for display is left to the caller.

- pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
  Trained on Code"): from n samples of which c are correct, ``1 - C(n-c, k) / C(n, k)``.
- Solved within L tokens: a problem whose verified answer ends by token L counts as solved
  at budget L, which is what one run with ``max_tokens = L`` returns, so one long
  generation per problem gives the whole curve.
- Intervals: Wilson score for 0/1 outcomes (sensible at 0% and 100%, unlike Wald); the
  normal approximation, or a seeded percentile bootstrap, for per-problem fractions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = [
    "Z95",
    "bootstrap_ci95",
    "mean_pass_at_k",
    "normal_ci95",
    "pass_at_k",
    "pass_at_k_curve",
    "pass_at_k_per_problem",
    "rate_ci95",
    "solve_rate_curve",
    "solved_within",
    "wilson_ci95",
]

#: The two-sided 95% quantile of the standard normal, as the Wilson interval uses it.
Z95 = 1.959963984540054

# A solve record: the token count at which one sample was solved, or None (never solved).
SolvedAt = int | None


def _mean(values: Sequence[float]) -> float:
    # A plain sum, not statistics.fmean: the published cards were computed so (the two
    # differ in the last bits, which can flip a 4-decimal rounding).
    return sum(values) / len(values)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: 1 - C(n-c, k) / C(n, k).

    Raises:
        ValueError: ``k`` is larger than ``n`` (the estimator needs at least k samples).
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_per_problem(correct: Iterable[int], n: int, k: int) -> list[float]:
    """pass@k of each problem, given how many of its ``n`` samples were correct."""
    return [pass_at_k(n, c, k) for c in correct]


def mean_pass_at_k(correct: Iterable[int], n: int, k: int) -> float:
    """pass@k averaged over problems (``correct[i]`` of problem i's ``n`` samples were right).

    Raises:
        ValueError: No problems, or ``k`` larger than ``n``.
    """
    values = pass_at_k_per_problem(correct, n, k)
    if not values:
        raise ValueError("pass@k of no problems")
    return _mean(values)


def pass_at_k_curve(correct: Sequence[int], n: int, ks: Iterable[int]) -> dict[str, float]:
    """Mean pass@k for every k in ``ks`` that ``n`` samples allow, keyed by ``str(k)``."""
    return {str(k): mean_pass_at_k(correct, n, k) for k in ks if k <= n}


def wilson_ci95(successes: int, n: int) -> list[float]:
    """Wilson score 95% interval of a proportion; ``[0.0, 1.0]`` when ``n`` is 0."""
    if n == 0:
        return [0.0, 1.0]
    z = Z95
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def normal_ci95(values: Sequence[float]) -> list[float]:
    """Normal-approximation 95% interval of a mean of per-problem values in [0, 1].

    Mean +- 1.96 standard errors (sample standard deviation), clipped to [0, 1]. Fewer
    than two values say nothing about the spread: the interval is then ``[0.0, 1.0]``.
    """
    if len(values) < 2:
        return [0.0, 1.0]
    n = len(values)
    m = _mean(values)
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    # 1.96, not Z95, and this order of operations: the published cards were computed so,
    # and their 4-decimal figures must come out the same.
    half = 1.96 * math.sqrt(var / n)
    return [max(0.0, m - half), min(1.0, m + half)]


def bootstrap_ci95(values: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> list[float]:
    """Percentile-bootstrap 95% interval of a mean of per-problem values, reproducible by ``seed``.

    Resamples problems with replacement ``resamples`` times; ``[0.0, 1.0]`` for no values.
    """
    if not values:
        return [0.0, 1.0]
    import numpy as np

    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return [float(lo), float(hi)]


def rate_ci95(values: Sequence[float]) -> list[float]:
    """95% interval of a mean of per-problem values in [0, 1]: Wilson when every value is
    0 or 1 (a proportion), the normal approximation otherwise (fractions, pass@k)."""
    if all(v in (0.0, 1.0) for v in values):
        return wilson_ci95(int(sum(values)), len(values))
    return normal_ci95(values)


def solved_within(solved_at: Sequence[SolvedAt | Sequence[SolvedAt]], limit: int) -> list[float]:
    """Per problem, whether it was solved within ``limit`` tokens.

    Args:
        solved_at: Per problem, the token count at which its verified answer ended, or
            None when it was not solved; or, for several samples per problem, a list of
            those (the problem then scores the fraction of its samples solved in time).
        limit: The token budget L.

    Returns:
        Per problem, 1.0 / 0.0 (one sample) or the fraction of its samples.
    """
    out = []
    for s in solved_at:
        if s is None or isinstance(s, int):
            out.append(1.0 if s is not None and s <= limit else 0.0)
        else:
            out.append(sum(1 for x in s if x is not None and x <= limit) / len(s))
    return out


def solve_rate_curve(solved_at: Sequence[SolvedAt | Sequence[SolvedAt]], limits: Iterable[int]) -> dict[str, float]:
    """Mean solve rate within each token budget L, keyed by ``str(L)`` (see :func:`solved_within`).

    Raises:
        ValueError: No problems.
    """
    if not solved_at:
        raise ValueError("a solve rate of no problems")
    return {str(L): _mean(solved_within(solved_at, L)) for L in limits}
