"""ProviderLimiter with a hand-driven clock: admission, settlement,
calibration, waiting, key choice, pauses, probing, header sync, status and
first-come-first-served order across threads. No real sleeping except the
short condition waits of the threaded FIFO tests."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Callable, Optional

import pytest

from llm_sync.config import RateLimitConfig
from llm_sync.errors import LLMRateLimitError, LLMValidationError
from llm_sync.ratelimit.limiter import PROBE_IN_FLIGHT, Cost, ProviderLimiter

T0 = 1000.0
WALL0 = 1_772_366_400.0  # 2026-03-01T12:00:00Z, a whole second


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Harness:
    """A limiter whose blocking wait advances the fake clock by ``timeout``."""

    def __init__(self, configs: list[Optional[RateLimitConfig]], *, refunds_output: bool = True,
                 answered: bool = True) -> None:
        self.clock = FakeClock()
        self.waits: list[float] = []
        self.limiter = ProviderLimiter(
            [(f"k{i}", cfg) for i, cfg in enumerate(configs)],
            refunds_output=refunds_output,
            clock=self.clock,
            wall_clock=lambda: WALL0 + (self.clock.t - T0),
            wait=self._wait,
            transit_margin=0.0,  # exact bucket maths; the margin has its own test
        )
        if answered:  # skip the probing phase unless a test is about it
            for key in self.limiter.keys:
                key.answered = True

    def _wait(self, cond: threading.Condition, timeout: Optional[float]) -> None:
        if timeout is None:
            raise AssertionError("a single-threaded reserve would block forever")
        self.waits.append(timeout)
        # A float wait of ~1e-14 s would not move a clock near 1000 at all
        # (its ulp is ~1e-13): move at least a microsecond, as real time does.
        self.clock.advance(max(timeout, 1e-6))

    def key(self, index: int = 0):
        return self.limiter.keys[index]

    def buckets(self, index: int = 0):
        """The key's buckets as its backend holds them now."""
        return self.limiter.backend.snapshot(self.key(index).scope).buckets

    def level(self, dimension: str, index: int = 0) -> float:
        return self.buckets(index)[dimension].level

    def reserve(self, input_tokens: int, output_tokens: int = 1, deadline: Optional[float] = None, only=None):
        return self.limiter.reserve(Cost(input_tokens, output_tokens), deadline, only=only)

    def call(self, input_tokens: int, output_tokens: int = 1, actual_in: Optional[int] = None,
             actual_out: Optional[int] = None, headers=None):
        """reserve → mark_sent → settle, as a successful call does."""
        reservation = self.reserve(input_tokens, output_tokens)
        self.limiter.mark_sent(reservation)
        self.limiter.settle(reservation, actual_in, actual_out, headers)
        return reservation


def cfg(**kwargs) -> RateLimitConfig:
    return RateLimitConfig(**kwargs)


FULL = dict(requests_per_minute=60, input_tokens_per_minute=6000, output_tokens_per_minute=3000)


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reservation charges -------------------------------------------------------
def test_reserve_charges_request_estimate_and_max_tokens():
    h = Harness([cfg(**FULL)])
    r = h.reserve(100, 50)
    assert r.amounts == {"requests": 1.0, "input_tokens": 100, "output_tokens": 50.0, "tokens": 150}
    assert r.key is h.key(0) and r.estimate == 100 and r.sent_at is None
    assert h.level("requests") == 59
    assert h.level("input_tokens") == 5900
    assert h.level("output_tokens") == 2950
    assert "tokens" not in h.buckets()  # not configured
    assert h.waits == []
    assert h.key().unsent["requests"] == 1 and h.key().unsent_calls == 1


def test_openai_tokens_bucket_is_charged_input_plus_max_tokens():
    h = Harness([cfg(requests_per_minute=60, tokens_per_minute=10_000)], refunds_output=False)
    h.reserve(100, 50)
    assert h.level("tokens") == 9850
    assert h.level("requests") == 59


def test_input_estimate_is_at_least_one_token():
    h = Harness([cfg(input_tokens_per_minute=6000)])
    assert h.reserve(0, 5).amounts["input_tokens"] == 1


def test_mark_sent_moves_the_call_from_unsent_to_in_flight():
    h = Harness([cfg(**FULL)])
    r = h.reserve(100, 50)
    h.limiter.mark_sent(r)
    key = h.key()
    assert key.unsent == dict.fromkeys(key.unsent, 0.0)
    assert key.in_flight == 1 and r.sent_at == T0
    h.limiter.settle(r, 100, 50)
    assert key.in_flight == 0


# --- settlement --------------------------------------------------------------
def test_settle_refunds_the_unused_difference():
    h = Harness([cfg(**FULL)])
    h.call(100, 50, actual_in=80, actual_out=10)
    assert h.level("requests") == 59
    assert h.level("input_tokens") == 5920
    assert h.level("output_tokens") == 2990


