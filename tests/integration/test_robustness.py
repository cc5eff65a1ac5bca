"""Behaviours found by review: streams ended from another thread, abandoned
streams still accounted, fork safety, connection reuse, proxies."""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time

import pytest

from llm_sync import LLMManager, LLMProviderError, Message, MessageRole
from llm_sync.middleware.base import Middleware
from one_shot_server import StallingStream

PROMPT = [Message(MessageRole.USER, "Write a long story about a lighthouse keeper and the sea")]


def test_close_from_another_thread_wakes_a_blocked_reader():
    server = StallingStream(20)
    config = {"providers": {"anthropic": {"api_keys": ["sk-stall-1"], "base_url": server.base_url,
                                          "timeout": {"connect": 5, "read": 30}}},
              "pool": {"max_size": 1}}
    try:
        with LLMManager(config) as manager:
            stream = manager.get_client("anthropic").stream_complete("hi")
            assert next(stream) == "Once"
            outcome: list[object] = []
            reader = threading.Thread(target=lambda: outcome.append(list(stream)))
            reader.start()
            time.sleep(0.2)  # let the reader block in recv(); the assertion below does not depend on it
            started = time.monotonic()
            stream.close()
            reader.join(10)
            closed_in = time.monotonic() - started
            assert not reader.is_alive()
            assert outcome == [[]]  # ended quietly: the caller closed it
            assert closed_in < 5, closed_in  # not the 30 s read timeout
            assert manager.get_status("anthropic")["available_clients"] == 1
    finally:
        server.close()


def test_abandoned_stream_is_counted_and_middleware_sees_the_cancel(make_manager):
    seen: list[object] = []

    class Watch(Middleware):
        def process_response(self, response, context):
            seen.append(("response", response.content))
            return response

        def process_error(self, error, context):
            seen.append(("error", getattr(error, "cancelled", False), error.partial_text))

    manager = make_manager(max_size=2)
    manager.add_middleware(Watch(), "anthropic")
    for chunk in manager.get_client("anthropic").stream_complete(PROMPT, max_tokens=50):
        first = chunk
        break
    status = manager.get_status("anthropic")
    assert status["available_clients"] == 2
    assert sum(s["total_requests"] for s in status["client_statuses"]) == 1
    assert sum(s["failed_requests"] for s in status["client_statuses"]) == 0
    assert seen == [("error", True, first)]


def test_manager_close_closes_open_streams(make_manager):
    manager = make_manager(max_size=1)
    stream = manager.get_client("anthropic").stream_complete(PROMPT)
    next(stream)
    manager.close()
    assert stream.closed


def test_sequential_calls_reuse_one_connection(make_manager, llm_simulator):
    client = make_manager(max_size=16).get_client("openai")
    for i in range(20):
        client.complete(f"call {i}")
    assert llm_simulator.connection_count == 1  # LIFO: the warm session is reused


def _call_in_child(client, queue) -> None:
    try:
        queue.put(client.complete("from the child").content)
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(repr(exc))


@pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX-only")
def test_client_created_before_fork_uses_its_own_connection_in_the_child(make_manager, llm_simulator):
    client = make_manager(max_size=1).get_client("anthropic")
    client.complete("warm up")
    assert llm_simulator.connection_count == 1
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_call_in_child, args=(client, queue))
    child.start()
    answer = queue.get(timeout=20)
    child.join(20)
    assert answer == "Simulated reply to: from the child"
    assert llm_simulator.connection_count == 2  # the child did not reuse the parent's socket
    assert client.complete("parent again").content == "Simulated reply to: parent again"


def test_loopback_servers_bypass_environment_proxies(make_manager, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert make_manager().get_client("anthropic").complete("hi").content == "Simulated reply to: hi"


def test_batch_keeps_a_non_llm_exception_in_place(make_manager):
    class Boom(Middleware):
        def process_request(self, request, context):
            if request.messages[-1].content == "bad":
                raise KeyError("user middleware bug")
            return request

    manager = make_manager()
    manager.add_middleware(Boom(), "anthropic")
    results = manager.get_client("anthropic").complete_batch(["a", "bad", "c"], return_exceptions=True)
    assert results[0].content == "Simulated reply to: a"
    assert isinstance(results[1], KeyError)
    assert results[2].content == "Simulated reply to: c"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_invalid_json_200_is_a_typed_error_and_returns_the_lease(make_manager, llm_simulator, provider):
    manager = make_manager(max_size=1, max_retries=0)
    llm_simulator.inject_invalid_json()
    with pytest.raises(LLMProviderError) as info:
        manager.get_client(provider).complete("hi")
    assert info.value.error_type == "invalid_response"
    assert manager.get_status(provider)["available_clients"] == 1


def test_without_rate_limit_middleware_keys_are_not_stuck_probing(make_manager):
    from llm_sync.middleware.ratelimit import RateLimitMiddleware

    manager = make_manager(max_size=8)
    for key in manager.pool("anthropic").clients:
        assert key.middleware_chain.remove(RateLimitMiddleware)
    results = manager.get_client("anthropic").complete_batch([f"q{i}" for i in range(24)], max_workers=8)
    assert len(results) == 24
    limiter = manager.pool("anthropic").limiter
    assert all(not key.probing and key.in_flight == 0 for key in limiter.keys)
