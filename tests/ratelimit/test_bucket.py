"""TokenBucket arithmetic with plain numbers: no clock, no threads."""

from __future__ import annotations

import math

import pytest

from llm_sync.ratelimit.bucket import TokenBucket

T0 = 1000.0


def bucket(per_minute: float = 60.0, burst_seconds: float | None = None) -> TokenBucket:
    return TokenBucket(per_minute, T0, burst_seconds)


# --- construction and refill ------------------------------------------------
def test_new_bucket_is_full_with_capacity_of_the_per_minute_figure():
    b = bucket(120)
    assert b.limit == 120.0
    assert b.rate == pytest.approx(2.0)
    assert b.capacity == 120.0
    assert b.available(T0) == 120.0


def test_refills_at_limit_over_60_per_second():
    b = bucket(60)  # 1 per second
    b.take(60, T0)
    assert b.available(T0) == 0.0
    assert b.available(T0 + 0.5) == pytest.approx(0.5)
    assert b.available(T0 + 10) == pytest.approx(10.0)
    b2 = bucket(600)  # 10 per second
    b2.take(600, T0)
    assert b2.available(T0 + 2.5) == pytest.approx(25.0)


def test_refill_is_capped_at_capacity():
    b = bucket(60)
    b.take(5, T0)
    assert b.available(T0 + 3600) == 60.0


def test_clock_going_back_adds_nothing():
    b = bucket(60)
    b.take(30, T0)
    assert b.available(T0 - 10) == 30.0
    assert b.available(T0 + 1) == pytest.approx(31.0)


def test_burst_seconds_sets_capacity():
    b = bucket(600, burst_seconds=2)  # 10/s, 2 seconds' worth
    assert b.capacity == pytest.approx(20.0)
    assert b.available(T0) == pytest.approx(20.0)
    b.take(20, T0)
    assert b.available(T0 + 100) == pytest.approx(20.0)  # never above the burst
    assert b.limit == 600.0 and b.rate == pytest.approx(10.0)


# --- wait_time ----------------------------------------------------------------
def test_wait_time_zero_when_it_fits():
    b = bucket(60)
    assert b.wait_time(60, T0) == 0.0
    assert b.wait_time(1, T0) == 0.0


def test_wait_time_exact_seconds():
    b = bucket(60)  # 1/s
    b.take(55, T0)  # level 5
    assert b.wait_time(5, T0) == 0.0
    assert b.wait_time(8, T0) == pytest.approx(3.0)
    assert b.wait_time(8, T0 + 1) == pytest.approx(2.0)
    b2 = bucket(1200)  # 20/s
    b2.take(1200, T0)
    assert b2.wait_time(100, T0) == pytest.approx(5.0)


def test_wait_time_for_more_than_capacity_waits_for_full_not_forever():
    b = bucket(60, burst_seconds=10)  # capacity 10, 1/s
    b.take(4, T0)  # level 6
    assert b.wait_time(1000, T0) == pytest.approx(4.0)
    assert not math.isinf(b.wait_time(1000, T0))
    assert b.wait_time(1000, T0 + 4) == 0.0


def test_wait_time_when_rate_is_zero_is_infinite():
    b = bucket(60)
    b.take(60, T0)
    b.set_limit(0, T0)  # rate 0 (and capacity 0)
    b.set_capacity(10, T0)  # room, but nothing ever refills it
    assert b.rate == 0.0
    assert b.wait_time(5, T0) == math.inf
    assert b.wait_time(5, T0 + 1e6) == math.inf


def test_wait_time_does_not_charge():
    b = bucket(60)
    b.wait_time(30, T0)
    assert b.available(T0) == 60.0


