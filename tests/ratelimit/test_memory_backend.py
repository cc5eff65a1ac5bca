"""MemoryBackend with plain numbers and a hand-driven clock: declare, quote,
acquire, adjust, header sync, pause, snapshot; and under real threads,
that concurrent acquires never admit more than a bucket holds."""

from __future__ import annotations

import math
import threading

import pytest

from llm_sync.ratelimit.backends import MemoryBackend, RateLimitBackend
from llm_sync.ratelimit.state import NO_WAIT, Observation

T0 = 1000.0


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def one(**amounts: float) -> dict[str, float]:
    """Amounts by dimension; the rest zero."""
    return {"requests": 0.0, "input_tokens": 0.0, "output_tokens": 0.0, "tokens": 0.0, **amounts}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> MemoryBackend:
    b = MemoryBackend(clock)
    b.declare("s", {"requests": 60, "input_tokens": 600}, None)  # 1/s and 10/s
    return b


def test_is_a_backend_and_has_a_repr(backend: MemoryBackend) -> None:
    assert isinstance(backend, RateLimitBackend)
    assert repr(backend) == "<MemoryBackend 1 scopes>"


def test_an_undeclared_scope_is_an_error(backend: MemoryBackend) -> None:
    with pytest.raises(KeyError, match="never declared"):
        backend.quote("nope", one(requests=1), 0.0)


def test_declare_is_idempotent_and_the_first_declaration_wins(backend: MemoryBackend) -> None:
    backend.acquire("s", one(requests=10), 0.0)
    backend.declare("s", {"requests": 6}, None)
    view = backend.snapshot("s").buckets["requests"]
    assert (view.limit, view.level) == (60, 50)


def test_a_scope_without_limits_admits_everything(backend: MemoryBackend) -> None:
    backend.declare("free", {}, None)
    quote = backend.acquire("free", one(requests=1, input_tokens=10**9), 0.0)
    assert quote.granted and quote.wait == 0 and quote.headroom == 1.0
    assert backend.snapshot("free").buckets == {}


# --- take, wait, give ---------------------------------------------------------
def test_acquire_takes_when_it_fits(backend: MemoryBackend) -> None:
    quote = backend.acquire("s", one(requests=1, input_tokens=100), 0.0)
    assert quote.granted and quote.oversize is None
    assert quote.headroom == pytest.approx(500 / 600)
    levels = {d: v.level for d, v in backend.snapshot("s").buckets.items()}
    assert levels == {"requests": 59, "input_tokens": 500}