def test_settle_charges_the_extra_difference():
    h = Harness([cfg(**FULL)])
    h.call(100, 50, actual_in=150, actual_out=50)
    assert h.level("input_tokens") == 5850
    assert h.level("output_tokens") == 2950


def test_settle_can_charge_into_debt():
    h = Harness([cfg(input_tokens_per_minute=600)])  # 10/s
    h.call(100, 1, actual_in=700)
    assert h.level("input_tokens") == pytest.approx(-100)
    assert h.limiter.backend.quote(h.key().scope, {"requests": 1, "input_tokens": 1, "output_tokens": 1,
                                                   "tokens": 2}, margin=0.0).wait == pytest.approx(10.1)


def test_openai_settle_keeps_max_tokens_in_the_combined_bucket():
    h = Harness([cfg(tokens_per_minute=10_000)], refunds_output=False)
    h.call(100, 50, actual_in=80, actual_out=10)
    assert h.level("tokens") == 10_000 - 80 - 50  # input corrected, output stays max_tokens


def test_anthropic_settle_refunds_output_in_a_configured_combined_bucket():
    h = Harness([cfg(tokens_per_minute=10_000)], refunds_output=True)
    h.call(100, 50, actual_in=80, actual_out=10)
    assert h.level("tokens") == 10_000 - 80 - 10


def test_settle_without_usage_keeps_the_estimate():
    h = Harness([cfg(**FULL)])
    h.call(100, 50, actual_in=None, actual_out=None)
    assert h.level("input_tokens") == 5900
    assert h.level("output_tokens") == 2950
    assert h.key().calibration == 1.0


def test_settle_twice_is_a_no_op():
    h = Harness([cfg(**FULL)])
    r = h.call(100, 50, actual_in=10, actual_out=10)
    h.limiter.settle(r, 10, 10)
    h.limiter.refund(r)
    assert h.level("input_tokens") == 5990
    assert h.level("requests") == 59
    assert h.key().in_flight == 0


def test_refund_when_never_sent_gives_everything_back():
    h = Harness([cfg(**FULL)])
    r = h.reserve(100, 50)
    h.limiter.refund(r)
    assert (h.level("requests"), h.level("input_tokens"), h.level("output_tokens")) == (60, 6000, 3000)
    assert h.key().unsent == dict.fromkeys(h.key().unsent, 0.0)
    assert h.key().in_flight == 0


def test_refund_after_send_gives_everything_back_and_ends_the_flight():
    h = Harness([cfg(**FULL)])
    r = h.reserve(100, 50)
    h.limiter.mark_sent(r)
    h.limiter.refund(r)
    assert (h.level("requests"), h.level("input_tokens"), h.level("output_tokens")) == (60, 6000, 3000)
    assert h.key().in_flight == 0
    assert h.key().unsent == dict.fromkeys(h.key().unsent, 0.0)


def test_refund_keep_request_keeps_only_the_request():
    h = Harness([cfg(**FULL)])
    r = h.reserve(100, 50)
    h.limiter.mark_sent(r)
    h.limiter.refund(r, keep_request=True)
    assert h.level("requests") == 59
    assert h.level("input_tokens") == 6000
    assert h.level("output_tokens") == 3000


def test_release_keeps_the_charges():
    h = Harness([cfg(**FULL)])
    r = h.reserve(100, 50)
    h.limiter.mark_sent(r)
    h.limiter.release(r)
    assert (h.level("requests"), h.level("input_tokens"), h.level("output_tokens")) == (59, 5900, 2950)
    assert h.key().in_flight == 0


# --- calibration ---------------------------------------------------------------
def test_one_settle_moves_calibration_by_its_weight():
    h = Harness([cfg(input_tokens_per_minute=100_000)])
    h.call(100, 1, actual_in=200)
    assert h.key().calibration == pytest.approx(1.2)
    r = h.reserve(100, 1)
    assert r.amounts["input_tokens"] == 120
    assert r.estimate == 100  # the raw estimate is what later settles compare against


def test_calibration_converges_to_the_actual_ratio():
    h = Harness([cfg(input_tokens_per_minute=1_000_000)])
    for _ in range(40):
        h.call(100, 1, actual_in=200)
    assert h.key().calibration == pytest.approx(2.0, abs=0.01)
    assert 199 <= h.reserve(100, 1).amounts["input_tokens"] <= 201


def test_calibration_converges_down_too():
    h = Harness([cfg(input_tokens_per_minute=1_000_000)])
    for _ in range(40):
        h.call(1000, 1, actual_in=250)
    assert h.key().calibration == pytest.approx(0.25, abs=0.01)
    assert 250 <= h.reserve(1000, 1).amounts["input_tokens"] <= 260


