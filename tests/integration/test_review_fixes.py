"""Behaviours found by the review of rate limiting and middleware: each
test here failed before its fix."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from llm_sync import LLMManager, LLMProviderError, LLMRateLimitError, LLMTimeoutError
from llm_sync.manager import Clocks
from llm_sync.middleware.base import Middleware
from llm_sync.middleware.retry import RetryMiddleware
from llm_sync.testing import Simulator


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def manager(llm_simulator, sim_config, sleeps):
    made: list[LLMManager] = []

    def make(**provider: Any) -> LLMManager:
        created = LLMManager(sim_config(**provider), clocks=Clocks(sleep=sleeps.append))
        made.append(created)
        return created

    yield make
    for created in made:
        created.close()


def test_a_retry_whose_key_got_paused_moves_to_another_key(manager, llm_simulator):
    m = manager()
    limiter = m.pool("anthropic").limiter

    class PauseKeyZero(Middleware):  # another call's 429 pauses key 0 meanwhile
        def process_error(self, error, context):
            limiter.pause(limiter.keys[0], 30)

    m.pool("anthropic").clients[0].middleware_chain.add(PauseKeyZero())
    llm_simulator.inject(status=500, key_index=0)
    started = time.monotonic()
    response = m.get_client("anthropic").complete("hi")
    assert response.client_id != "anthropic-0"
    assert time.monotonic() - started < 5  # did not sit out key 0's 30 s pause
    metrics = m.metrics("anthropic")
    assert metrics["total_requests"] == 1 and metrics["failed_requests"] == 0


def test_a_requeued_429_is_one_call_in_metrics_and_logs(manager, llm_simulator, caplog):
    caplog.set_level(logging.INFO, logger="llm_sync")
    m = manager()
    llm_simulator.inject(status=429, key_index=0, headers={"retry-after": "5"})
    m.get_client("anthropic").complete("hi")
    metrics = m.metrics("anthropic")
    assert (metrics["total_requests"], metrics["failed_requests"], metrics["success_rate"]) == (1, 0, 1.0)
    assert metrics["rate_limited"] == 1  # the 429 itself is still visible
    assert len([r for r in caplog.records if r.name == "llm_sync.calls" and r.levelno >= logging.INFO]) == 1


def test_retries_respect_the_call_timeout(manager, llm_simulator):
    llm_simulator.inject(status=503, count=3, delay=1.5)
    started = time.monotonic()
    with pytest.raises((LLMTimeoutError, LLMProviderError)) as info:
        manager(max_retries=5).get_client("anthropic").complete("hi", timeout=2.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2.9, elapsed  # the second attempt got what was left, not a fresh timeout
    assert isinstance(info.value, LLMTimeoutError)


def test_open_streams_on_a_fresh_key_do_not_block_other_calls():
    with Simulator(keys=("sk-one-key",)) as sim:
        config = {"providers": {"anthropic": {"api_keys": ["sk-one-key"], "base_url": sim.base_url}},
                  "pool": {"max_size": 4}}
        with LLMManager(config) as m:
            client = m.get_client("anthropic")
            streams = [client.stream_complete("a long story about the sea and the wind") for _ in range(2)]
            for stream in streams:
                next(stream)
            assert client.complete("meanwhile", timeout=3).content == "Simulated reply to: meanwhile"
            for stream in streams:
                stream.close()


def test_a_stream_that_ends_while_primed_settles_its_reservation(llm_simulator, sim_config):
    limits = {"output_tokens_per_minute": 100_000}
    with LLMManager(sim_config(rate_limits=limits)) as m:
        client = m.get_client("anthropic")
        llm_simulator.set_reply(lambda messages: "")  # no text: the stream ends while it is primed
        client.complete("warm up", max_tokens=4000)
        status = lambda: m.get_status("anthropic")["client_statuses"]  # noqa: E731
        before = sum(s["rate_limit_status"]["output_tokens_remaining"] for s in status())
        assert list(client.stream_complete("hi", max_tokens=4000)) == []
        after = sum(s["rate_limit_status"]["output_tokens_remaining"] for s in status())
        assert before - after < 50  # charged what was used, not the 4000 reserved


def test_retry_budget_bounds_a_429_requeue(manager, llm_simulator):
    for index in range(4):
        llm_simulator.inject(status=429, key_index=index, headers={"retry-after": "5"})
    started = time.monotonic()
    with pytest.raises(LLMRateLimitError) as info:
        manager().get_client("anthropic").complete("hi", retry_budget=1.0)
    assert info.value.retry_after == 5 and time.monotonic() - started < 1.5
    assert llm_simulator.request_count() == 1


def test_backoff_beyond_the_budget_keeps_the_real_error(manager, llm_simulator):
    m = manager()
    for key in m.pool("anthropic").clients:
        key.middleware_chain.get_middleware(RetryMiddleware).draw = lambda: 1.0
    llm_simulator.inject(status=500, count=3)
    with pytest.raises(LLMProviderError) as info:
        m.get_client("anthropic").complete("hi", retry_budget=0.1)
    assert type(info.value) is LLMProviderError and info.value.status_code == 500


def test_x_should_retry_false_stops_a_429_requeue(manager, llm_simulator):
    llm_simulator.inject(status=429, headers={"retry-after": "1", "x-should-retry": "false"})
    with pytest.raises(LLMRateLimitError):
        manager().get_client("anthropic").complete("hi")
    assert llm_simulator.request_count() == 1


def test_a_bug_in_user_middleware_on_a_retry_leaks_no_reservation(manager, llm_simulator):
    m = manager()

    class Flaky(Middleware):
        def process_request(self, request, context):
            if context.get("attempt") == 2:
                raise RuntimeError("user bug")
            return request

    m.add_middleware(Flaky(), "anthropic")
    llm_simulator.inject(status=500, count=3)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            m.get_client("anthropic").complete("hi")
    assert all(key.in_flight == 0 and key.outstanding["requests"] == 0
               for key in m.pool("anthropic").limiter.keys)


def test_native_counting_falls_back_to_the_estimate(manager, llm_simulator):
    m = manager(token_counting="native")
    llm_simulator.inject(status=529, path="/v1/messages/count_tokens", count=5)
    assert m.get_client("anthropic").complete("hi").content == "Simulated reply to: hi"


def test_a_failing_stream_finisher_does_not_skip_the_others(manager, llm_simulator):
    m = manager(max_size=1)

    class Raises(Middleware):
        def process_response(self, response, context):
            raise ValueError("user bug at stream end")

    m.add_middleware(Raises(), "anthropic")
    with pytest.raises(ValueError):
        list(m.get_client("anthropic").stream_complete("hi"))
    limiter = m.pool("anthropic").limiter
    assert all(key.in_flight == 0 for key in limiter.keys)
    assert m.get_status("anthropic")["available_clients"] == 1
    assert m.metrics("anthropic")["total_requests"] == 1
