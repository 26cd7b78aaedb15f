"""Checking the token usage an OpenAI-compatible server reports, and sharing it out.

Split from ``openai_backend`` so the rules that decide what a remote call is charged sit
in one short file a reviewer can audit apart from the HTTP plumbing: a server is
untrusted, so its counts are validated before anything is billed, and its one
completion total is divided among ``n`` choices so that the parts add up exactly.
Pure functions of their arguments; nothing here talks to a server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import InvalidUsageError

# Reported token counts must fit a signed 32-bit column; no real call comes near it.
MAX_REPORTED_TOKENS = 2**31

# text, server finish reason, logprobs: one choice of a response as the backend parses it.
Choice = tuple[str, str | None, list[float] | None]


def usage_pair(usage: Any, endpoint: str) -> tuple[int, int] | None:
    """The (prompt, completion) tokens a server reported, once checked.

    The openai client does not validate response fields, so a count arrives exactly as
    the server wrote it: a float, a string, a bool, -3, 10**20 or an ``Infinity`` that
    Python's JSON parser accepts. None of those is charged.

    Returns:
        None when the server reported no usage, or lacks either count (the caller then
        counts with the tokenizer, or fails).

    Raises:
        InvalidUsageError: A count that is present is not an int in [0, 2**31).
    """
    if usage is None:
        return None
    if not hasattr(usage, "completion_tokens"):  # "usage": 5 parses as the bare value
        raise InvalidUsageError(endpoint, "usage", usage)
    counts = {}
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, field, None)
        if value is None:
            continue
        # bool is an int subclass, and a float, even 3.0, means the server is not counting.
        if type(value) is not int or not 0 <= value < MAX_REPORTED_TOKENS:
            raise InvalidUsageError(endpoint, field, value)
        counts[field] = value
    if "prompt_tokens" not in counts or "completion_tokens" not in counts:
        return None
    return counts["prompt_tokens"], counts["completion_tokens"]


def finish_reason(reason: str | None) -> str:
    """Map a server's finish reason onto ttc's two: only ``length`` means cut short."""
    return "length" if reason == "length" else "stop"


def split_total(
    total: int,
    choices: list[Choice],
    finishes: list[str],
    max_tokens: int,
    count: Callable[[str], int],
) -> list[int]:
    """Per-choice token counts that add up to the server's completion total.

    Usage has one total for all n choices. Per-choice logprobs give exact lengths.
    Otherwise a choice cut by ``length`` has ``max_tokens`` tokens, and the rest of
    the total is shared among the others in proportion to ``count`` of their text (the
    tokenizer's count, or failing that the byte length): an estimate per choice, but the
    sum is exactly what the server billed, which is what budgets settle on.

    Args:
        total: The completion tokens the server billed for all choices together.
        choices: The parsed choices, in index order.
        finishes: Each choice's ttc finish reason (see ``finish_reason``).
        max_tokens: The request's per-choice cap.
        count: Weighs a choice's text when no logprobs give its exact length.
    """
    if len(choices) == 1:
        return [total]
    if all(lps is not None for _, _, lps in choices):
        return apportion(total, [len(lps) for _, _, lps in choices])
    weights = [count(text) for text, _, _ in choices]
    free = [i for i, f in enumerate(finishes) if f != "length"]
    rest = total - (len(choices) - len(free)) * max_tokens
    if len(free) == len(choices) or rest < 0 or (not free and rest != 0):
        return apportion(total, weights)
    counts = [max_tokens] * len(choices)
    for i, k in zip(free, apportion(rest, [weights[i] for i in free])):
        counts[i] = k
    return counts


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8: the weight of a choice when there is no tokenizer."""
    return len(text.encode("utf-8"))


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that sum to it exactly.

    Largest-remainder rounding; equal shares when every weight is zero.
    """
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