def test_calibration_is_per_key():
    h = Harness([cfg(input_tokens_per_minute=1_000_000), cfg(input_tokens_per_minute=1_000_000)])
    for _ in range(10):
        r = h.reserve(100, 1, only=h.key(0))
        h.limiter.mark_sent(r)
        h.limiter.settle(r, 300, 1)
    assert h.key(0).calibration > 2.0
    assert h.key(1).calibration == 1.0
    assert h.reserve(100, 1, only=h.key(1)).amounts["input_tokens"] == 100


def test_zero_actual_input_leaves_calibration_alone():
    h = Harness([cfg(input_tokens_per_minute=100_000)])
    h.call(100, 1, actual_in=0, actual_out=5)
    assert h.key().calibration == 1.0


# --- waiting -----------------------------------------------------------------------
def test_waits_exactly_until_the_tokens_fit():
    h = Harness([cfg(input_tokens_per_minute=600)])  # 10/s
    h.reserve(500)
    assert h.waits == []
    r = h.reserve(300)  # 100 left: 200 more = 20 s
    assert h.waits == [pytest.approx(20.0)]
    assert h.clock() == pytest.approx(T0 + 20)
    assert r.key is h.key()
    assert h.level("input_tokens") == pytest.approx(0.0, abs=1e-6)
    assert h.limiter.waiting == 0


def test_waits_for_the_slowest_bucket():
    h = Harness([cfg(requests_per_minute=60, input_tokens_per_minute=600, burst_seconds=10)])
    # capacities: 10 requests (1/s), 100 input tokens (10/s)
    h.reserve(100)
    h.reserve(50)  # requests: 8 left → fits; tokens: 50 needed → 5 s
    assert h.waits == [pytest.approx(5.0)]


def test_requests_bucket_wait():
    h = Harness([cfg(requests_per_minute=60, burst_seconds=1)])  # capacity 1, 1/s
    h.reserve(1)
    h.reserve(1)
    h.reserve(1)
    assert h.waits == [pytest.approx(1.0), pytest.approx(1.0)]


def test_deadline_too_close_raises_at_once_with_retry_after():
    h = Harness([cfg(input_tokens_per_minute=600)])
    h.reserve(500)
    with pytest.raises(LLMRateLimitError) as info:
        h.reserve(300, deadline=h.clock() + 5)
    assert info.value.retry_after == pytest.approx(20.0)
    assert h.waits == []  # did not wait for nothing
    assert h.level("input_tokens") == pytest.approx(100)  # nothing charged
    assert h.limiter.waiting == 0


def test_deadline_exactly_long_enough_is_admitted():
    h = Harness([cfg(input_tokens_per_minute=600)])
    h.reserve(500)
    h.reserve(300, deadline=h.clock() + 20)
    assert h.waits == [pytest.approx(20.0)]


def test_a_pause_longer_than_the_deadline_raises_with_the_pause_as_retry_after():
    h = Harness([cfg(**FULL)])
    h.limiter.pause(h.key(), 30)
    with pytest.raises(LLMRateLimitError) as info:
        h.reserve(1, deadline=h.clock() + 10)
    assert info.value.retry_after == pytest.approx(30.0)


# --- oversize -------------------------------------------------------------------
def test_input_larger_than_the_bucket_is_refused_at_once():
    h = Harness([cfg(input_tokens_per_minute=600)])
    with pytest.raises(LLMValidationError, match="input tokens"):
        h.reserve(601)
    assert h.waits == []
    assert h.level("input_tokens") == 600
    assert h.limiter.waiting == 0
    h.reserve(600)  # exactly the capacity is fine


def test_oversize_respects_burst_capacity():
    h = Harness([cfg(input_tokens_per_minute=600, burst_seconds=10)])  # capacity 100
    with pytest.raises(LLMValidationError, match=r"input tokens \(101 > 100\)"):
        h.reserve(101)
    h.reserve(100)


def test_max_tokens_larger_than_the_output_bucket_is_refused():
    h = Harness([cfg(output_tokens_per_minute=1000)])
    with pytest.raises(LLMValidationError, match="output tokens"):
        h.reserve(1, 1001)


def test_oversize_on_one_key_uses_another():
    h = Harness([cfg(input_tokens_per_minute=100), cfg(input_tokens_per_minute=1000)])
    r = h.reserve(500)
    assert r.key is h.key(1)
    with pytest.raises(LLMValidationError, match="k0.*k1"):
        h.reserve(1001)


def test_oversize_even_while_the_key_is_paused_or_empty():
    h = Harness([cfg(input_tokens_per_minute=600)])
    h.reserve(600)
    h.limiter.pause(h.key(), 100)
    with pytest.raises(LLMValidationError):
        h.reserve(700)  # no deadline: must not hang
    assert h.waits == []


