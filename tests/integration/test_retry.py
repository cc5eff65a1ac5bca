"""RetryMiddleware over real sockets: server hints, budgets, what is never
retried, and how a retry moves to another key. Every wait goes through a
recording fake ``sleep``: nothing here really sleeps."""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Any

import pytest

from llm_sync import (
    LLMAuthenticationError,
    LLMManager,
    LLMProviderError,
    LLMQuotaExceededError,
    LLMRateLimitError,
)
from llm_sync.manager import Clocks
from llm_sync.middleware.base import Middleware
from llm_sync.middleware.logging import LoggingMiddleware
from llm_sync.middleware.metrics import MetricsMiddleware
from llm_sync.middleware.ratelimit import RateLimitMiddleware
from llm_sync.middleware.retry import RetryMiddleware

PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def manager(llm_simulator, sim_config, sleeps):
    def make(**provider: Any) -> LLMManager:
        created = LLMManager(sim_config(**provider), clocks=Clocks(sleep=sleeps.append))
        managers.append(created)
        return created

    managers: list[LLMManager] = []
    yield make
    for created in managers:
        created.close()


def _draw_max(manager: LLMManager, provider: str) -> None:
    """Make the jitter deterministic: always the top of the window."""
    for key in manager.pool(provider).clients:
        key.middleware_chain.get_middleware(RetryMiddleware).draw = lambda: 1.0


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("headers, expected", [
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # -ms wins
    ({"retry-after": "2"}, 2.0),
])
def test_server_hint_is_the_wait(manager, llm_simulator, sleeps, provider, headers, expected):
    llm_simulator.inject(status=503, headers=headers, path=PATHS[provider])
    response = manager().get_client(provider).complete("hi")
    assert response.content == "Simulated reply to: hi"
    assert sleeps == [expected]
    assert llm_simulator.request_count(path=PATHS[provider]) == 2


def test_retry_after_as_an_http_date(manager, llm_simulator, sleeps):
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    llm_simulator.inject(status=503, headers={"retry-after": when})
    manager().get_client("anthropic").complete("hi")
    assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 5.0  # second resolution


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_529_overloaded_recovers_with_exponential_backoff(manager, llm_simulator, sleeps, provider):
    m = manager()
    _draw_max(m, provider)
    llm_simulator.inject(status=529, count=2, path=PATHS[provider])
    assert m.get_client(provider).complete("hi").content == "Simulated reply to: hi"
    assert sleeps == [0.5, 1.0]  # 0.5 s doubling (full jitter drawn at its top)
    assert llm_simulator.request_count(path=PATHS[provider]) == 3


def test_backoff_is_capped_at_8_seconds(manager, llm_simulator, sleeps):
    m = manager(max_retries=6)
    _draw_max(m, "anthropic")
    llm_simulator.inject(status=500, count=6)
    m.get_client("anthropic").complete("hi")
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_retries_stop_at_max_retries(manager, llm_simulator, sleeps):
    llm_simulator.inject(status=500, count=10)
    with pytest.raises(LLMProviderError) as info:
        manager(max_retries=2).get_client("anthropic").complete("hi")
    assert info.value.status_code == 500
    assert llm_simulator.request_count() == 3 and len(sleeps) == 2


def test_max_retries_per_call_overrides_the_provider(manager, llm_simulator):
    llm_simulator.inject(status=500, count=10)
    with pytest.raises(LLMProviderError):
        manager(max_retries=5).get_client("anthropic").complete("hi", max_retries=0)
    assert llm_simulator.request_count() == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_client_errors_are_never_retried(manager, llm_simulator, sleeps, status):
    llm_simulator.inject(status=status)
    with pytest.raises(LLMProviderError) as info:
        manager().get_client("anthropic").complete("hi")
    assert info.value.status_code == status
    assert isinstance(info.value, LLMAuthenticationError) == (status in (401, 403))
    assert llm_simulator.request_count() == 1 and sleeps == []


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_quota_429_is_not_retried_nor_requeued(manager, llm_simulator, sleeps, provider):
    llm_simulator.inject_quota_exceeded(path=PATHS[provider])
    with pytest.raises(LLMQuotaExceededError) as info:
        manager().get_client(provider).complete("hi")
    assert info.value.retry_after is None
    assert llm_simulator.request_count(path=PATHS[provider]) == 1 and sleeps == []


def test_x_should_retry_overrides_the_status(manager, llm_simulator, sleeps):
    llm_simulator.inject(status=503, headers={"x-should-retry": "false"})
    with pytest.raises(LLMProviderError):
        manager().get_client("anthropic").complete("hi")
    assert llm_simulator.request_count() == 1

    llm_simulator.reset()
    llm_simulator.inject(status=400, headers={"x-should-retry": "true"})
    assert manager().get_client("anthropic").complete("hi").content
    assert llm_simulator.request_count() == 2


