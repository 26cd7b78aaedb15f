"""Budgets and the ledger that enforces them.

The accounting rule (DESIGN.md, contracts): tokens spent are the prompt tokens actually
prefilled (a prefix shared by n samples counts once) plus every generated token of every
call, the verifier's, judge's and planner's included. Before a call the ledger reserves
its worst case, ``prompt + max_tokens x n``; a call that would overshoot is shrunk or not
made, so a budget is never exceeded.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, field_validator

from ttc.backends.errors import BadInputError
from ttc.backends.types import Usage, UserInput

from .cost import Cost

__all__ = ["Budget", "Ledger", "Reservation", "Spend"]


class Budget(UserInput):
    """Limits on what a solve may spend. None means unlimited in that unit.

    Attributes:
        tokens: Prompt tokens prefilled plus tokens generated (the default unit).
        calls: Model calls, one per prompt sent (its n samples share the call).
        samples: Completions sampled.
        wall_seconds: Elapsed time since the ledger opened; checked before each call.
    """

    model_config = ConfigDict(frozen=True)

    tokens: int | None = None
    calls: int | None = None
    samples: int | None = None
    wall_seconds: float | None = None

    @field_validator("tokens", "calls", "samples", "wall_seconds")
    @classmethod
    def _positive(cls, v, info):
        if v is not None and v <= 0:
            raise BadInputError(f"budget {info.field_name} must be positive, got {v}")
        return v

    @property
    def unlimited(self) -> bool:
        return all(v is None for v in (self.tokens, self.calls, self.samples, self.wall_seconds))


@dataclass(frozen=True)
class Reservation:
    """Worst-case spend held for one call until it is settled."""

    id: int
    prompt_tokens: int
    max_tokens: int
    n: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens * self.n


class Spend(BaseModel):
    """What a ledger has charged so far."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    samples: int = 0
    flops: float | None = 0.0
    paper_flops: float | None = 0.0
    eflops: float | None = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Ledger:
    """Tracks spend against a Budget; thread-safe, so parallel branches share one.

    Args:
        budget: The limits.
        clock: Monotonic clock (injectable for tests).
    """

    def __init__(self, budget: Budget | None = None, clock=time.monotonic):
        self.budget = budget or Budget()
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._held: dict[int, Reservation] = {}
        self.spent = Spend()
        self.overdrawn = False

    # -------------------------------------------------------------- queries

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def remaining_tokens(self) -> int | None:
        """Tokens neither spent nor held by an open reservation (None: unlimited)."""
        with self._lock:
            return self._remaining_tokens()

    def _remaining_tokens(self) -> int | None:
        if self.budget.tokens is None:
            return None
        held = sum(r.tokens for r in self._held.values())
        return self.budget.tokens - self.spent.tokens - held

    @property
    def exhausted(self) -> bool:
        """True when not even a one-token call could be made."""
        return self.reserve(prompt_tokens=0, max_tokens=1, n=1, dry_run=True) is None

    # -------------------------------------------------------------- reserve / settle

    def reserve(
        self,
        prompt_tokens: int,
        max_tokens: int,
        n: int = 1,
        *,
        min_tokens: int | None = None,
        dry_run: bool = False,
    ) -> Reservation | None:
        """Holds the worst case of a call, shrinking it to fit; None if nothing fits.

        The sample count shrinks first (a truncated answer is usually worthless), then
        the per-sample token limit, but not below ``min_tokens`` (default: no shrinking
        of max_tokens at all).

        Args:
            prompt_tokens: Prompt tokens the call will prefill.
            max_tokens: Tokens per sample asked for.
            n: Samples asked for.
            min_tokens: Smallest acceptable per-sample limit.
            dry_run: Only answer whether it would fit; hold nothing.
        """
        if prompt_tokens < 0 or max_tokens < 1 or n < 1:
            raise BadInputError(
                f"a call needs prompt_tokens >= 0, max_tokens >= 1 and n >= 1, "
                f"got {prompt_tokens}, {max_tokens}, {n}"
            )
        min_tokens = max_tokens if min_tokens is None else max(1, min(min_tokens, max_tokens))
        with self._lock:
            b = self.budget
            if b.wall_seconds is not None and self.elapsed() >= b.wall_seconds:
                return None
            if b.calls is not None and self.spent.calls + self._held_calls() >= b.calls:
                return None
            if b.samples is not None:
                n = min(n, b.samples - self.spent.samples - sum(r.n for r in self._held.values()))
            left = self._remaining_tokens()
            if left is not None:
                room = left - prompt_tokens
                if room < min_tokens:
                    return None
                n = min(n, room // max_tokens) if room >= max_tokens else min(n, 1)
                if n >= 1:
                    max_tokens = min(max_tokens, room // n)
            if n < 1 or max_tokens < min_tokens:
                return None
            r = Reservation(next(self._ids), prompt_tokens, max_tokens, n)
            if not dry_run:
                self._held[r.id] = r
            return r

    def _held_calls(self) -> int:
        return len(self._held)

    def settle(self, reservation: Reservation | None, usage: Usage, samples: int, cost: Cost | None = None) -> None:
        """Releases a reservation and charges what the call actually spent.

        A backend that spent more than it was allowed (a remote server ignoring
        max_tokens) is still charged in full; ``overdrawn`` then records it.
        """
        with self._lock:
            if reservation is not None:
                self._held.pop(reservation.id, None)
            s = self.spent
            s.prompt_tokens += usage.prompt_tokens
            s.completion_tokens += usage.completion_tokens
            s.calls += usage.calls
            s.samples += samples
            if cost is not None:
                total = Cost(s.flops, s.paper_flops, s.eflops) + cost
                s.flops, s.paper_flops, s.eflops = total.flops, total.paper_flops, total.eflops
            if self.budget.tokens is not None and s.tokens > self.budget.tokens:
                self.overdrawn = True

    def release(self, reservation: Reservation) -> None:
        """Drops a reservation whose call was never made (or failed before spending)."""
        with self._lock:
            self._held.pop(reservation.id, None)