def test_oversize_uses_a_limit_lowered_by_headers():
    h = Harness([cfg(input_tokens_per_minute=600)])
    h.call(10, 1, actual_in=10, actual_out=1, headers={
        "anthropic-ratelimit-input-tokens-limit": "300",
        "anthropic-ratelimit-input-tokens-remaining": "290",
    })
    assert h.buckets()["input_tokens"].capacity == 300
    with pytest.raises(LLMValidationError):
        h.reserve(400)


# --- key choice --------------------------------------------------------------------
def test_key_that_admits_now_beats_one_that_must_wait():
    h = Harness([cfg(requests_per_minute=60, burst_seconds=1), cfg(requests_per_minute=60, burst_seconds=1)])
    first = h.reserve(1)
    second = h.reserve(1)
    assert {first.key.index, second.key.index} == {0, 1}
    assert h.waits == []


def test_soonest_key_when_all_must_wait():
    h = Harness([cfg(input_tokens_per_minute=600), cfg(input_tokens_per_minute=600)])
    h.reserve(600, only=h.key(0))  # key 0 empty
    h.reserve(590, only=h.key(1))  # key 1 has 10
    r = h.reserve(30)  # key 0: 3 s, key 1: 2 s
    assert r.key is h.key(1)
    assert h.waits == [pytest.approx(2.0)]


def test_ties_go_to_most_headroom():
    h = Harness([cfg(requests_per_minute=60), cfg(requests_per_minute=120)])
    assert h.reserve(1).key is h.key(1)  # 119/120 left beats 59/60
    h2 = Harness([cfg(requests_per_minute=60), cfg(requests_per_minute=60)])
    for _ in range(3):
        h2.reserve(1, only=h2.key(0))
    assert h2.reserve(1).key is h2.key(1)


def test_equal_keys_take_turns():
    h = Harness([cfg(requests_per_minute=600), cfg(requests_per_minute=600), cfg(requests_per_minute=600)])
    order = [h.reserve(1).key.index for _ in range(9)]
    assert Counter(order) == {0: 3, 1: 3, 2: 3}


def test_only_restricts_the_choice():
    h = Harness([cfg(requests_per_minute=60), cfg(requests_per_minute=600)])
    r = h.reserve(1, only=h.key(0))
    assert r.key is h.key(0)
    assert h.level("requests", 0) == 59 and h.level("requests", 1) == 600


@pytest.mark.parametrize("dimension, small", [("requests_per_minute", 60), ("input_tokens_per_minute", 600)])
def test_traffic_spreads_in_proportion_to_limits(dimension, small):
    h = Harness([cfg(**{dimension: small}), cfg(**{dimension: 3 * small})])
    counts: Counter = Counter()
    for _ in range(800):
        r = h.reserve(10, 1)
        h.limiter.mark_sent(r)
        h.limiter.settle(r, 10, 1)
        counts[r.key.index] += 1
    assert h.waits, "the test must run the buckets dry"
    ratio = counts[1] / counts[0]
    assert 2.7 <= ratio <= 3.3, counts


# --- pause ----------------------------------------------------------------------------
def test_pause_holds_the_whole_key():
    h = Harness([cfg(**FULL)])
    h.limiter.pause(h.key(), 5)
    assert h.limiter.status(h.key())["paused_for"] == 5.0
    h.reserve(1)
    assert h.waits == [pytest.approx(5.0)]


def test_a_paused_key_is_avoided():
    h = Harness([cfg(requests_per_minute=1200), cfg(requests_per_minute=60)])
    h.limiter.pause(h.key(0), 5)
    assert h.reserve(1).key is h.key(1)
    assert h.waits == []


def test_a_shorter_pause_does_not_shorten_a_longer_one():
    h = Harness([cfg(**FULL)])
    h.limiter.pause(h.key(), 5)
    h.limiter.pause(h.key(), 1)
    assert h.limiter.status(h.key())["paused_for"] == 5.0


def test_pause_holds_a_key_without_limits():
    h = Harness([None])
    h.limiter.pause(h.key(), 3)
    h.reserve(1)
    assert h.waits == [pytest.approx(3.0)]
    assert h.limiter.status(h.key()) is None


# --- probing ---------------------------------------------------------------------------
@pytest.mark.parametrize("config", [None, cfg(requests_per_minute=600)], ids=["unlimited", "configured"])
def test_a_fresh_key_admits_only_probe_in_flight_until_it_answers(config):
    h = Harness([config], answered=False)
    first = h.reserve(1)
    h.limiter.mark_sent(first)
    others = [h.reserve(1) for _ in range(PROBE_IN_FLIGHT - 1)]
    assert h.waits == []
    with pytest.raises(LLMRateLimitError):
        h.reserve(1, deadline=h.clock() + 5)
    assert h.limiter.waiting == 0
    h.limiter.settle(first, 1, 1)  # the first answer
    assert not h.key().probing
    h.waits.clear()
    for _ in range(5):
        h.reserve(1)
    assert h.waits == []
    assert others