def test_a_wait_longer_than_the_budget_fails_fast(manager, llm_simulator, sleeps):
    llm_simulator.inject(status=529, headers={"retry-after": "30"})
    started = time.monotonic()
    with pytest.raises(LLMRateLimitError) as info:
        manager(retry_budget=5).get_client("anthropic").complete("hi")
    assert info.value.retry_after == 30
    assert info.value.status_code == 529
    assert sleeps == [] and llm_simulator.request_count() == 1
    assert time.monotonic() - started < 5  # no sleeping past the deadline


def test_the_call_timeout_also_bounds_retry_waits(manager, llm_simulator, sleeps):
    llm_simulator.inject(status=503, headers={"retry-after": "20"})
    with pytest.raises(LLMRateLimitError) as info:
        manager().get_client("anthropic").complete("hi", timeout=3)
    assert info.value.retry_after == 20 and sleeps == []


def test_dropped_connection_is_retried(manager, llm_simulator, sleeps):
    llm_simulator.inject_disconnect()
    assert manager().get_client("openai").complete("hi").content == "Simulated reply to: hi"
    assert len(sleeps) == 1


def test_invalid_json_200_is_retried(manager, llm_simulator, sleeps):
    llm_simulator.inject_invalid_json()
    assert manager().get_client("anthropic").complete("hi").content == "Simulated reply to: hi"
    assert len(sleeps) == 1


def test_rate_limit_429_moves_to_another_key(manager, llm_simulator, sleeps):
    m = manager()
    llm_simulator.inject(status=429, key_index=0, headers={"retry-after": "30"})
    client = m.get_client("anthropic")
    response = client.complete("hi")
    assert response.client_id != "anthropic-0"
    assert sleeps == []  # requeued at once, no backoff on the paused key
    status = {s["client_id"]: s for s in m.get_status("anthropic")["client_statuses"]}
    assert 25 < status["anthropic-0"]["paused_for"] <= 30
    assert status["anthropic-0"]["errors"] == {"LLMRateLimitError": 1}
    assert status[response.client_id]["paused_for"] == 0


def test_stream_open_is_retried(manager, llm_simulator, sleeps):
    llm_simulator.inject(status=529)
    stream = manager().get_client("anthropic").stream_complete("hi")
    assert "".join(stream) == "Simulated reply to: hi"
    assert len(sleeps) == 1


def test_chain_order_and_per_attempt_user_middleware(manager, llm_simulator, sleeps):
    m = manager()
    seen: list[int] = []

    class CountAttempts(Middleware):
        def process_request(self, request, context):
            seen.append(context.get("attempt"))
            return request

    chain = m.pool("anthropic").clients[0].middleware_chain
    assert [type(mw) for mw in chain] == [LoggingMiddleware, MetricsMiddleware, RetryMiddleware,
                                          RateLimitMiddleware]
    m.add_middleware(CountAttempts(), "anthropic")
    llm_simulator.inject(status=529)
    m.get_client("anthropic").complete("hi")
    assert seen == [1, 2]  # the user's middleware runs per attempt
    metrics = m.metrics("anthropic")
    assert metrics["total_requests"] == 1 and metrics["successful_requests"] == 1  # metrics: per call


def test_one_info_line_per_call_and_bodies_only_at_debug(manager, llm_simulator, caplog):
    caplog.set_level(logging.INFO, logger="llm_sync")
    m = manager()
    llm_simulator.inject(status=529)
    m.get_client("anthropic").complete("a secret question", max_tokens=50)
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_sync.calls"]
    assert len(lines) == 1
    assert "anthropic" in lines[0] and "anthropic-" in lines[0] and "attempts=2" in lines[0]
    assert "tokens=" in lines[0] and "latency=" in lines[0]
    assert "a secret question" not in lines[0]

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="llm_sync")
    m.get_client("anthropic").complete("x" * 2000, max_tokens=50)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and r.name == "llm_sync.calls"]
    assert any("xxxx" in line and "chars)" in line for line in debug)  # truncated
    for record in caplog.records:
        for key in llm_simulator.keys:
            assert key not in record.getMessage()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_stream_error_before_the_first_chunk_is_retried(manager, llm_simulator, sleeps, provider):
    llm_simulator.inject_stream_error(after_chunks=0, path=PATHS[provider])
    m = manager()
    chunks = list(m.get_client(provider).stream_complete("hi"))
    assert "".join(chunks) == "Simulated reply to: hi"  # nothing of the failed attempt leaked in
    assert len(sleeps) == 1 and llm_simulator.request_count(path=PATHS[provider]) == 2
    assert m.get_status(provider)["available_clients"] == m.get_status(provider)["total_clients"]


def test_stream_error_after_text_is_not_retried_and_carries_it(manager, llm_simulator, sleeps):
    llm_simulator.inject_stream_error(after_chunks=2)
    received = []
    with pytest.raises(LLMProviderError) as info:
        for chunk in manager().get_client("anthropic").stream_complete("hi there friend"):
            received.append(chunk)
    assert info.value.partial_text == "".join(received) != ""
    assert sleeps == [] and llm_simulator.request_count() == 1
