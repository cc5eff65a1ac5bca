"""Absurd numbers and echoed keys from a server, over real sockets: no
single answer takes a key out of service for long, and a key the server
echoes back never shows in an error, its headers, repr, pickle or a log."""

from __future__ import annotations

import logging
import pickle
from typing import Any, Callable, Iterator

import pytest

from llm_sync import LLMManager, LLMProviderError, LLMRateLimitError
from llm_sync.budget import DEFAULT_MAX_PAUSE
from llm_sync.manager import Clocks

PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
KINDS = ["anthropic", "openai"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def managers() -> Iterator[list[LLMManager]]:
    made: list[LLMManager] = []
    yield made
    for manager in made:
        manager.close()


@pytest.fixture
def build(sim_config: Callable[..., dict[str, Any]], managers: list[LLMManager]) -> Callable[..., LLMManager]:
    def make(clocks: Clocks | None = None, **provider: Any) -> LLMManager:
        manager = LLMManager(sim_config(max_retries=0, **provider), clocks=clocks)
        managers.append(manager)
        return manager
    return make


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hint", [{"retry-after": "1e9"}, {"retry-after": "inf"}, {"retry-after-ms": "1e12"},
                                  {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}])
def test_a_429_with_an_absurd_retry_after_rests_the_key_at_most_max_pause(llm_simulator, build, kind, hint):
    clock = FakeClock()
    manager = build(Clocks(clock=clock, sleep=lambda s: None))
    client = manager.get_client(kind)
    llm_simulator.inject(429, headers=hint, path=PATHS[kind])
    with pytest.raises(LLMRateLimitError) as info:
        client.complete("Hi", timeout=5)
    assert info.value.retry_after == DEFAULT_MAX_PAUSE
    limiter = manager._runtime(kind).limiter
    assert limiter.paused_for(limiter.keys[0]) == pytest.approx(DEFAULT_MAX_PAUSE)
    clock.now += DEFAULT_MAX_PAUSE  # the longest any hint may rest it
    assert limiter.keys[0].probing  # probed again, not fully trusted
    assert client.complete("Hi", timeout=5).content
    assert llm_simulator.request_count(PATHS[kind]) == 2


def test_max_pause_is_configured_per_endpoint(llm_simulator, build):
    manager = build(max_pause=0.5)
    llm_simulator.inject(429, headers={"retry-after": "1e9"})
    with pytest.raises(LLMRateLimitError) as info:
        manager.get_client("anthropic").complete("Hi", timeout=5)
    assert info.value.retry_after == 0.5
    limiter = manager._runtime("anthropic").limiter
    assert 0 < limiter.paused_for(limiter.keys[0]) <= 0.5


ABSURD_LIMITS = {
    "anthropic": {"anthropic-ratelimit-requests-limit": "0.0001", "anthropic-ratelimit-requests-remaining": "0",
                  "anthropic-ratelimit-input-tokens-limit": "1e30",
                  "anthropic-ratelimit-input-tokens-remaining": "1e31",
                  "anthropic-ratelimit-output-tokens-limit": "0", "anthropic-ratelimit-output-tokens-remaining": "0",
                  "anthropic-ratelimit-output-tokens-reset": "9999-12-31T23:59:59Z"},
    "openai": {"x-ratelimit-limit-requests": "0.0001", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "5e40",
               "x-ratelimit-reset-tokens": "99999999h"},
}


@pytest.mark.parametrize("kind", KINDS)
def test_absurd_rate_limit_headers_never_stop_later_calls(llm_simulator, build, kind, caplog):
    client = build(api_keys=llm_simulator.keys[:1]).get_client(kind)
    llm_simulator.inject_headers(ABSURD_LIMITS[kind], count=4, path=PATHS[kind])
    with caplog.at_level(logging.WARNING, logger="llm_sync.ratelimit"):
        for _ in range(6):
            assert client.complete("Hi", timeout=5).content
    assert llm_simulator.request_count(PATHS[kind]) == 6
    assert len([r for r in caplog.records if r.name == "llm_sync.ratelimit"]) == 1  # once per key
    assert "0.0001" not in caplog.text and "1e30" not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("usage", [{"input_tokens": 10**15, "output_tokens": 10**15},
                                   {"input_tokens": -5, "output_tokens": 1e300},
                                   {"input_tokens": "many", "output_tokens": True},
                                   {"input_tokens": [1], "output_tokens": {"n": 1}}])
def test_absurd_usage_never_stops_later_calls(llm_simulator, build, kind, usage):
    limits = {"rate_limits": [{"requests_per_minute": 6000, "input_tokens_per_minute": 100_000,
                               "output_tokens_per_minute": 100_000, "tokens_per_minute": 200_000}]}
    client = build(api_keys=llm_simulator.keys[:1], **limits).get_client(kind)  # one key: no other to fall back on
    llm_simulator.inject_usage(usage, path=PATHS[kind])
    assert client.complete("Hi", timeout=5).content
    with client.stream("Hi", timeout=5) as stream:
        assert stream.read()
    llm_simulator.inject_usage(usage, path=PATHS[kind])
    with client.stream("Hi", timeout=5) as stream:
        assert stream.read()
    for _ in range(3):
        assert client.complete("Hi", timeout=5).content  # promptly: the timeout would fail it otherwise
    assert llm_simulator.request_count(PATHS[kind]) == 6


def assert_hidden(key: str, *things: Any) -> None:
    for thing in things:
        assert key not in str(thing) and key not in repr(thing)
        assert key.encode() not in pickle.dumps(thing)
        assert key not in str(getattr(thing, "headers", ""))


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_echoed_in_an_error_never_shows(llm_simulator, build, kind, caplog):
    key = llm_simulator.keys[0]
    client = build().get_client(kind)
    llm_simulator.inject_echo_key("x-echo-key", status=500, path=PATHS[kind])
    with caplog.at_level(logging.DEBUG, logger="llm_sync"):
        with pytest.raises(LLMProviderError) as info:
            client.complete("Hi", timeout=5)
    error = info.value
    assert error.status_code == 500 and error.headers is not None
    assert error.headers["x-echo-key"] in ("***", "Bearer ***")
    assert error.request_id and key not in error.request_id
    assert_hidden(key, error, pickle.loads(pickle.dumps(error)))
    assert key not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_echoed_in_an_answer_never_shows(llm_simulator, build, kind, caplog):
    key = llm_simulator.keys[0]
    client = build().get_client(kind)
    llm_simulator.inject_echo_key("x-echo-key", count=2, path=PATHS[kind])
    with caplog.at_level(logging.DEBUG, logger="llm_sync"):
        response = client.complete("Hi", timeout=5)
        with client.stream("Hi", timeout=5) as stream:
            stream.read()
    assert response.headers["x-echo-key"] == "***"
    assert_hidden(key, response, stream.response, stream.headers)
    assert key not in caplog.text