def test_a_never_sent_refund_does_not_count_as_an_answer():
    h = Harness([None], answered=False)
    rs = [h.reserve(1) for _ in range(PROBE_IN_FLIGHT)]
    h.limiter.refund(rs[0])
    assert h.key().probing
    h.reserve(1)  # the slot came back
    with pytest.raises(LLMRateLimitError):
        h.reserve(1, deadline=h.clock() + 1)


def test_headers_on_an_answer_end_probing():
    h = Harness([None], answered=False)
    r = h.reserve(1)
    h.limiter.mark_sent(r)
    h.limiter.refund(r, {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "99"},
                     keep_request=True)
    assert not h.key().probing


def test_a_probing_key_is_skipped_for_an_answered_one():
    h = Harness([None, None], answered=False)
    h.key(1).answered = True
    for _ in range(PROBE_IN_FLIGHT):
        h.reserve(1, only=h.key(0))
    assert h.reserve(1).key is h.key(1)


def test_probing_timeout_retry_after_is_finite_or_none():
    h = Harness([None], answered=False)
    for _ in range(PROBE_IN_FLIGHT):
        h.reserve(1)
    with pytest.raises(LLMRateLimitError) as info:
        h.reserve(1, deadline=h.clock() + 2)
    assert info.value.retry_after is None or math.isfinite(info.value.retry_after)


# --- header sync --------------------------------------------------------------------------
def anthropic_headers(dimension: str, limit=None, remaining=None, reset=None) -> dict[str, str]:
    prefix = f"anthropic-ratelimit-{dimension}-"
    out = {}
    if limit is not None:
        out[prefix + "limit"] = str(limit)
    if remaining is not None:
        out[prefix + "remaining"] = str(remaining)
    if reset is not None:
        out[prefix + "reset"] = reset
    return out


def test_headers_pull_a_bucket_down_to_remaining_plus_refill_since_send():
    h = Harness([cfg(requests_per_minute=60)])  # 1/s
    r = h.reserve(1)
    h.limiter.mark_sent(r)
    h.clock.advance(2)
    h.limiter.settle(r, 1, 1, anthropic_headers("requests", 60, 10))
    assert h.level("requests") == pytest.approx(12.0)


def test_headers_never_raise_a_bucket():
    h = Harness([cfg(requests_per_minute=60)])
    for _ in range(10):
        h.reserve(1)
    r = h.reserve(1)
    h.limiter.mark_sent(r)
    h.limiter.settle(r, 1, 1, anthropic_headers("requests", 60, 59))
    assert h.level("requests") == pytest.approx(49.0)


def test_sync_bound_subtracts_reserved_but_unsent_calls():
    h = Harness([cfg(requests_per_minute=60)])
    r1 = h.reserve(1)
    h.reserve(1)  # reserved, not sent
    h.reserve(1)  # reserved, not sent
    h.limiter.mark_sent(r1)
    h.limiter.settle(r1, 1, 1, anthropic_headers("requests", 60, 30))
    assert h.level("requests") == pytest.approx(28.0)


def test_sync_bound_adds_the_pending_output_refund():
    h = Harness([cfg(output_tokens_per_minute=6000)])  # 100/s
    r = h.reserve(10, 50)
    h.limiter.mark_sent(r)
    h.limiter.settle(r, 10, 10, anthropic_headers("output-tokens", 6000, 1000))
    # the server's 1000 still counts all 50 of max_tokens; 40 come back
    assert h.level("output_tokens") == pytest.approx(1040.0)


def test_headers_of_a_429_refund_sync_too():
    h = Harness([cfg(input_tokens_per_minute=6000)])
    r = h.reserve(100)
    h.limiter.mark_sent(r)
    h.limiter.refund(r, anthropic_headers("input-tokens", 6000, 500))
    assert h.level("input_tokens") == pytest.approx(500.0)


def test_a_configured_limit_is_never_raised_by_headers():
    h = Harness([cfg(requests_per_minute=60)])
    h.call(1, 1, 1, 1, anthropic_headers("requests", 120, 119))
    bucket = h.buckets()["requests"]
    assert bucket.limit == 60 and bucket.capacity == 60
    assert h.limiter.status(h.key())["limits"] == {"requests_per_minute": 60.0}


def test_a_configured_limit_may_be_lowered_by_headers():
    h = Harness([cfg(requests_per_minute=60)])
    h.call(1, 1, 1, 1, anthropic_headers("requests", 30, 29))
    bucket = h.buckets()["requests"]
    assert bucket.limit == 30 and bucket.capacity == 30
    assert bucket.rate == pytest.approx(0.5)
    assert h.level("requests") <= 29