def test_acquire_refuses_and_says_how_long_to_wait(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.acquire("s", one(input_tokens=550), 0.0)
    quote = backend.acquire("s", one(input_tokens=100), 0.0)
    assert not quote.granted
    assert quote.wait == pytest.approx(5.0)  # 50 missing at 10/s
    assert backend.snapshot("s").buckets["input_tokens"].level == 50  # nothing taken
    clock.t += 5.0
    assert backend.acquire("s", one(input_tokens=100), 0.0).granted


def test_quote_changes_nothing(backend: MemoryBackend) -> None:
    for _ in range(3):
        assert backend.quote("s", one(requests=1, input_tokens=600), 0.0).wait == 0
    assert backend.snapshot("s").buckets["input_tokens"].level == 600


def test_quote_many_answers_in_order(backend: MemoryBackend) -> None:
    backend.declare("t", {"requests": 6}, None)  # 0.1/s
    backend.acquire("t", one(requests=6), 0.0)
    quotes = backend.quote_many([("s", one(requests=1)), ("t", one(requests=1))], 0.0)
    assert [q.wait for q in quotes] == [0.0, pytest.approx(10.0)]


def test_margin_needs_that_much_refill_to_spare(backend: MemoryBackend) -> None:
    backend.acquire("s", one(requests=59), 0.0)  # 1 left at 1/s
    quote = backend.acquire("s", one(requests=1), 0.5)
    assert not quote.granted and quote.wait == pytest.approx(0.5)
    assert backend.acquire("s", one(requests=1), 0.0).granted


def test_oversize_is_named_and_never_granted(backend: MemoryBackend) -> None:
    quote = backend.acquire("s", one(requests=1, input_tokens=601), 0.0)
    assert not quote.granted
    assert quote.oversize == "input tokens (601 > 600)"


def test_burst_seconds_set_capacity_and_oversize(clock: FakeClock) -> None:
    backend = MemoryBackend(clock)
    backend.declare("b", {"input_tokens": 600}, 10.0)  # capacity 100
    assert backend.quote("b", one(input_tokens=101), 0.0).oversize == "input tokens (101 > 100)"
    assert backend.acquire("b", one(input_tokens=100), 0.0).granted


def test_adjust_charges_into_debt_and_gives_back_up_to_capacity(backend: MemoryBackend,
                                                                 clock: FakeClock) -> None:
    backend.adjust("s", {"input_tokens": 700, "requests": -5})
    buckets = backend.snapshot("s").buckets
    assert buckets["input_tokens"].level == pytest.approx(-100)
    assert buckets["input_tokens"].full_in == pytest.approx(70.0)
    assert buckets["requests"].level == 60  # never above capacity
    assert backend.quote("s", one(input_tokens=1), 0.0).wait == pytest.approx(10.1)
    backend.adjust("s", {"input_tokens": -300, "tokens": 5})  # no tokens bucket: ignored
    assert backend.snapshot("s").buckets["input_tokens"].level == pytest.approx(200)


# --- headers ----------------------------------------------------------------------
def test_sync_lowers_to_remaining_plus_refill_since_less_offset(backend: MemoryBackend) -> None:
    backend.sync("s", {"requests": Observation(limit=60, remaining=10, since=2.0, offset=1.0)})
    assert backend.snapshot("s").buckets["requests"].level == pytest.approx(11.0)  # 10 + 2 - 1


def test_sync_never_raises_a_level(backend: MemoryBackend) -> None:
    backend.acquire("s", one(requests=50), 0.0)
    backend.sync("s", {"requests": Observation(limit=60, remaining=59)})
    assert backend.snapshot("s").buckets["requests"].level == 10


def test_sync_lowers_but_never_raises_a_configured_limit(backend: MemoryBackend) -> None:
    backend.sync("s", {"requests": Observation(limit=120, remaining=119)})
    assert backend.snapshot("s").buckets["requests"].limit == 60
    backend.sync("s", {"requests": Observation(limit=30, remaining=29)})
    view = backend.snapshot("s").buckets["requests"]
    assert (view.limit, view.capacity, view.rate, view.configured) == (30, 30, 0.5, True)


def test_sync_learns_and_follows_an_unconfigured_limit(backend: MemoryBackend) -> None:
    backend.sync("s", {"output_tokens": Observation(limit=8000, remaining=7000)})
    view = backend.snapshot("s").buckets["output_tokens"]
    assert (view.limit, view.level, view.configured) == (8000, 7000, False)
    backend.sync("s", {"output_tokens": Observation(limit=16000)})
    assert backend.snapshot("s").buckets["output_tokens"].limit == 16000


def test_sync_without_a_limit_creates_nothing(backend: MemoryBackend) -> None:
    backend.sync("s", {"tokens": Observation(remaining=5)})
    assert "tokens" not in backend.snapshot("s").buckets


def test_sync_learns_a_smaller_burst_from_the_reset_time(backend: MemoryBackend) -> None:
    backend.sync("s", {"requests": Observation(limit=60, remaining=5, reset_in=5.0)})
    view = backend.snapshot("s").buckets["requests"]
    assert view.capacity == pytest.approx(10.0) and view.level == pytest.approx(5.0)
    backend.sync("s", {"requests": Observation(limit=60, remaining=5, reset_in=4.9)})  # within 3 %
    assert backend.snapshot("s").buckets["requests"].capacity == pytest.approx(10.0)


# --- pause and snapshot -------------------------------------------------------------
def test_pause_holds_the_scope_and_never_shortens(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.pause("s", 5.0)
    backend.pause("s", 1.0)
    assert backend.snapshot("s").paused_for == 5.0
    quote = backend.acquire("s", one(requests=1), 0.0)
    assert not quote.granted and quote.wait == 5.0
    clock.t += 5.0
    assert backend.snapshot("s").paused_for == 0.0
    assert backend.acquire("s", one(requests=1), 0.0).granted


def test_negative_pause_is_no_pause(backend: MemoryBackend) -> None:
    backend.pause("s", -3.0)
    assert backend.snapshot("s").paused_for == 0.0


def test_snapshot_refills_with_the_clock(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.acquire("s", one(requests=30, input_tokens=600), 0.0)
    clock.t += 10.0
    buckets = backend.snapshot("s").buckets
    assert buckets["requests"].level == pytest.approx(40.0)
    assert buckets["input_tokens"].level == pytest.approx(100.0)
    assert buckets["requests"].full_in == pytest.approx(20.0)
    assert buckets["input_tokens"].full_in == pytest.approx(50.0)


def test_deep_debt_gives_a_finite_wait(clock: FakeClock) -> None:
    backend = MemoryBackend(clock)
    backend.declare("z", {"requests": 60}, None)
    backend.adjust("z", {"requests": 160})
    assert backend.quote("z", one(requests=1), 0.0).wait > NO_WAIT
    assert math.isfinite(backend.quote("z", one(requests=1), 0.0).wait)


def test_after_fork_keeps_the_state_with_a_fresh_lock(backend: MemoryBackend) -> None:
    backend.acquire("s", one(requests=1), 0.0)
    backend._lock.acquire()  # a parent thread held it at the fork
    backend.after_fork()
    assert backend.snapshot("s").buckets["requests"].level == 59


# --- threads ---------------------------------------------------------------------------
def test_concurrent_acquires_never_over_admit(clock: FakeClock) -> None:
    """A frozen clock, 100 requests in the bucket, 16 threads racing to take
    3 at a time: exactly 33 takes succeed and the level never goes below 0."""
    backend = MemoryBackend(clock)
    backend.declare("s", {"requests": 100, "input_tokens": 10_000}, None)
    granted = []
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        mine = 0
        for _ in range(50):
            if backend.acquire("s", one(requests=3, input_tokens=7), 0.0).granted:
                mine += 1
        granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sum(granted) == 33
    buckets = backend.snapshot("s").buckets
    assert buckets["requests"].level == pytest.approx(1.0)
    assert buckets["input_tokens"].level == pytest.approx(10_000 - 33 * 7)


def test_concurrent_mixed_operations_keep_the_books(clock: FakeClock) -> None:
    """Takes and give-backs from many threads: every granted take given back
    leaves the bucket exactly full."""
    backend = MemoryBackend(clock)
    backend.declare("s", {"input_tokens": 1000}, None)

    def worker() -> None:
        for _ in range(200):
            if backend.acquire("s", one(input_tokens=10), 0.0).granted:
                backend.snapshot("s")
                backend.adjust("s", {"input_tokens": -10})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert backend.snapshot("s").buckets["input_tokens"].level == pytest.approx(1000)
