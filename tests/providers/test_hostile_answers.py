"""Hostile answers: retry hints are finite and capped, bodies of any shape
become typed errors (never a raw TypeError, RecursionError or
OverflowError), and a key echoed in a response header or a request id is
masked everywhere the answer is kept."""

from __future__ import annotations

import email.utils
import math
import pickle
from typing import Any, Iterator

import pytest
import responses

from llm_sync import LLMManager, LLMProviderError
from llm_sync.budget import DEFAULT_MAX_PAUSE
from llm_sync.providers.base import parse_retry_after

BASE = "https://api.hostile.test"
OPENAI_URL = f"{BASE}/v1/chat/completions"
ANTHROPIC_URL = f"{BASE}/v1/messages"
KEY = "token-abc-not-key-like-0042"  # masked because it was sent, not because it looks like a key
NOW = 1_772_366_400.0


# --- retry hints -------------------------------------------------------------------
@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after": "1e9"}, DEFAULT_MAX_PAUSE),
    ({"retry-after": "inf"}, DEFAULT_MAX_PAUSE),
    ({"retry-after": "1" * 400}, DEFAULT_MAX_PAUSE),
    ({"retry-after-ms": "1e12"}, DEFAULT_MAX_PAUSE),
    ({"retry-after": "-5"}, 0.0),
    ({"retry-after": "-inf"}, 0.0),
    ({"retry-after": "nan"}, None),
    ({"retry-after-ms": "nan"}, None),
    ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
    ({"retry-after": "soon"}, None),
    ({}, None),
    ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, DEFAULT_MAX_PAUSE),
    ({"retry-after": email.utils.formatdate(NOW + 7, usegmt=True)}, 7.0),
    ({"retry-after": email.utils.formatdate(NOW - 70, usegmt=True)}, 0.0),
    ({"retry-after": "Mon, 99 Foo 99999 99:99:99 GMT"}, None),
])
def test_parse_retry_after_is_finite_and_capped(headers, expected):
    found = parse_retry_after(headers, now=NOW)
    assert found == (None if expected is None else pytest.approx(expected))
    assert found is None or (math.isfinite(found) and 0 <= found <= DEFAULT_MAX_PAUSE)


def test_parse_retry_after_takes_the_callers_maximum():
    assert parse_retry_after({"retry-after": "1e9"}, maximum=5.0) == 5.0


# --- hostile bodies ----------------------------------------------------------------
def manager(kind: str, **settings: Any) -> LLMManager:
    entry = {"api_keys": [KEY], "models": ["m"], "max_retries": 0, "base_url": BASE, **settings}
    return LLMManager.from_dict({"providers": {kind: entry}})


@pytest.fixture
def openai() -> Iterator[Any]:
    with manager("openai") as m:
        yield m.get_client("openai")


@pytest.fixture
def anthropic() -> Iterator[Any]:
    with manager("anthropic") as m:
        yield m.get_client("anthropic")