def test_unconfigured_limits_are_learned_from_limit_headers():
    h = Harness([cfg(requests_per_minute=60)])
    headers = {**anthropic_headers("requests", 60, 59), **anthropic_headers("input-tokens", 40_000, 39_000),
               **anthropic_headers("output-tokens", 8000, 7990)}
    h.call(100, 50, 100, 10, headers)
    key = h.key()
    assert h.buckets()["input_tokens"].limit == 40_000
    assert h.buckets()["output_tokens"].limit == 8000
    assert h.level("input_tokens") == pytest.approx(39_000)
    status = h.limiter.status(key)
    assert status["limits"] == {"requests_per_minute": 60.0, "input_tokens_per_minute": 40_000.0,
                                "output_tokens_per_minute": 8000.0}
    assert status["learned"] == ["input_tokens_per_minute", "output_tokens_per_minute"]


def test_a_learned_limit_follows_later_headers_both_ways():
    h = Harness([None])
    h.call(1, 1, 1, 1, anthropic_headers("requests", 100, 99))
    assert h.buckets()["requests"].limit == 100
    h.call(1, 1, 1, 1, anthropic_headers("requests", 200, 199))
    assert h.buckets()["requests"].limit == 200
    h.call(1, 1, 1, 1, anthropic_headers("requests", 50, 40))
    assert h.buckets()["requests"].limit == 50


def test_a_remaining_header_without_a_limit_teaches_nothing():
    h = Harness([None])
    h.call(1, 1, 1, 1, anthropic_headers("requests", None, 5))
    assert h.buckets() == {}
    assert h.limiter.status(h.key()) is None


def test_anthropic_combined_tokens_header_is_a_summary_not_a_bucket():
    h = Harness([None], refunds_output=True)
    h.call(1, 1, 1, 1, anthropic_headers("tokens", 8000, 7000))
    assert "tokens" not in h.buckets()


def test_openai_headers_teach_requests_and_tokens():
    h = Harness([None], refunds_output=False)
    h.call(100, 50, 100, 10, {
        "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "29850",
        "x-ratelimit-reset-tokens": "300ms",
    })
    key = h.key()
    assert h.buckets()["requests"].limit == 500
    assert h.buckets()["tokens"].limit == 30_000
    assert h.level("tokens") == pytest.approx(29_850)
    assert h.limiter.status(key)["limits"] == {"requests_per_minute": 500.0, "tokens_per_minute": 30_000.0}


def test_a_smaller_burst_capacity_is_learned_from_reset():
    h = Harness([cfg(requests_per_minute=60)])  # capacity 60, 1/s
    # the server: 5 left, full again in 5 s → it holds only 10
    h.call(1, 1, 1, 1, anthropic_headers("requests", 60, 5, iso(WALL0 + 5)))
    bucket = h.buckets()["requests"]
    assert bucket.capacity == pytest.approx(10.0)
    assert bucket.limit == 60  # the rate is unchanged
    assert h.level("requests") == pytest.approx(5.0)
    assert h.limiter.status(h.key())["burst_capacity"] == {"requests_per_minute": 10.0}
    h.clock.advance(100)
    assert h.level("requests") == pytest.approx(10.0)


def test_capacity_from_reset_ignores_small_differences():
    h = Harness([cfg(requests_per_minute=60)])
    h.call(1, 1, 1, 1, anthropic_headers("requests", 60, 50, iso(WALL0 + 9)))  # 59 ≥ 97 % of 60
    assert h.buckets()["requests"].capacity == 60


def test_capacity_from_openai_reset_duration():
    h = Harness([cfg(requests_per_minute=600)], refunds_output=False)  # 10/s
    h.call(1, 1, 1, 1, {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "15",
                        "x-ratelimit-reset-requests": "1.5s"})
    assert h.buckets()["requests"].capacity == pytest.approx(30.0)


# --- status ------------------------------------------------------------------------------
def test_status_fields():
    h = Harness([cfg(**FULL)])
    h.reserve(100, 50)
    status = h.limiter.status(h.key())
    assert status["requests_remaining"] == 59
    assert status["input_tokens_remaining"] == 5900
    assert status["output_tokens_remaining"] == 2950
    assert status["tokens_remaining"] == 2950  # smallest token figure
    assert status["reset_at"] == pytest.approx(WALL0 + 1.0)  # every bucket full again in 1 s
    assert status["limits"] == {"requests_per_minute": 60.0, "input_tokens_per_minute": 6000.0,
                                "output_tokens_per_minute": 3000.0}
    assert status["paused_for"] == 0.0
    assert status["learned"] == []
    for name in ("requests_remaining", "input_tokens_remaining", "output_tokens_remaining", "tokens_remaining"):
        assert isinstance(status[name], int)


