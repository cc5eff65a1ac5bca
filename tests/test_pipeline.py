"""The call pipeline: per-call extras on the wire, options with UNSET,
and accounting that stays right whichever middleware a user removes."""

from __future__ import annotations

import json
import math
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from llm_sync import UNSET, LLMManager, Message
from llm_sync.call import CallContext, CallOptions, Requeue
from llm_sync.errors import LLMRateLimitError, LLMValidationError
from llm_sync.middleware.base import Middleware
from llm_sync.middleware.ratelimit import RateLimitMiddleware
from llm_sync.middleware.retry import RetryMiddleware
from llm_sync.models import LLMResponse, Usage

BASES = {"anthropic": "https://api.anthropic.test", "openai": "https://api.openai.test"}
URLS = {"anthropic": BASES["anthropic"] + "/v1/messages", "openai": BASES["openai"] + "/v1/chat/completions"}
KEYS = ["sk-test-AAAA-0001", "sk-test-BBBB-0002"]
OK = {
    "anthropic": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                  "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 5, "output_tokens": 2}},
    "openai": {"id": "c1", "object": "chat.completion", "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
}
LIMITS = {"requests_per_minute": 600, "input_tokens_per_minute": 600_000, "output_tokens_per_minute": 600_000}


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({
        "providers": {name: {"api_keys": KEYS, "base_url": BASES[name], "max_retries": 2,
                             "rate_limits": LIMITS} for name in BASES},
        "pool": {"max_size": 4},
    }) as m:
        yield m


def _settled(manager: LLMManager, provider: str) -> None:
    """Nothing reserved, in flight or leased is left behind."""
    pool = manager.pool(provider)
    assert pool.available == pool.max_size
    for key in pool.limiter.keys:
        assert key.in_flight == 0, key
        assert all(v == pytest.approx(0.0, abs=1e-6) for v in key.outstanding.values()), key.outstanding
        assert all(v == pytest.approx(0.0, abs=1e-6) for v in key.unsent.values()), key.unsent


def _levels(manager: LLMManager, provider: str) -> list[dict[str, float]]:
    limiter = manager.pool(provider).limiter
    return [{d: v.level for d, v in limiter.backend.snapshot(key.scope).buckets.items()} for key in limiter.keys]


# --- extras on the wire -------------------------------------------------
@pytest.mark.parametrize("provider", BASES)
def test_extra_headers_query_and_body_reach_the_request(mock: responses.RequestsMock, manager: LLMManager,
                                                         provider: str):
    mock.add(responses.POST, URLS[provider], json=OK[provider])
    client = manager.get_client(provider)
    client.complete("hi", extra_headers={"X-Trace": "abc", "anthropic-beta": "tools-1"},
                    extra_query={"api-version": "2024-10-21", "n": [1, 2]},
                    extra_body={"metadata": {"user_id": "u1"}, "top_k": 3}, seed=7)
    sent = mock.calls[0].request
    assert sent.headers["X-Trace"] == "abc"
    assert sent.headers["anthropic-beta"] == "tools-1"
    assert parse_qs(urlsplit(sent.url).query) == {"api-version": ["2024-10-21"], "n": ["1", "2"]}
    body = json.loads(sent.body)
    assert body["metadata"] == {"user_id": "u1"} and body["top_k"] == 3 and body["seed"] == 7
    assert "headers" not in body and "extra_headers" not in body
    _settled(manager, provider)


def test_extra_body_wins_over_built_fields(mock: responses.RequestsMock, manager: LLMManager):
    mock.add(responses.POST, URLS["openai"], json=OK["openai"])
    manager.get_client("openai").complete("hi", max_tokens=10, extra_body={"max_tokens": 99})
    assert json.loads(mock.calls[0].request.body)["max_tokens"] == 99


@pytest.mark.parametrize("kwargs, word", [
    ({"headers": {"X-A": "1"}}, "extra_headers"),
    ({"extra_headers": {"x-api-key": "sk-other"}}, "api_keys"),
    ({"extra_headers": {"Authorization": "Bearer x"}}, "api_keys"),
    ({"extra_headers": {"X-A": "two\r\nlines"}}, "X-A"),
    ({"extra_headers": {"X-A": "snow☃"}}, "X-A"),
    ({"extra_headers": {"X-A": 1}}, "X-A"),
    ({"extra_headers": {"bad name": "1"}}, "header name"),
    ({"extra_headers": ["X-A"]}, "extra_headers"),
    ({"extra_query": {"a": object()}}, "extra_query"),
    ({"extra_query": {"": "1"}}, "extra_query"),
    ({"extra_body": {"x": float("nan")}}, "extra_body"),
    ({"extra_body": {"x": object()}}, "extra_body"),
    ({"extra_body": {"stream": True}}, "stream"),
    ({"seed": float("inf")}, "extras"),
    ({"timeout": float("nan")}, "timeout"),
    ({"timeout": math.inf}, "timeout"),
    ({"retry_budget": -1}, "retry_budget"),
    ({"max_retries": -1}, "max_retries"),
])
def test_bad_call_options_fail_before_any_io(mock: responses.RequestsMock, manager: LLMManager,
                                             kwargs: dict[str, Any], word: str):
    client = manager.get_client("anthropic")
    with pytest.raises(LLMValidationError, match=word):
        client.complete("hi", **kwargs)
    with pytest.raises(LLMValidationError, match=word):
        client.submit("hi", **kwargs)
    assert not mock.calls
    _settled(manager, "anthropic")


# --- options --------------------------------------------------------------
def test_unset_means_configured_and_none_means_no_limit(manager: LLMManager):
    pipeline = manager.get_client("anthropic")._pipeline
    pipeline.total_timeout = 30.0
    assert pipeline.deadline(CallOptions()) is not None
    assert pipeline.deadline(CallOptions(timeout=None)) is None
    assert pipeline.budget(CallOptions(retry_budget=None)).retry_deadline is None
    assert pipeline.budget(CallOptions()).retry_deadline is not None
    assert pipeline.budget(CallOptions(max_retries=5)).retries_left == 5
    assert pipeline.budget(CallOptions()).retries_left == 2
    assert repr(UNSET) == "UNSET" and not UNSET


def test_call_context_is_typed_and_a_mapping():
    context = CallContext(endpoint="anthropic", client_id="anthropic-0", model="m", stream=False)
    assert context["client_id"] == "anthropic-0" and context.get("provider") == "anthropic"
    assert context.setdefault("started", -1.0) == context.started
    context["custom"] = "value"
    context["attempt"] = 3
    assert context.attempt == 3 and context["custom"] == "value" and "custom" in context
    assert context.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        del context["client_id"]
    with pytest.raises(KeyError):
        context["deadline"] = 1.0
    del context["custom"]
    assert "custom" not in context


# --- accounting whatever the chain -----------------------------------------
def _strip(manager: LLMManager, provider: str, *classes: type) -> None:
    for key in manager.pool(provider).clients:
        for cls in classes:
            key.middleware_chain.remove(cls)


@pytest.mark.parametrize("removed", [(), (RetryMiddleware,), (RateLimitMiddleware,),
                                     (RetryMiddleware, RateLimitMiddleware)])
@pytest.mark.parametrize("provider", BASES)
def test_a_429_then_an_answer_settles_everything(mock: responses.RequestsMock, manager: LLMManager,
                                                 provider: str, removed: tuple[type, ...]):
    _strip(manager, provider, *removed)
    mock.add(responses.POST, URLS[provider], status=429, json={"error": {"type": "rate_limit_error",
                                                                         "message": "slow"}},
             headers={"retry-after": "0"})
    mock.add(responses.POST, URLS[provider], json=OK[provider])
    response = manager.get_client(provider).complete("hi")
    assert response.content == "hi"
    assert len(mock.calls) == 2
    _settled(manager, provider)
    statuses = manager.get_status(provider)["client_statuses"]
    assert sum(s["total_requests"] for s in statuses) == 1
    assert sum(s["failed_requests"] for s in statuses) == 0
    paused = any(s["paused_for"] > 0 or s["errors"] for s in statuses)
    assert paused  # the 429 shows on the key that got it


@pytest.mark.parametrize("removed", [(), (RetryMiddleware,), (RateLimitMiddleware,)])
def test_a_failed_call_settles_everything(mock: responses.RequestsMock, manager: LLMManager,
                                          removed: tuple[type, ...]):
    _strip(manager, "openai", *removed)
    for _ in range(3):
        mock.add(responses.POST, URLS["openai"], status=503, json={"error": {"message": "busy"}})
    with pytest.raises(Exception) as caught:
        manager.get_client("openai").complete("hi", max_retries=0)
    assert getattr(caught.value, "status_code", None) == 503
    _settled(manager, "openai")


def test_a_middleware_answering_without_sending_refunds_the_reservation(mock: responses.RequestsMock,
                                                                         manager: LLMManager):
    class Cache(Middleware):
        def handle(self, request: Any, context: Any, call_next: Any) -> Any:
            return LLMResponse(content="cached", usage=Usage())

    before = _levels(manager, "anthropic")
    manager.add_middleware(Cache(), "anthropic")
    assert manager.get_client("anthropic").complete("hi").content == "cached"
    assert not mock.calls
    _settled(manager, "anthropic")
    after = _levels(manager, "anthropic")
    for b, a in zip(before, after):
        for dimension in b:
            assert a[dimension] == pytest.approx(b[dimension], abs=1.0), dimension


def test_a_requeue_never_reaches_the_caller_nor_marks_its_error(mock: responses.RequestsMock,
                                                               manager: LLMManager):
    seen: list[BaseException] = []

    class Spy(Middleware):
        def process_error(self, error: Any, context: Any) -> None:
            seen.append(error)

    manager.add_middleware(Spy(), "anthropic")
    for _ in range(3):
        mock.add(responses.POST, URLS["anthropic"], status=429,
                 json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
                 headers={"retry-after": "0"})
    with pytest.raises(LLMRateLimitError) as caught:
        manager.get_client("anthropic").complete("hi", max_retries=1)
    assert len(mock.calls) == 2  # first send + one requeue, then the budget is spent
    assert not isinstance(caught.value, Requeue)
    assert not hasattr(caught.value, "requeued")
    assert caught.value.local is False and caught.value.status_code == 429  # the server said so
    # user middleware sees the requeued 429 only as the end of its pass
    # when the requeue passes through it: process_error is for calls that end.
    assert all(isinstance(e, LLMRateLimitError) for e in seen)
    _settled(manager, "anthropic")


def test_messages_objects_still_accepted(mock: responses.RequestsMock, manager: LLMManager):
    mock.add(responses.POST, URLS["anthropic"], json=OK["anthropic"])
    assert manager.get_client("anthropic").complete([Message("user", "hi")], timeout=None).content == "hi"


def test_calls_after_close_raise_llm_closed_error(mock: responses.RequestsMock):
    from llm_sync import LLMClosedError

    manager = LLMManager.from_dict({"providers": {"anthropic": {"api_keys": KEYS, "base_url": BASES["anthropic"]}}})
    client = manager.get_client("anthropic")
    manager.close()
    for call in (lambda: client.complete("hi"), lambda: client.stream("hi"), lambda: client.submit("hi"),
                 lambda: client.complete_batch(["a", "b"]), lambda: manager.get_client("anthropic"),
                 lambda: manager.get_status("anthropic")):
        with pytest.raises(LLMClosedError):
            call()
    assert not mock.calls


def test_a_limit_enforced_locally_is_told_from_a_server_429(mock: responses.RequestsMock):
    tight = {"requests_per_minute": 1}
    with LLMManager.from_dict({"providers": {"anthropic": {"api_keys": KEYS[:1], "base_url": BASES["anthropic"],
                                                           "rate_limits": tight}}}) as manager:
        mock.add(responses.POST, URLS["anthropic"], json=OK["anthropic"])
        client = manager.get_client("anthropic")
        client.complete("hi")
        with pytest.raises(LLMRateLimitError) as caught:
            client.complete("hi", timeout=0.5)  # the next request fits in ~60 s, not 0.5 s
    assert caught.value.local is True and caught.value.status_code is None
    assert caught.value.retry_after is not None and caught.value.retry_after > 0.5
    assert len(mock.calls) == 1  # refused before sending


def _events_around_a_429(mock: responses.RequestsMock, manager: LLMManager, retry_after: str = "0.01") -> list[str]:
    """The limiter's steps while a call meets a server 429 and is requeued."""
    limiter = manager.pool("anthropic").limiter
    events: list[str] = []
    for name in ("settle", "pause"):
        real = getattr(limiter.backend, name)

        def spy(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            events.append("refund" if _name == "settle" and not events else _name)
            return _real(*args, **kwargs)

        setattr(limiter.backend, name, spy)
    real_changed = limiter._changed

    def changed() -> None:
        if events:
            events.append("wake")
        real_changed()

    limiter._changed = changed  # type: ignore[method-assign]
    mock.add(responses.POST, URLS["anthropic"], status=429, json={"type": "error", "error": {
        "type": "rate_limit_error", "message": "slow down"}}, headers={"retry-after": retry_after})
    mock.add(responses.POST, URLS["anthropic"], json=OK["anthropic"])
    manager.get_client("anthropic").complete("hi")
    return events


def test_a_429_pauses_its_key_before_the_refund_wakes_anyone(mock: responses.RequestsMock, manager: LLMManager):
    events = _events_around_a_429(mock, manager)
    assert events[:3] == ["refund", "pause", "wake"], events  # no waiter sees the key before its pause
    _settled(manager, "anthropic")


def test_without_rate_limit_middleware_a_429_refund_still_wakes_the_line(mock: responses.RequestsMock,
                                                                          manager: LLMManager):
    for key in manager.pool("anthropic").clients:
        key.middleware_chain.remove(RateLimitMiddleware)
    events = _events_around_a_429(mock, manager)
    assert "pause" not in events and events[:2] == ["refund", "wake"], events
    _settled(manager, "anthropic")


def test_a_429_swallowed_before_the_pause_still_wakes_the_line_when_the_pass_ends(
        mock: responses.RequestsMock, manager: LLMManager):
    class Fallback(Middleware):  # innermost: answers for a 429, so nothing pauses the key
        def handle(self, request: Any, context: Any, call_next: Any) -> Any:
            try:
                return call_next(request)
            except LLMRateLimitError:
                return LLMResponse(content="fallback", model="m", provider="anthropic", usage=Usage())

    manager.add_middleware(Fallback(), "anthropic")
    events = _events_around_a_429(mock, manager, retry_after="3600")  # too long to requeue: the error stands
    assert "pause" not in events and events[:2] == ["refund", "wake"], events