def openai_body(message: Any = None, usage: Any = None, choices: Any = None) -> dict[str, Any]:
    return {
        "id": "c", "model": "m",
        "choices": choices if choices is not None else [
            {"index": 0, "message": message or {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": usage if usage is not None else {"prompt_tokens": 3, "completion_tokens": 1},
    }


DEEP = b"[" * 100_000 + b"]" * 100_000


def assert_invalid_response(error: LLMProviderError) -> None:
    assert type(error) is LLMProviderError
    assert (error.status_code, error.error_type) == (502, "invalid_response")


@pytest.mark.parametrize("body", [
    b'{"choices": ' + DEEP + b"}",
    DEEP,
    openai_body(message={"role": "assistant", "content": 42}),
    openai_body(message={"role": "assistant", "content": ["a", "b"]}),
    openai_body(message={"role": "assistant", "content": {"text": "hi"}}),
    openai_body(choices={"0": {"message": {"content": "hi"}}}),
    {"id": "c", "model": ["m"], "choices": [{"message": {"content": "hi"}}]},
])
def test_openai_hostile_bodies_are_a_typed_502(mock, openai, body):
    mock.add(responses.POST, OPENAI_URL, **({"body": body} if isinstance(body, bytes) else {"json": body}))
    with pytest.raises(LLMProviderError) as info:
        openai.complete("Hi")
    assert_invalid_response(info.value)


@pytest.mark.parametrize("usage, expected", [
    (b'{"prompt_tokens": 1e999, "completion_tokens": 1}', (0, 1)),
    (b'{"prompt_tokens": ' + b"9" * 4000 + b', "completion_tokens": 2}', (0, 2)),
    (b'{"prompt_tokens": "many", "completion_tokens": true}', (0, 0)),
    (b'{"prompt_tokens": 1000000000000000, "completion_tokens": -4}', (0, 0)),
    (b'{"prompt_tokens": 7.0, "completion_tokens": 2.5}', (7, 0)),
], ids=["inf", "huge-int", "str-bool", "1e15-negative", "floats"])
def test_openai_absurd_usage_is_dropped_not_raised(mock, openai, usage, expected):
    body = b'{"id": "c", "model": "m", "choices": [{"message": {"content": "hi"}}], "usage": ' + usage + b"}"
    mock.add(responses.POST, OPENAI_URL, body=body)
    response = openai.complete("Hi")
    assert response.content == "hi"
    assert (response.usage.input_tokens, response.usage.output_tokens) == expected  # 0: unknown, the estimate stands


@pytest.mark.parametrize("body", [
    DEEP,
    {"content": [{"type": "text", "text": 7}], "model": "m"},
    {"content": [{"type": "text", "text": "hi"}], "model": {"name": "m"}},
    {"content": [{"type": "text", "text": "hi"}], "stop_reason": ["end_turn"]},
])
def test_anthropic_hostile_bodies_are_a_typed_502(mock, anthropic, body):
    mock.add(responses.POST, ANTHROPIC_URL, **({"body": body} if isinstance(body, bytes) else {"json": body}))
    with pytest.raises(LLMProviderError) as info:
        anthropic.complete("Hi")
    assert_invalid_response(info.value)


def sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


@pytest.mark.parametrize("event", [
    b'{"choices": [{"index": 0, "delta": {"content": 42}}]}',
    b'{"choices": [{"index": 0, "delta": {"content": ["a"]}}]}',
    b'{"choices": [{"index": 0, "delta": {"content": {"t": 1}}}]}',
    b'{"choices": {"0": {"delta": {"content": "x"}}}}',
    b'{"choices": 5}',
    b'{"model": 5, "choices": []}',
    b'{"choices": ' + DEEP + b"}",
    b'{"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": 9}]}',
])
def test_openai_hostile_stream_events_are_a_typed_502(mock, openai, event):
    body = sse(b'{"choices": [{"index": 0, "delta": {"content": "ok "}}]}', event, b"[DONE]")
    mock.add(responses.POST, OPENAI_URL, body=body, content_type="text/event-stream")
    with pytest.raises(LLMProviderError) as info:
        with openai.stream("Hi") as stream:
            for _ in stream:
                pass
    assert_invalid_response(info.value)


def test_openai_stream_with_absurd_usage_ends_well(mock, openai):
    body = sse(b'{"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}',
               b'{"choices": [], "usage": {"prompt_tokens": 1e999, "completion_tokens": 1000000000000000}}',
               b"[DONE]")
    mock.add(responses.POST, OPENAI_URL, body=body, content_type="text/event-stream")
    with openai.stream("Hi") as stream:
        assert stream.read() == "ok"
    assert (stream.response.usage.input_tokens, stream.response.usage.output_tokens) == (0, 0)


@pytest.mark.parametrize("event", [
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}}',
    b'event: message_start\ndata: {"type": "message_start", "message": {"model": 5}}',
    b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": {"x": 1}}}',
    b'event: message_delta\ndata: ' + DEEP,
])
def test_anthropic_hostile_stream_events_are_a_typed_502(mock, anthropic, event):
    start = b'event: message_start\ndata: {"type": "message_start", "message": {"model": "m", "id": "x"}}\n\n'
    body = start + event + b"\n\n" + b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
    mock.add(responses.POST, ANTHROPIC_URL, body=body, content_type="text/event-stream")
    with pytest.raises(LLMProviderError) as info:
        with anthropic.stream("Hi") as stream:
            stream.read()
    assert_invalid_response(info.value)


@pytest.mark.parametrize("body", [
    DEEP,
    {"error": {"message": 42, "type": ["x"]}},
    {"error": {"message": {"m": 1}, "type": "rate_limit_error"}},
    {"error": ["x"], "request_id": {"id": 1}},
])
@pytest.mark.parametrize("kind, url", [("openai", OPENAI_URL), ("anthropic", ANTHROPIC_URL)])
def test_hostile_error_bodies_are_typed_errors(mock, kind, url, body):
    mock.add(responses.POST, url, status=429, **({"body": body} if isinstance(body, bytes) else {"json": body}))
    with manager(kind) as m:
        with pytest.raises(LLMProviderError) as info:
            m.get_client(kind).complete("Hi", timeout=5)
    assert info.value.status_code == 429
    assert info.value.request_id is None or isinstance(info.value.request_id, str)


# --- echoed keys -------------------------------------------------------------------
def assert_no_key(error: BaseException) -> None:
    for text in (str(error), repr(error), str(getattr(error, "headers", "")), str(getattr(error, "request_id", ""))):
        assert KEY not in text
    assert KEY.encode() not in pickle.dumps(error)
    assert KEY not in str(pickle.loads(pickle.dumps(error)).headers)


@pytest.mark.parametrize("kind, url, id_header", [("openai", OPENAI_URL, "x-request-id"),
                                                  ("anthropic", ANTHROPIC_URL, "request-id")])
def test_an_echoed_key_is_masked_in_errors(mock, kind, url, id_header):
    echo = {"x-echo": KEY, id_header: f"req-{KEY}", f"x-{KEY}": "1"}
    mock.add(responses.POST, url, status=500, headers=echo,
             json={"error": {"message": f"bad key {KEY}", "type": "api_error"}, "request_id": KEY})
    with manager(kind) as m:
        with pytest.raises(LLMProviderError) as info:
            m.get_client(kind).complete("Hi")
    assert_no_key(info.value)
    assert info.value.headers["x-echo"] == "***"
    assert info.value.request_id == "req-***"


def test_an_echoed_key_in_a_body_request_id_is_masked(mock):
    mock.add(responses.POST, ANTHROPIC_URL, status=400,
             json={"type": "error", "error": {"type": "invalid_request_error", "message": "no"},
                   "request_id": f"id-{KEY}"})
    with manager("anthropic") as m:
        with pytest.raises(LLMProviderError) as info:
            m.get_client("anthropic").complete("Hi")
    assert info.value.request_id == "id-***"
    assert_no_key(info.value)


def test_an_echoed_key_is_masked_in_responses_and_stream_headers(mock, openai):
    mock.add(responses.POST, OPENAI_URL, json=openai_body(), headers={"x-echo": KEY, "x-request-id": KEY})
    response = openai.complete("Hi")
    assert response.headers["x-echo"] == "***" and response.request_id == "***"
    assert KEY not in repr(response) and KEY.encode() not in pickle.dumps(response)
    mock.add(responses.POST, OPENAI_URL, body=sse(b'{"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]}',
                                                 b"[DONE]"),
             content_type="text/event-stream", headers={"x-echo": f"Bearer {KEY}"})
    with openai.stream("Hi") as stream:
        assert KEY not in str(stream.headers)
        stream.read()
    assert KEY not in str(stream.response.headers)


def test_a_configured_gateway_token_echoed_back_is_masked(mock):
    """A credential header from the config (not the key itself) echoed in an
    error body is masked too."""
    import responses as _responses

    from llm_sync import LLMManager
    from llm_sync.errors import LLMProviderError

    token = "gw-token-QwErTy-123"
    with LLMManager.from_dict({"providers": {"openai": {
            "api_keys": ["sk-gw-0001"], "base_url": "https://gw.test/v1", "max_retries": 0,
            "headers": {"api-key": token}}}}) as manager:
        mock.add(_responses.POST, "https://gw.test/v1/chat/completions", status=400,
                 json={"error": {"message": f"bad token {token}", "type": "invalid_request_error"}},
                 headers={"x-echo": token})
        with pytest.raises(LLMProviderError) as caught:
            manager.get_client("openai").complete("hi")
    assert token not in str(caught.value) and token not in repr(caught.value)
    assert token not in str(caught.value.headers)
