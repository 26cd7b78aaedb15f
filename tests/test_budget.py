"""Budget and Ledger: worst-case reservations, settling, limits in every unit, threads."""

from __future__ import annotations

import random
import threading

import pytest

from ttc.backends.errors import BadInputError
from ttc.backends.types import Usage
from ttc.core.budget import Budget, Ledger, Reservation
from ttc.core.cost import Cost


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- Budget


@pytest.mark.parametrize("field", ["tokens", "calls", "samples", "wall_seconds"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limits_are_bad_input(field, value):
    with pytest.raises(BadInputError) as e:
        Budget(**{field: value})
    assert e.value.exit_code == 2


def test_budget_defaults_unlimited_and_frozen():
    assert Budget().unlimited
    b = Budget(tokens=10)
    assert not b.unlimited
    with pytest.raises(Exception):
        b.tokens = 5  # type: ignore[misc]


def test_unlimited_ledger_never_shrinks():
    led = Ledger()
    r = led.reserve(10**6, 10**6, 1000)
    assert (r.prompt_tokens, r.max_tokens, r.n) == (10**6, 10**6, 1000)
    assert led.remaining_tokens() is None
    assert not led.exhausted


# ---------------------------------------------------------------- reserve


def test_reservation_fits_unchanged():
    led = Ledger(Budget(tokens=100))
    r = led.reserve(10, 20, 4)
    assert (r.n, r.max_tokens, r.tokens) == (4, 20, 90)
    assert led.remaining_tokens() == 10


def test_reservation_shrinks_n_first():
    led = Ledger(Budget(tokens=100))
    r = led.reserve(10, 20, 8)  # room 90: 4 samples of 20
    assert (r.n, r.max_tokens) == (4, 20)
    assert r.tokens <= 100


def test_reservation_does_not_shrink_max_tokens_by_default():
    led = Ledger(Budget(tokens=100))
    assert led.reserve(10, 200, 1) is None
    assert led.reserve(90, 11, 1) is None
    assert led.reserve(90, 10, 1).tokens == 100


def test_reservation_shrinks_max_tokens_down_to_min_tokens():
    led = Ledger(Budget(tokens=100))
    r = led.reserve(10, 200, 4, min_tokens=50)
    assert (r.n, r.max_tokens) == (1, 90)
    led2 = Ledger(Budget(tokens=100))
    assert led2.reserve(60, 200, 4, min_tokens=50) is None  # room 40 < 50
    r = led2.reserve(60, 200, 4, min_tokens=40)
    assert (r.n, r.max_tokens) == (1, 40)


def test_min_tokens_above_max_tokens_means_no_shrinking():
    led = Ledger(Budget(tokens=100))
    r = led.reserve(10, 20, 1, min_tokens=500)
    assert r.max_tokens == 20


def test_held_reservations_count_against_later_ones():
    led = Ledger(Budget(tokens=100))
    a = led.reserve(10, 30, 2)
    assert a.tokens == 70
    assert led.remaining_tokens() == 30
    assert led.reserve(10, 30, 1) is None
    b = led.reserve(10, 30, 1, min_tokens=5)
    assert b.max_tokens == 20 and b.tokens == 30
    assert led.remaining_tokens() == 0
    assert led.exhausted
    assert led.spent.tokens == 0


def test_dry_run_holds_nothing():
    led = Ledger(Budget(tokens=50))
    r = led.reserve(10, 40, 1, dry_run=True)
    assert r is not None and r.tokens == 50
    assert led.remaining_tokens() == 50
    assert led.reserve(10, 40, 1) is not None


def test_settle_charges_actual_usage_and_releases_hold():
    led = Ledger(Budget(tokens=100))
    r = led.reserve(10, 20, 4)
    led.settle(r, Usage(prompt_tokens=10, completion_tokens=33, calls=1), samples=4)
    s = led.spent
    assert (s.prompt_tokens, s.completion_tokens, s.tokens, s.calls, s.samples) == (10, 33, 43, 1, 4)
    assert led.remaining_tokens() == 57
    assert not led.overdrawn
    # Settling twice does not release twice; charging without a reservation works.
    led.settle(r, Usage(prompt_tokens=0, completion_tokens=7, calls=1), samples=1)
    led.settle(None, Usage(prompt_tokens=5, completion_tokens=5, calls=1), samples=0)
    assert led.remaining_tokens() == 40
    assert led.spent.calls == 3


def test_settle_records_overdraft():
    led = Ledger(Budget(tokens=10))
    r = led.reserve(2, 8, 1)
    led.settle(r, Usage(prompt_tokens=2, completion_tokens=20, calls=1), samples=1)
    assert led.overdrawn
    assert led.spent.tokens == 22
    assert led.remaining_tokens() == -12
    assert led.exhausted


def test_settle_sums_cost_and_none_poisons():
    led = Ledger()
    led.settle(None, Usage(calls=1), samples=1, cost=Cost(1.0, 2.0, 3.0))
    led.settle(None, Usage(calls=1), samples=1, cost=Cost(10.0, 20.0, 30.0))
    assert (led.spent.flops, led.spent.paper_flops, led.spent.eflops) == (11.0, 22.0, 33.0)
    led.settle(None, Usage(calls=1), samples=1)  # no cost given: unchanged
    assert led.spent.flops == 11.0
    led.settle(None, Usage(calls=1), samples=1, cost=Cost(1.0, None, 1.0))
    assert (led.spent.flops, led.spent.paper_flops, led.spent.eflops) == (12.0, None, 34.0)


def test_release_frees_the_hold():
    led = Ledger(Budget(tokens=100))
    r = led.reserve(10, 90, 1)
    assert led.exhausted
    led.release(r)
    assert led.remaining_tokens() == 100
    led.release(r)  # twice is harmless
    assert led.spent.tokens == 0 and led.spent.calls == 0
    assert led.reserve(10, 90, 1) is not None


def test_reservation_ids_are_unique():
    led = Ledger()
    ids = {led.reserve(1, 1).id for _ in range(50)}
    assert len(ids) == 50
    assert isinstance(led.reserve(1, 1), Reservation)


# ---------------------------------------------------------------- other units


def test_calls_limit_counts_held_and_spent():
    led = Ledger(Budget(calls=2))
    a = led.reserve(1, 1)
    b = led.reserve(1, 1)
    assert a and b
    assert led.reserve(1, 1) is None
    assert led.exhausted
    led.release(b)
    led.settle(a, Usage(prompt_tokens=1, completion_tokens=1, calls=1), samples=1)
    c = led.reserve(1, 1)
    assert c is not None
    led.settle(c, Usage(prompt_tokens=1, completion_tokens=1, calls=1), samples=1)
    assert led.reserve(1, 1) is None
    assert led.exhausted


def test_samples_limit_shrinks_n():
    led = Ledger(Budget(samples=5))
    a = led.reserve(1, 10, 3)
    assert a.n == 3
    b = led.reserve(1, 10, 4)
    assert b.n == 2  # 3 held
    assert led.reserve(1, 10, 1) is None
    led.settle(a, Usage(calls=1), samples=3)
    led.release(b)
    c = led.reserve(1, 10, 9)
    assert c.n == 2
    assert led.spent.samples == 3


def test_samples_and_tokens_together():
    led = Ledger(Budget(samples=3, tokens=1000))
    r = led.reserve(10, 10, 8)
    assert (r.n, r.max_tokens) == (3, 10)


def test_wall_seconds_with_a_fake_clock():
    clock = FakeClock()
    led = Ledger(Budget(wall_seconds=5.0), clock=clock)
    assert led.elapsed() == 0
    assert led.reserve(1, 1) is not None
    clock.t += 4.9
    assert led.elapsed() == pytest.approx(4.9)
    assert not led.exhausted
    clock.t += 0.1
    assert led.reserve(1, 1) is None
    assert led.exhausted


def test_exhausted_on_tokens():
    led = Ledger(Budget(tokens=3))
    assert not led.exhausted
    r = led.reserve(1, 1, 2)
    led.settle(r, Usage(prompt_tokens=1, completion_tokens=2, calls=1), samples=2)
    assert led.spent.tokens == 3
    assert led.exhausted
    assert led.reserve(0, 1) is None


# ---------------------------------------------------------------- threads


def test_many_threads_never_exceed_the_budget():
    budget = Budget(tokens=5000, calls=300)
    led = Ledger(budget)
    errors: list[str] = []
    start = threading.Barrier(16)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(200):
            r = led.reserve(rng.randint(1, 30), rng.randint(1, 40), rng.randint(1, 4), min_tokens=rng.randint(1, 10))
            if r is None:
                continue
            with led._lock:  # a consistent view: spent plus held never passes the limit
                held = sum(h.tokens for h in led._held.values())
                if led.spent.tokens + held > budget.tokens:
                    errors.append(f"held {held} + spent {led.spent.tokens}")
            # Spend at most the reservation, sometimes less, sometimes give it back.
            if rng.random() < 0.2:
                led.release(r)
            else:
                gen = sum(rng.randint(0, r.max_tokens) for _ in range(r.n))
                led.settle(r, Usage(prompt_tokens=r.prompt_tokens, completion_tokens=gen, calls=1), samples=r.n)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert led.spent.tokens <= budget.tokens
    assert led.spent.calls <= budget.calls
    assert not led.overdrawn
    assert led.remaining_tokens() == budget.tokens - led.spent.tokens  # nothing left held


def test_malformed_limit_is_bad_input():
    with pytest.raises(BadInputError, match="tokens"):
        Budget(tokens="lots")
    assert Budget(tokens=5, calls=2, samples=3, wall_seconds=1.5).tokens == 5


@pytest.mark.parametrize("args", [(10, 0, 1), (10, 5, 0), (-1, 5, 1)])
def test_impossible_call_shapes_are_bad_input(args):
    for led in (Ledger(), Ledger(Budget(tokens=100))):
        with pytest.raises(BadInputError):
            led.reserve(*args)
        assert led.remaining_tokens() in (None, 100)
