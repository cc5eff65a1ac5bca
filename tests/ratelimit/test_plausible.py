"""Numbers a server sends are clamped before they steer a key: retry hints,
rate-limit headers and usage figures outside plausible bounds never pause,
shrink or indebt a key for longer than a few minutes (hand-driven clock)."""

from __future__ import annotations

import logging
import math

import pytest

from llm_sync.budget import DEFAULT_MAX_PAUSE
from llm_sync.ratelimit.headers import (
    PLAUSIBLE_MAX_RESET,
    HeaderLimit,
    parse_rate_limit_headers,
    plausible,
)
from llm_sync.ratelimit.limiter import PROBE_IN_FLIGHT
from llm_sync.ratelimit.state import MAX_DEBT_MINUTES
from llm_sync.tokens import MAX_PLAUSIBLE_TOKENS, plausible_count

from datetime import datetime, timezone
from typing import Optional

from llm_sync.config import RateLimitConfig
from llm_sync.ratelimit.limiter import Cost, ProviderLimiter

T0 = 1000.0
WALL0 = 1_772_366_400.0  # 2026-03-01T12:00:00Z

LOGGER = "llm_sync.ratelimit"


class Harness:
    """A limiter on a hand-driven clock; a blocking wait advances it."""

    def __init__(self, configs: list[Optional[RateLimitConfig]]) -> None:
        self.now = T0
        self.waits: list[float] = []
        self.limiter = ProviderLimiter(
            [(f"k{i}", c) for i, c in enumerate(configs)], refunds_output=True,
            clock=lambda: self.now, wall_clock=lambda: WALL0 + (self.now - T0), wait=self._wait,
            transit_margin=0.0,
        )
        for key in self.limiter.keys:
            key.answered = True

    def _wait(self, cond: object, timeout: Optional[float]) -> None:
        assert timeout is not None, "a single-threaded reserve would block forever"
        self.waits.append(timeout)
        self.now += max(timeout, 1e-6)

    def key(self, index: int = 0):
        return self.limiter.keys[index]

    def buckets(self):
        return self.limiter.backend.snapshot(self.key().scope).buckets

    def level(self, dimension: str) -> float:
        return self.buckets()[dimension].level

    def reserve(self, input_tokens: int, output_tokens: int = 1):
        return self.limiter.reserve(Cost(input_tokens, output_tokens), None)

    def call(self, input_tokens, output_tokens=1, actual_in=None, actual_out=None, headers=None):
        reservation = self.reserve(input_tokens, output_tokens)
        self.limiter.mark_sent(reservation)
        self.limiter.settle(reservation, actual_in, actual_out, headers)
        return reservation


def cfg(**kwargs) -> RateLimitConfig:
    return RateLimitConfig(**kwargs)


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def anthropic(dimension: str, limit: str, remaining: str | None = None, reset: str | None = None) -> dict[str, str]:
    prefix = f"anthropic-ratelimit-{dimension}-"
    headers = {prefix + "limit": limit}
    if remaining is not None:
        headers[prefix + "remaining"] = remaining
    if reset is not None:
        headers[prefix + "reset"] = reset
    return headers


# --- header plausibility -----------------------------------------------------------
@pytest.mark.parametrize("limit", ["0.0001", "0", "nan", "inf", "1e30", "-5e2"])
def test_an_implausible_limit_drops_the_dimension(limit):
    headers = {**anthropic("requests", limit, "0"), **anthropic("input-tokens", "40000", "39000")}
    rejected: list[str] = []
    found = parse_rate_limit_headers(headers, WALL0, rejected)
    assert found["input_tokens"] == HeaderLimit(40000.0, 39000.0, None)
    if limit in ("nan", "-5e2"):  # no number at all: skipped like "lots" (the remaining figure stays)
        assert found["requests"].limit is None and rejected == []
    else:
        assert "requests" not in found and rejected == ["requests"]


@pytest.mark.parametrize("remaining", ["51", "1e30", "inf"])
def test_remaining_above_the_limit_drops_the_dimension(remaining):
    rejected: list[str] = []
    assert parse_rate_limit_headers(anthropic("requests", "50", remaining), WALL0, rejected) == {}
    assert rejected == ["requests"]


def test_remaining_without_a_limit_is_bounded_too():
    assert plausible("tokens", HeaderLimit(None, 1e30, None)) is None
    assert plausible("tokens", HeaderLimit(None, 5000.0, None)) == HeaderLimit(None, 5000.0, None)


@pytest.mark.parametrize("reset_in", [1e9, math.inf, math.nan, PLAUSIBLE_MAX_RESET + 1])
def test_an_implausible_reset_is_dropped_alone(reset_in):
    assert plausible("requests", HeaderLimit(50.0, 10.0, reset_in)) == HeaderLimit(50.0, 10.0, None)


