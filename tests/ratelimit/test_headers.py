"""Rate-limit header parsing: durations, RFC 3339 times, both header families."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from llm_sync.ratelimit.headers import HeaderLimit, parse_duration, parse_rate_limit_headers, parse_rfc3339

WALL_NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


# --- parse_duration -------------------------------------------------------------
@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("1.5", 1.5),
        ("7", 7.0),
        ("59.999s", 59.999),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30ms", 60.03),
        (" 3s ", 3.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "1x", "s", "m5", "5m3", "1s garbage", "abc", "1 s", "ms"])
def test_parse_duration_rejects_garbage(text):
    assert parse_duration(text) is None


# --- parse_rfc3339 ------------------------------------------------------------------
def test_parse_rfc3339_utc_z():
    assert parse_rfc3339("2026-03-01T12:00:00Z") == WALL_NOW
    assert parse_rfc3339("2026-03-01T12:00:00z") == WALL_NOW


def test_parse_rfc3339_offsets():
    assert parse_rfc3339("2026-03-01T14:00:00+02:00") == WALL_NOW
    assert parse_rfc3339("2026-03-01T07:30:00-04:30") == WALL_NOW
    assert parse_rfc3339("2026-03-01T12:00:00+00:00") == WALL_NOW


def test_parse_rfc3339_fractional_seconds():
    assert parse_rfc3339("2026-03-01T12:00:01.5Z") == pytest.approx(WALL_NOW + 1.5)
    assert parse_rfc3339("2026-03-01T12:00:00.250+00:00") == pytest.approx(WALL_NOW + 0.25)


def test_parse_rfc3339_naive_time_is_rejected():
    assert parse_rfc3339("2026-03-01T12:00:00") is None


@pytest.mark.parametrize("text", ["", "garbage", "2026-13-01T00:00:00Z", "12:00:00Z", "1700000000", "Z"])
def test_parse_rfc3339_garbage(text):
    assert parse_rfc3339(text) is None


# --- parse_rate_limit_headers: Anthropic --------------------------------------------
def _iso(offset: float) -> str:
    return datetime.fromtimestamp(WALL_NOW + offset, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_anthropic_family_full():
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": _iso(2),
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": _iso(2),
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "7000",
        "anthropic-ratelimit-output-tokens-reset": _iso(60),
        "anthropic-ratelimit-tokens-limit": "8000",
        "anthropic-ratelimit-tokens-remaining": "7000",
        "anthropic-ratelimit-tokens-reset": _iso(60),
    }
    found = parse_rate_limit_headers(headers, WALL_NOW)
    assert found == {
        "requests": HeaderLimit(50.0, 49.0, 2.0),
        "input_tokens": HeaderLimit(40000.0, 39000.0, 2.0),
        "output_tokens": HeaderLimit(8000.0, 7000.0, 60.0),
        "tokens": HeaderLimit(8000.0, 7000.0, 60.0),
    }


def test_anthropic_reset_in_the_past_is_zero():
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "50",
        "anthropic-ratelimit-requests-reset": _iso(-30),
    }
    assert parse_rate_limit_headers(headers, WALL_NOW)["requests"].reset_in == 0.0


def test_anthropic_partial_headers():
    headers = {
        "anthropic-ratelimit-requests-remaining": "7",  # no limit, no reset
        "anthropic-ratelimit-output-tokens-limit": "8000",  # no remaining
        "anthropic-ratelimit-input-tokens-reset": _iso(5),  # reset alone: nothing to report
    }
    found = parse_rate_limit_headers(headers, WALL_NOW)
    assert found == {
        "requests": HeaderLimit(None, 7.0, None),
        "output_tokens": HeaderLimit(8000.0, None, None),
    }


def test_anthropic_malformed_values_are_skipped_not_errors():
    headers = {
        "anthropic-ratelimit-requests-limit": "lots",
        "anthropic-ratelimit-requests-remaining": "-3",
        "anthropic-ratelimit-requests-reset": _iso(1),
        "anthropic-ratelimit-input-tokens-limit": "1000",
        "anthropic-ratelimit-input-tokens-remaining": "x",
        "anthropic-ratelimit-input-tokens-reset": "tomorrow",
        "anthropic-ratelimit-output-tokens-limit": " 500 ",
        "anthropic-ratelimit-output-tokens-remaining": "499.5",
        "anthropic-ratelimit-output-tokens-reset": "2026-03-01T12:00:09",  # naive: ignored
    }
    found = parse_rate_limit_headers(headers, WALL_NOW)
    assert "requests" not in found  # neither figure usable
    assert found["input_tokens"] == HeaderLimit(1000.0, None, None)
    assert found["output_tokens"] == HeaderLimit(500.0, 499.5, None)


# --- parse_rate_limit_headers: OpenAI -----------------------------------------------
def test_openai_family_full():
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "1m2s",
    }
    found = parse_rate_limit_headers(headers, WALL_NOW)
    assert found.keys() == {"requests", "tokens"}
    assert found["requests"].limit == 500.0
    assert found["requests"].remaining == 499.0
    assert found["requests"].reset_in == pytest.approx(0.12)
    assert found["tokens"] == HeaderLimit(30000.0, 29000.0, 62.0)


def test_openai_partial_and_malformed():
    headers = {
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "soon",
        "x-ratelimit-limit-tokens": "abc",
        "x-ratelimit-remaining-tokens": "",
        "x-ratelimit-reset-tokens": "1s",
    }
    found = parse_rate_limit_headers(headers, WALL_NOW)
    assert found == {"requests": HeaderLimit(None, 3.0, None)}


def test_no_rate_limit_headers_is_empty():
    assert parse_rate_limit_headers({}, WALL_NOW) == {}
    assert parse_rate_limit_headers({"content-type": "application/json", "retry-after": "3"}, WALL_NOW) == {}


def test_anthropic_family_wins_when_both_present():
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "10",
        "x-ratelimit-limit-requests": "999",
        "x-ratelimit-remaining-requests": "998",
        "x-ratelimit-limit-tokens": "5000",
        "x-ratelimit-remaining-tokens": "4000",
    }
    found = parse_rate_limit_headers(headers, WALL_NOW)
    assert found == {"requests": HeaderLimit(50.0, 10.0, None)}


def test_wall_now_is_what_turns_reset_into_seconds():
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": _iso(10),
    }
    assert parse_rate_limit_headers(headers, WALL_NOW)["requests"].reset_in == pytest.approx(10.0)
    assert parse_rate_limit_headers(headers, WALL_NOW + 4)["requests"].reset_in == pytest.approx(6.0)


# --- the reset caches -------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llm_sync.ratelimit import headers as headers_module  # noqa: E402

_MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30),
                        timezones=st.sampled_from([timezone.utc, None]))
_RFC3339 = st.one_of(
    _MOMENTS.map(lambda m: m.isoformat()),
    _MOMENTS.map(lambda m: m.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"),
    _MOMENTS.map(lambda m: m.replace(tzinfo=None).isoformat() + "z"),
    st.text(max_size=30),
)
_DURATIONS = st.one_of(
    st.builds(lambda h, m, s: f"{h}h{m}m{s}s", st.integers(0, 30), st.integers(0, 59), st.floats(0, 59.9)),
    st.builds(lambda ms: f"{ms}ms", st.integers(0, 10**6)),
    st.text(alphabet="0123456789.hms ", max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_RFC3339, min_size=1, max_size=5))
def test_cached_reset_times_equal_a_fresh_parse(values: list[str]):
    cache = headers_module.ResetCache()
    for value in values + values:  # the second pass hits the cache
        assert cache.time(value) == parse_rfc3339(value)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_DURATIONS, min_size=1, max_size=5))
def test_cached_reset_durations_equal_a_fresh_parse(values: list[str]):
    cache = headers_module.ResetCache()
    for value in values + values:
        assert cache.duration(value) == parse_duration(value)


def test_the_reset_caches_stay_bounded():
    cache = headers_module.ResetCache()
    for i in range(3 * headers_module._CACHE_LIMIT):
        cache.time(f"2026-03-01T12:00:{i % 60:02d}.{i:06d}Z")
        cache.duration(f"{i}ms")
    assert len(cache.times) <= headers_module._CACHE_LIMIT
    assert len(cache.durations) <= headers_module._CACHE_LIMIT


def test_a_cached_reset_is_still_measured_from_each_call_s_now():
    headers = {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
               "anthropic-ratelimit-requests-reset": "2026-03-01T12:00:30Z"}
    cache = headers_module.ResetCache()
    first = parse_rate_limit_headers(headers, WALL_NOW, cache=cache)["requests"]
    later = parse_rate_limit_headers(headers, WALL_NOW + 10.0, cache=cache)["requests"]
    assert (first.reset_in, later.reset_in) == (30.0, 20.0) and len(cache.times) == 1
