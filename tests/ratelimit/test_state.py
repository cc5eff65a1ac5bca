"""ScopeState's burst-capacity learning, with plain numbers for time: one
odd header (a reset already past, an empty bucket, a reset rounded to
nothing) must not shrink a key's burst for good."""

from __future__ import annotations

import pytest

from llm_sync.ratelimit.state import MIN_BURST_SECONDS, Observation, ScopeState

T0 = 1000.0


def capacity(state: ScopeState, dimension: str = "requests") -> float:
    return state.buckets[dimension].capacity


def healthy(limit: float = 600, rate: float = 10.0) -> dict[str, Observation]:
    """One call used, full again after that call's refill."""
    return {"requests": Observation(limit=limit, remaining=limit - 1, reset_in=1 / rate)}


def test_an_empty_bucket_with_a_reset_already_past_does_not_shrink_the_burst() -> None:
    state = ScopeState({"requests": 600}, None, T0)  # capacity 600, 10/s
    state.sync({"requests": Observation(limit=600, remaining=0, reset_in=0.0)}, T0)
    assert capacity(state) == 600
    for t in (60, 600, 6000):
        state.sync(healthy(), T0 + t)
        assert capacity(state) == 600


def test_an_empty_bucket_says_nothing_about_the_burst() -> None:
    state = ScopeState({"requests": 600}, None, T0)
    state.sync({"requests": Observation(limit=600, remaining=0, reset_in=3.0)}, T0)
    assert capacity(state) == 600


def test_a_reset_of_about_nothing_does_not_shrink_the_burst() -> None:
    state = ScopeState({"requests": 600}, None, T0)
    state.sync({"requests": Observation(limit=600, remaining=5, reset_in=0.0)}, T0)
    assert capacity(state) == 600


def test_a_learned_burst_never_goes_below_the_floor() -> None:
    state = ScopeState({"requests": 600}, None, T0)  # 10/s
    # 1 left, full in 10 ms: taken at its word, a burst of 1.1 calls
    state.sync({"requests": Observation(limit=600, remaining=1, reset_in=0.01)}, T0)
    assert capacity(state) == pytest.approx(10.0 * MIN_BURST_SECONDS)


def test_the_floor_is_at_least_one_call() -> None:
    state = ScopeState({"requests": 6}, None, T0)  # 0.1/s: 2 s of refill is 0.2 calls
    state.sync({"requests": Observation(limit=6, remaining=0.5, reset_in=0.01)}, T0)
    assert capacity(state) == pytest.approx(1.0)


def test_a_two_second_burst_is_still_learned() -> None:
    state = ScopeState({"requests": 600}, None, T0)
    state.sync({"requests": Observation(limit=600, remaining=10, reset_in=1.0)}, T0)
    assert capacity(state) == pytest.approx(20.0)


def test_a_later_larger_reading_raises_the_burst_back_to_the_limit() -> None:
    state = ScopeState({"requests": 600}, None, T0)
    state.sync({"requests": Observation(limit=600, remaining=10, reset_in=1.0)}, T0)
    assert capacity(state) == pytest.approx(20.0)
    state.sync({"requests": Observation(limit=600, remaining=100, reset_in=2.0)}, T0 + 60)
    assert capacity(state) == pytest.approx(120.0)  # tracks the server, up as well as down
    state.sync(healthy(), T0 + 120)
    assert capacity(state) == pytest.approx(600.0)
    state.sync({"requests": Observation(limit=600, remaining=700, reset_in=100.0)}, T0 + 180)
    assert capacity(state) == pytest.approx(600.0)  # never above the limit


def test_a_reset_of_nothing_raises_the_burst_to_what_is_left() -> None:
    state = ScopeState({"requests": 600}, None, T0)
    state.sync({"requests": Observation(limit=600, remaining=10, reset_in=1.0)}, T0)
    state.sync({"requests": Observation(limit=600, remaining=599, reset_in=0.0)}, T0 + 60)
    assert capacity(state) == pytest.approx(599.0)


def test_a_raised_burst_never_exceeds_burst_seconds() -> None:
    state = ScopeState({"requests": 600}, 5.0, T0)  # capacity 50
    state.sync({"requests": Observation(limit=600, remaining=10, reset_in=1.0)}, T0)
    assert capacity(state) == pytest.approx(20.0)
    state.sync(healthy(), T0 + 60)
    assert capacity(state) == pytest.approx(50.0)


def test_after_a_bad_header_calls_burst_again() -> None:
    """The repro: after the bad header and a healthy one, ten calls go at once."""
    state = ScopeState({"requests": 600}, None, T0)
    state.sync({"requests": Observation(limit=600, remaining=0, reset_in=0.0)}, T0)
    state.sync(healthy(), T0 + 60)
    now = T0 + 120
    granted = [state.try_take({"requests": 1.0}, now, 0.0).granted for _ in range(10)]
    assert all(granted)