# --- take / give --------------------------------------------------------------
def test_take_into_debt_and_repayment_time():
    b = bucket(60)  # 1/s
    b.take(100, T0)
    assert b.available(T0) == pytest.approx(-40.0)
    assert b.wait_time(1, T0) == pytest.approx(41.0)
    assert b.full_at(T0) == pytest.approx(100.0)
    assert b.available(T0 + 40) == pytest.approx(0.0)
    assert b.available(T0 + 100) == pytest.approx(60.0)


def test_take_refills_first():
    b = bucket(60)
    b.take(60, T0)
    b.take(5, T0 + 10)  # 10 refilled first
    assert b.available(T0 + 10) == pytest.approx(5.0)


def test_give_is_capped_at_capacity():
    b = bucket(60)
    b.take(10, T0)
    b.give(4, T0)
    assert b.available(T0) == pytest.approx(54.0)
    b.give(1000, T0)
    assert b.available(T0) == 60.0


def test_give_pays_debt():
    b = bucket(60)
    b.take(80, T0)  # -20
    b.give(30, T0)
    assert b.available(T0) == pytest.approx(10.0)


# --- lower_to -----------------------------------------------------------------
def test_lower_to_pulls_down():
    b = bucket(60)
    b.lower_to(12, T0)
    assert b.available(T0) == 12.0


def test_lower_to_never_raises():
    b = bucket(60)
    b.take(50, T0)  # 10
    b.lower_to(40, T0)
    assert b.available(T0) == pytest.approx(10.0)
    b.lower_to(-5, T0)
    assert b.available(T0) == pytest.approx(-5.0)  # may go into debt


def test_lower_to_refills_before_comparing():
    b = bucket(60)
    b.take(60, T0)  # 0 at T0
    b.lower_to(8, T0 + 5)  # 5 refilled: 5 < 8, stays 5
    assert b.available(T0 + 5) == pytest.approx(5.0)


# --- set_limit / set_capacity ---------------------------------------------------
def test_set_limit_changes_rate_and_capacity_keeping_the_free_share():
    b = bucket(60)
    b.take(30, T0)  # half full
    b.set_limit(120, T0)
    assert b.limit == 120.0
    assert b.rate == pytest.approx(2.0)
    assert b.capacity == 120.0
    assert b.available(T0) == pytest.approx(60.0)  # still half
    b.set_limit(30, T0)
    assert b.capacity == 30.0
    assert b.available(T0) == pytest.approx(15.0)


def test_set_limit_keeps_debt():
    b = bucket(60)
    b.take(70, T0)  # -10
    b.set_limit(120, T0)
    assert b.available(T0) == pytest.approx(-10.0)
    assert b.wait_time(1, T0) == pytest.approx(11 / 2.0)


def test_set_limit_with_burst_seconds():
    b = bucket(60)
    b.set_limit(600, T0, burst_seconds=3)
    assert b.capacity == pytest.approx(30.0)
    assert b.available(T0) == pytest.approx(30.0)  # full stays full, capped


def test_set_capacity_shrinks_and_restores():
    b = bucket(60)
    b.set_capacity(10, T0)
    assert b.capacity == 10.0
    assert b.available(T0) == 10.0
    assert b.limit == 60.0 and b.rate == pytest.approx(1.0)  # rate unchanged
    b.set_capacity(60, T0)
    assert b.capacity == 60.0
    assert b.available(T0) == 10.0  # restoring capacity gives nothing back
    assert b.available(T0 + 50) == pytest.approx(60.0)
    b.set_capacity(-3, T0)
    assert b.capacity == 0.0


# --- full_at ------------------------------------------------------------------
def test_full_at():
    b = bucket(60)
    assert b.full_at(T0) == 0.0
    b.take(15, T0)
    assert b.full_at(T0) == pytest.approx(15.0)
    assert b.full_at(T0 + 5) == pytest.approx(10.0)
    assert b.full_at(T0 + 20) == 0.0
    b2 = bucket(600, burst_seconds=1)  # capacity 10, 10/s
    b2.take(10, T0)
    assert b2.full_at(T0) == pytest.approx(1.0)