def test_absurd_reset_times_in_both_formats_are_dropped():
    far = anthropic("requests", "50", "10", "9999-12-31T23:59:59Z")
    assert parse_rate_limit_headers(far, WALL0) == {"requests": HeaderLimit(50.0, 10.0, None)}
    openai = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "10",
              "x-ratelimit-reset-requests": "99999999h"}
    assert parse_rate_limit_headers(openai, WALL0) == {"requests": HeaderLimit(500.0, 10.0, None)}


def test_plausible_figures_pass_unchanged():
    headers = anthropic("requests", "50", "49", iso(WALL0 + 2))
    assert parse_rate_limit_headers(headers, WALL0) == {"requests": HeaderLimit(50.0, 49.0, 2.0)}


def test_an_absurd_limit_header_leaves_the_key_serving_and_warns_once(caplog):
    h = Harness([None])
    headers = {**anthropic("requests", "0.0001", "0"), **anthropic("input-tokens", "1e30", "1e30"),
               "x-secret-looking": "sk-ant-should-never-be-logged"}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            h.call(10, 10, 10, 10, headers)
    assert h.buckets() == {}  # nothing learned from it
    assert h.waits == []  # every call admitted at once
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1
    assert "k0" in warnings[0].getMessage() and "requests" in warnings[0].getMessage()
    assert "0.0001" not in caplog.text and "sk-ant" not in caplog.text


def test_a_configured_limit_lowered_by_one_header_comes_back():
    h = Harness([cfg(requests_per_minute=60)])
    h.call(1, 1, 1, 1, anthropic("requests", "2", "1"))
    assert h.buckets()["requests"].limit == 2
    h.now += 60
    h.call(1, 1, 1, 1, anthropic("requests", "60", "59"))
    assert h.buckets()["requests"].limit == 60


# --- usage plausibility ------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (12, 12), (0, 0), (12.0, 12), (MAX_PLAUSIBLE_TOKENS, MAX_PLAUSIBLE_TOKENS),
    (10**15, None), (-1, None), (1.5, None), (math.inf, None), (math.nan, None),
    (True, None), ("12", None), ([12], None), ({"n": 1}, None), (None, None),
])
def test_plausible_count(value, expected):
    assert plausible_count(value) == expected


@pytest.mark.parametrize("absurd", [10**15, -5, MAX_PLAUSIBLE_TOKENS + 1])
def test_absurd_usage_keeps_the_estimate_and_warns_once(caplog, absurd):
    h = Harness([cfg(input_tokens_per_minute=6000, output_tokens_per_minute=3000)])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        h.call(100, 50, actual_in=absurd, actual_out=absurd)
        h.call(100, 50, actual_in=absurd, actual_out=absurd)
    assert h.level("input_tokens") == pytest.approx(6000 - 200)  # the estimates, as reserved
    assert h.level("output_tokens") == pytest.approx(3000 - 100)
    assert h.key().calibration == 1.0
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
    assert str(absurd) not in caplog.text


def test_large_but_plausible_usage_never_indebts_a_key_for_more_than_minutes():
    h = Harness([cfg(input_tokens_per_minute=6000)])
    h.call(100, 1, actual_in=MAX_PLAUSIBLE_TOKENS, actual_out=1)
    assert h.level("input_tokens") == pytest.approx(-6000 * MAX_DEBT_MINUTES)
    h.reserve(100)  # waits out the debt: a few minutes, not years
    assert sum(h.waits) <= 60 * (MAX_DEBT_MINUTES + 1)


# --- pauses ------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, expected", [(1e9, DEFAULT_MAX_PAUSE), (math.inf, DEFAULT_MAX_PAUSE),
                                               (math.nan, 0.0), (-5.0, 0.0), (2.5, 2.5)])
def test_a_pause_is_cut_to_max_pause(seconds, expected):
    h = Harness([None])
    h.limiter.pause(h.key(), seconds)
    assert h.limiter.paused_for(h.key()) == pytest.approx(expected)


def test_after_a_pause_the_key_is_probed_again():
    h = Harness([None])
    h.limiter.pause(h.key(), 1e9)
    assert h.key().probing
    first = [h.reserve(1) for _ in range(PROBE_IN_FLIGHT)]
    assert sum(h.waits) == pytest.approx(DEFAULT_MAX_PAUSE)  # back within the cap
    assert h.key().probe_full  # the next caller waits for a probe's answer
    h.limiter.mark_sent(first[0])
    h.limiter.settle(first[0], 1, 1)
    assert not h.key().probing and not h.key().probe_full


def test_max_pause_is_configurable():
    h = Harness([None])
    h.limiter.max_pause = 5.0
    h.limiter.pause(h.key(), 1e9)
    assert h.limiter.paused_for(h.key()) == pytest.approx(5.0)