def test_status_remaining_never_negative_and_reset_covers_debt_and_pause():
    h = Harness([cfg(input_tokens_per_minute=600)])  # 10/s
    h.call(100, 1, actual_in=700)  # -100
    status = h.limiter.status(h.key())
    assert status["input_tokens_remaining"] == 0
    assert status["requests_remaining"] is None and status["output_tokens_remaining"] is None
    assert status["tokens_remaining"] == 0
    assert status["reset_at"] == pytest.approx(WALL0 + 70.0)
    h.limiter.pause(h.key(), 100)
    assert h.limiter.status(h.key())["reset_at"] == pytest.approx(WALL0 + 100.0)


def test_status_is_none_without_limits():
    h = Harness([None])
    h.reserve(10)
    assert h.limiter.status(h.key()) is None


# --- first come, first served across threads ----------------------------------------------
def _until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class ThreadedHarness:
    """Real threads block in reserve; the clock only moves by hand."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.clock = FakeClock()
        self.limiter = ProviderLimiter([("k0", config)], refunds_output=True, clock=self.clock,
                                       wall_clock=lambda: WALL0,
                                       wait=lambda cond, timeout: cond.wait(0.01), transit_margin=0.0)
        self.key = self.limiter.keys[0]
        self.key.answered = True
        self.admitted: list[str] = []
        self.errors: dict[str, BaseException] = {}
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self, name: str, cost: Cost, deadline: Optional[float] = None) -> None:
        before = self.limiter.waiting

        def run() -> None:
            try:
                self.limiter.reserve(cost, deadline)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                with self._lock:
                    self.errors[name] = exc
                return
            with self._lock:
                self.admitted.append(name)

        thread = threading.Thread(target=run, name=f"fifo-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)
        _until(lambda: self.limiter.waiting == before + 1, f"{name} to queue")

    def step(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.limiter.pause(self.key, 0)  # notify_all without changing anything

    def count(self) -> int:
        with self._lock:
            return len(self.admitted) + len(self.errors)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), f"{thread.name} is stuck"


def test_waiters_are_admitted_in_arrival_order():
    th = ThreadedHarness(cfg(requests_per_minute=60, burst_seconds=1))  # one per second
    th.limiter.reserve(Cost(1, 1), None)  # empty the bucket
    names = [f"t{i}" for i in range(6)]
    for name in names:
        th.start(name, Cost(1, 1))
    assert th.limiter.waiting == 6
    time.sleep(0.05)
    assert th.admitted == []  # no time passed, nobody fits
    for step, _ in enumerate(names, 1):
        th.step(1.0)
        _until(lambda: th.count() == step, f"admission {step}")
        time.sleep(0.02)
        assert th.count() == step  # exactly one per second of refill
    th.join()
    assert th.admitted == names
    assert th.errors == {}
    assert th.limiter.waiting == 0


def test_a_small_later_caller_does_not_jump_the_line():
    th = ThreadedHarness(cfg(input_tokens_per_minute=600))  # 10/s
    th.limiter.reserve(Cost(550, 1), None)  # 50 left
    th.start("big", Cost(100, 1))  # needs 5 s
    th.start("small", Cost(10, 1))  # would fit now, but is second in line
    time.sleep(0.05)
    assert th.admitted == []
    assert th.limiter.backend.snapshot("k0").buckets["input_tokens"].level == pytest.approx(50)
    th.step(5.0)
    _until(lambda: th.count() == 1, "the big caller")
    time.sleep(0.02)
    assert th.admitted == ["big"]  # the small one now needs 1 s more
    th.step(1.0)
    _until(lambda: th.count() == 2, "the small caller")
    th.join()
    assert th.admitted == ["big", "small"]


def test_a_waiter_whose_deadline_passes_leaves_the_line_and_the_rest_still_flows():
    th = ThreadedHarness(cfg(input_tokens_per_minute=600))  # 10/s
    th.limiter.reserve(Cost(600, 1), None)  # empty
    th.start("head", Cost(50, 1))  # needs 5 s
    th.start("impatient", Cost(10, 1), deadline=th.clock() + 2)
    th.start("tail", Cost(10, 1))
    th.step(3.0)  # past the impatient caller's deadline, head still short
    _until(lambda: "impatient" in th.errors, "the deadline error")
    assert isinstance(th.errors["impatient"], LLMRateLimitError)
    assert th.admitted == []
    assert th.limiter.waiting == 2
    th.step(2.0)
    _until(lambda: th.count() == 2, "head")
    th.step(1.0)
    _until(lambda: th.count() == 3, "tail")
    th.join()
    assert th.admitted == ["head", "tail"]
    assert th.limiter.waiting == 0


def test_a_settlement_wakes_the_line():
    th = ThreadedHarness(cfg(input_tokens_per_minute=600))
    reservation = th.limiter.reserve(Cost(600, 1), None)
    th.limiter.mark_sent(reservation)
    th.start("waiter", Cost(100, 1))
    time.sleep(0.03)
    assert th.admitted == []
    th.limiter.settle(reservation, 100, 1)  # 500 refunded, no time passes
    _until(lambda: th.count() == 1, "the waiter")
    th.join()
    assert th.admitted == ["waiter"]


def test_transit_margin_admits_only_with_refill_to_spare():
    """The server sees a call a little after we admit it; a bucket admits
    only when it also covers ``margin`` seconds of refill (a one-off delay)."""
    clock = FakeClock()
    waits: list[float] = []

    def wait(cond, timeout):
        waits.append(timeout)
        clock.advance(timeout)

    limiter = ProviderLimiter([("k0", cfg(requests_per_minute=60))], refunds_output=True, clock=clock,
                              wait=wait, transit_margin=0.25)
    limiter.keys[0].answered = True
    for _ in range(60):  # drain the full minute of burst
        limiter.refund(limiter.reserve(Cost(1, 1), None), keep_request=True)
    assert waits  # the last calls had to wait for the margin
    waits.clear()
    limiter.reserve(Cost(1, 1), None)
    assert sum(waits) == pytest.approx(1.0)  # one request a second: the rate is unchanged


def test_calibration_stays_within_bounds_after_odd_answers():
    h = Harness([cfg(input_tokens_per_minute=1_000_000)])
    for _ in range(50):  # a cached prompt: the provider counts almost nothing
        h.call(10_000, 1, actual_in=10)
    assert h.key().calibration >= 0.25


def test_a_call_that_never_reached_the_server_does_not_end_probing():
    h = Harness([None], answered=False)
    r = h.reserve(10, 1)
    h.limiter.mark_sent(r)
    h.limiter.refund(r, answered=False)
    assert h.key().probing


# --- close ------------------------------------------------------------------------

def test_close_wakes_every_caller_waiting_for_capacity_with_closed_error():
    from llm_sync.errors import LLMClosedError

    limiter = ProviderLimiter([("k0", cfg(requests_per_minute=1)), ("k1", cfg(requests_per_minute=1))],
                              refunds_output=True, transit_margin=0.0)
    for key in limiter.keys:
        key.answered = True
    held = [limiter.reserve(Cost(1, 1), None) for _ in limiter.keys]  # both keys' one request a minute
    outcomes: list[BaseException] = []
    lock = threading.Lock()

    def wait(only=None) -> None:
        try:
            limiter.reserve(Cost(1, 1), time.monotonic() + 60.0, only=only)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            with lock:
                outcomes.append(exc)

    threads = [threading.Thread(target=wait) for _ in range(3)] + [
        threading.Thread(target=wait, args=(limiter.keys[0],))]  # a retry pinned to one key
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while limiter.waiting < 4 and time.monotonic() < deadline:
        threading.Event().wait(0.001)
    assert limiter.waiting == 4
    started = time.monotonic()
    limiter.close()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - started < 2  # not the minute the buckets would take
    assert len(outcomes) == 4 and all(isinstance(e, LLMClosedError) for e in outcomes), outcomes
    assert limiter.waiting == 0
    with pytest.raises(LLMClosedError):
        limiter.reserve(Cost(1, 1), None)
    for reservation in held:  # settling after close still works
        limiter.refund(reservation, answered=False)
    limiter.close()  # idempotent


# --- many keys: a window of keys per attempt ----------------------------------------------
def _counting_admits(h: Harness) -> list[int]:
    """The number of keys each backend admit was asked about."""
    sizes: list[int] = []
    admit = h.limiter.backend.admit

    def counted(requests, *args, **kwargs):
        sizes.append(len(requests))
        return admit(requests, *args, **kwargs)

    h.limiter.backend.admit = counted  # type: ignore[method-assign]
    return sizes


def test_with_many_keys_a_call_looks_at_a_window_of_them_and_every_key_takes_its_turn():
    from llm_sync.ratelimit.limiter import KEY_WINDOW

    h = Harness([cfg(requests_per_minute=6000)] * 64)
    sizes = _counting_admits(h)
    chosen = [h.reserve(1).key.index for _ in range(64)]
    assert sizes == [KEY_WINDOW] * 64  # the same cost with 64 keys as with 8
    assert sorted(chosen) == list(range(64))  # and each key was chosen once


def test_when_no_key_of_the_window_fits_every_key_is_looked_at():
    from llm_sync.ratelimit.limiter import KEY_WINDOW

    h = Harness([cfg(requests_per_minute=1)] * 20 + [cfg(requests_per_minute=600)])
    for index in range(20):  # every key but the last is spent
        h.reserve(1, only=h.key(index))
    sizes = _counting_admits(h)
    assert h.reserve(1).key is h.key(20)  # found at once, though outside the window
    assert h.waits == [] and sizes == [KEY_WINDOW, 21]
