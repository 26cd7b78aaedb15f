"""Budgets and the ledger that enforces them.

The accounting rule (DESIGN.md, contracts): tokens spent are the prompt tokens actually
prefilled (a prefix shared by n samples counts once) plus every generated token of every
call, the verifier's, judge's and planner's included. Before a call the ledger reserves
its worst case, ``prompt + max_tokens x n`` (or ``prompt + pool`` where the backend
enforces a pooled cap for all samples of the call); a call that would overshoot is
shrunk or not made, so a budget is never exceeded.

``ledger.child(budget)`` gives a stage its own limits: every reservation in a child is
also held in its parent, and every charge lands in both, so neither is exceeded.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, replace

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
    pool: int | None = None  # pooled cap on all n samples' tokens, when the backend enforces one
    parent: "Reservation | None" = None  # the same call held in the parent ledger

    @property
    def tokens(self) -> int:
        gen = self.max_tokens * self.n
        return self.prompt_tokens + (gen if self.pool is None else min(self.pool, gen))


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

    def __init__(self, budget: Budget | None = None, clock=time.monotonic, *, parent: "Ledger | None" = None):
        self.budget = budget or Budget()
        self.parent = parent
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._held: dict[int, Reservation] = {}
        self.spent = Spend()
        self.overdrawn = False

    def child(self, budget: Budget | None = None) -> "Ledger":
        """A ledger for one stage: its own limits, every charge also landing here.

        The child's wall clock starts now. What the child may spend is the smaller of its
        own budget and what this ledger has left, so neither is ever exceeded.
        """
        return Ledger(budget, self._clock, parent=self)

    # -------------------------------------------------------------- queries

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def remaining_tokens(self) -> int | None:
        """Tokens neither spent nor held by an open reservation (None: unlimited)."""
        with self._lock:
            return self._remaining_tokens()

    def _own_remaining_tokens(self) -> int | None:
        if self.budget.tokens is None:
            return None
        return self.budget.tokens - self.spent.tokens - sum(r.tokens for r in self._held.values())

    def _remaining_tokens(self) -> int | None:
        own = None
        if self.budget.tokens is not None:
            held = sum(r.tokens for r in self._held.values())
            own = self.budget.tokens - self.spent.tokens - held
        up = self.parent.remaining_tokens() if self.parent is not None else None
        if own is None or up is None:
            return own if up is None else up
        return min(own, up)

    @property
    def unlimited(self) -> bool:
        """True when neither this ledger nor any parent sets a limit."""
        return self.budget.unlimited and (self.parent is None or self.parent.unlimited)

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
        pool: int | None = None,
        dry_run: bool = False,
    ) -> Reservation | None:
        """Holds the worst case of a call, shrinking it to fit; None if nothing fits.

        The sample count shrinks first (a truncated answer is usually worthless), then
        the per-sample token limit, but not below ``min_tokens`` (default: no shrinking
        of max_tokens at all). With ``pool`` (a backend-enforced cap on the tokens all
        samples generate together) the pool shrinks to what is left instead, and ``n``
        stays the most samples the call may draw.

        Args:
            prompt_tokens: Prompt tokens the call will prefill.
            max_tokens: Tokens per sample asked for.
            n: Samples asked for.
            min_tokens: Smallest acceptable per-sample limit (with ``pool``: smallest pool).
            pool: Pooled token cap of the call, if the backend enforces one.
            dry_run: Only answer whether it would fit; hold nothing.
        """
        if prompt_tokens < 0 or max_tokens < 1 or n < 1 or (pool is not None and pool < 1):
            raise BadInputError(
                f"a call needs prompt_tokens >= 0, max_tokens >= 1, n >= 1 and pool >= 1, "
                f"got {prompt_tokens}, {max_tokens}, {n}, {pool}"
            )
        min_tokens = max_tokens if min_tokens is None else max(1, min(min_tokens, max_tokens))
        r = self._reserve_here(prompt_tokens, max_tokens, n, min_tokens, pool, dry_run)
        if r is None or self.parent is None:
            return r
        # The parent holds the same call, shrunk further if it has less left.
        up = self.parent.reserve(prompt_tokens, r.max_tokens, r.n, min_tokens=min(min_tokens, r.max_tokens),
                                 pool=r.pool, dry_run=dry_run)
        with self._lock:
            if up is None:
                self._held.pop(r.id, None)
                return None
            r = replace(r, max_tokens=up.max_tokens, n=up.n, pool=up.pool, parent=up)
            if not dry_run:
                self._held[r.id] = r
        return r

    def _reserve_here(self, prompt_tokens: int, max_tokens: int, n: int, min_tokens: int, pool: int | None,
                      dry_run: bool) -> Reservation | None:
        with self._lock:
            b = self.budget
            if b.wall_seconds is not None and self.elapsed() >= b.wall_seconds:
                return None
            if b.calls is not None and self.spent.calls + self._held_calls() >= b.calls:
                return None
            if b.samples is not None:
                n = min(n, b.samples - self.spent.samples - sum(r.n for r in self._held.values()))
            left = self._own_remaining_tokens()
            if pool is not None:
                pool = min(pool, max_tokens * n)
                if left is not None:
                    pool = min(pool, left - prompt_tokens)
                    if pool < min_tokens:
                        return None
                max_tokens = min(max_tokens, pool)
            elif left is not None:
                room = left - prompt_tokens
                if room < min_tokens:
                    return None
                n = min(n, room // max_tokens) if room >= max_tokens else min(n, 1)
                if n >= 1:
                    max_tokens = min(max_tokens, room // n)
            if n < 1 or max_tokens < min_tokens:
                return None
            r = Reservation(next(self._ids), prompt_tokens, max_tokens, n, pool)
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
        if self.parent is not None:
            self.parent.settle(reservation.parent if reservation is not None else None, usage, samples, cost)
            self.overdrawn = self.overdrawn or self.parent.overdrawn

    def release(self, reservation: Reservation) -> None:
        """Drops a reservation whose call was never made (or failed before spending)."""
        with self._lock:
            self._held.pop(reservation.id, None)
        if self.parent is not None and reservation.parent is not None:
            self.parent.release(reservation.parent)
