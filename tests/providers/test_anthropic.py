"""Anthropic wire format: request body and headers, response parsing, count_tokens, base URLs."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import responses

from llm_sync import LLMManager, LLMProvider, Message, MessageRole
from llm_sync.errors import LLMProviderError

BASE = "https://api.anthropic.test"
URL = f"{BASE}/v1/messages"
COUNT_URL = f"{BASE}/v1/messages/count_tokens"
KEY0 = "sk-ant-test-SECRET-0001"
KEY1 = "sk-ant-test-SECRET-0002"
MODEL = "claude-test-model"

FULL_RESPONSE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "content": [
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "toolu_1", "name": "noop", "input": {}},
        {"type": "text", "text": ", world!"},
    ],
    "model": "claude-3-5-sonnet-20241022",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 6,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 200,
    },
}


def make_manager(base_url: str = BASE, keys: tuple[str, ...] = (KEY0,), **provider: Any) -> LLMManager:
    return LLMManager.from_dict({
        "providers": {
            "anthropic": {
                "api_keys": list(keys),
                "models": [MODEL],
                "base_url": base_url,
                "max_retries": 0,
                **provider,
            }
        },
    })


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with make_manager() as m:
        yield m


@pytest.fixture
def client(manager: LLMManager):
    return manager.get_client("anthropic")


def sent_body(mock: responses.RequestsMock, index: int = 0) -> dict[str, Any]:
    return json.loads(mock.calls[index].request.body)


def add_ok(mock: responses.RequestsMock, url: str = URL, **kw: Any) -> None:
    mock.add(responses.POST, url, json=kw.pop("json", FULL_RESPONSE), status=200, **kw)


# --- request ------------------------------------------------------------------


def test_headers_carry_key_version_and_content_type(mock, client):
    add_ok(mock)
    client.complete("Hi")
    assert len(mock.calls) == 1
    headers = mock.calls[0].request.headers
    assert headers["x-api-key"] == KEY0
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"].startswith("application/json")
    assert "authorization" not in {k.lower() for k in headers}
    assert headers["User-Agent"].startswith("llm-sync/")


def test_minimal_body_is_exact(mock, client):
    add_ok(mock)
    client.complete("Hi")
    assert sent_body(mock) == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_full_body_is_exact(mock, client):
    add_ok(mock)
    client.complete(
        [
            Message(MessageRole.USER, "Hi"),
            Message(MessageRole.ASSISTANT, "Hello"),
            {"role": "user", "content": "Tell me a joke"},
        ],
        model="claude-other",
        max_tokens=50,
        temperature=0.25,
        system="Be brief.",
        stop=["END", "STOP"],
        top_k=5,
        metadata={"user_id": "u-1"},
    )
    assert sent_body(mock) == {
        "model": "claude-other",
        "max_tokens": 50,
        "temperature": 0.25,
        "system": "Be brief.",
        "stop_sequences": ["END", "STOP"],
        "top_k": 5,
        "metadata": {"user_id": "u-1"},
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Tell me a joke"},
        ],
    }


def test_system_message_goes_top_level_not_in_messages(mock, client):
    add_ok(mock)
    client.complete([Message(MessageRole.SYSTEM, "You are terse."), Message(MessageRole.USER, "Hi")])
    body = sent_body(mock)
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])


def test_system_argument_and_system_messages_are_both_sent_top_level(mock, client):
    add_ok(mock)
    client.complete(
        [Message("system", "Rule two."), Message("user", "Hi")],
        system="Rule one.",
    )
    body = sent_body(mock)
    assert "Rule one." in body["system"] and "Rule two." in body["system"]
    assert body["system"].index("Rule one.") < body["system"].index("Rule two.")
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert "Rule" not in json.dumps(body["messages"])


def test_stop_string_becomes_stop_sequences_list(mock, client):
    add_ok(mock)
    client.complete("Hi", stop="###")
    body = sent_body(mock)
    assert body["stop_sequences"] == ["###"]
    assert "stop" not in body


def test_temperature_zero_is_sent(mock, client):
    add_ok(mock)
    client.complete("Hi", temperature=0)
    assert sent_body(mock)["temperature"] == 0


def test_stream_body_sets_stream_true(mock, client):
    sse = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":1}}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    mock.add(responses.POST, URL, body=sse, status=200, content_type="text/event-stream")
    with client.stream("Hi") as stream:
        assert list(stream) == []
    body = sent_body(mock)
    assert body["stream"] is True
    assert body["max_tokens"] == 1024
    assert mock.calls[0].request.headers["accept"] == "text/event-stream"


def test_configured_headers_are_sent(mock):
    add_ok(mock)
    with make_manager(headers={"anthropic-beta": "tools-2024-05-16"}) as m:
        m.get_client("anthropic").complete("Hi")
    headers = mock.calls[0].request.headers
    assert headers["anthropic-beta"] == "tools-2024-05-16"
    assert headers["anthropic-version"] == "2023-06-01"


# --- response -----------------------------------------------------------------


def test_parse_full_response(mock, client):
    add_ok(mock, headers={"request-id": "req_018EeWyXxfu5pfWkrYcMdjWG"})
    response = client.complete("Hi")
    assert response.content == "Hello, world!"
    assert response.model == "claude-3-5-sonnet-20241022"
    assert response.stop_reason == "end_turn"
    assert response.usage.input_tokens == 12
    assert response.usage.output_tokens == 6
    assert response.usage.total_tokens == 18
    assert response.usage.cache_creation_input_tokens == 100
    assert response.usage.cache_read_input_tokens == 200
    assert response.request_id == "req_018EeWyXxfu5pfWkrYcMdjWG"
    assert response.client_id == "anthropic-0"
    assert response.provider is LLMProvider.ANTHROPIC
    assert response.latency_ms >= 0
    assert response.raw == FULL_RESPONSE
    assert KEY0 not in repr(response)


@pytest.mark.parametrize("reason", ["end_turn", "max_tokens", "stop_sequence", "tool_use"])
def test_stop_reasons_pass_through(mock, client, reason):
    add_ok(mock, json={**FULL_RESPONSE, "stop_reason": reason})
    assert client.complete("Hi").stop_reason == reason


def test_response_without_usage_or_content(mock, client):
    add_ok(mock, json={"type": "message", "content": [], "model": "m", "stop_reason": "max_tokens"})
    response = client.complete("Hi")
    assert response.content == ""
    assert response.usage.input_tokens == 0 and response.usage.output_tokens == 0
    assert response.stop_reason == "max_tokens"
    assert response.request_id is None


def test_client_ids_name_keys_never_the_keys(mock):
    add_ok(mock)
    add_ok(mock)
    with make_manager(keys=(KEY0, KEY1)) as m:
        client = m.get_client("anthropic")
        ids = {client.complete("Hi").client_id, client.complete("Hi").client_id}
        status = m.get_status("anthropic")
    assert ids == {"anthropic-0", "anthropic-1"}
    sent_keys = {call.request.headers["x-api-key"] for call in mock.calls}
    assert sent_keys == {KEY0, KEY1}
    assert KEY0 not in repr(status) and KEY1 not in repr(status)


# --- count_tokens -------------------------------------------------------------


def test_count_tokens_uses_native_endpoint(mock, client):
    mock.add(responses.POST, COUNT_URL, json={"input_tokens": 42}, status=200)
    count = client.count_tokens([Message("system", "Sys."), Message("user", "How many tokens?")])
    assert count == 42
    assert len(mock.calls) == 1
    call = mock.calls[0]
    assert call.request.url == COUNT_URL
    assert call.request.headers["x-api-key"] == KEY0
    assert call.request.headers["anthropic-version"] == "2023-06-01"
    body = json.loads(call.request.body)
    assert body == {
        "model": MODEL,
        "system": "Sys.",
        "messages": [{"role": "user", "content": "How many tokens?"}],
    }
    assert "max_tokens" not in body and "stream" not in body


def test_count_tokens_error_is_typed(mock, client):
    mock.add(
        responses.POST, COUNT_URL, status=429,
        json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
        headers={"retry-after": "3"},
    )
    from llm_sync.errors import LLMRateLimitError

    with pytest.raises(LLMRateLimitError) as info:
        client.count_tokens("Hi")
    assert info.value.retry_after == 3.0
    assert client.pool.available == client.pool.max_size


def test_count_tokens_answer_without_number_is_an_error(mock, client):
    mock.add(responses.POST, COUNT_URL, json={"tokens": "many"}, status=200)
    with pytest.raises(LLMProviderError) as info:
        client.count_tokens("Hi")
    assert info.value.error_type == "invalid_response"


# --- base URL -------------------------------------------------------------------


@pytest.mark.parametrize("base", [f"{BASE}/v1", f"{BASE}/v1/", f"{BASE}/"])
def test_base_url_v1_suffix_is_not_doubled(mock, base):
    add_ok(mock)
    mock.add(responses.POST, COUNT_URL, json={"input_tokens": 3}, status=200)
    with make_manager(base_url=base) as m:
        client = m.get_client("anthropic")
        client.complete("Hi")
        assert client.count_tokens("Hi") == 3
    assert [c.request.url for c in mock.calls] == [URL, COUNT_URL]


def test_base_url_with_path_prefix_is_kept(mock):
    add_ok(mock, url=f"{BASE}/proxy/anthropic/v1/messages")
    with make_manager(base_url=f"{BASE}/proxy/anthropic") as m:
        assert m.get_client("anthropic").complete("Hi").content == "Hello, world!"
    assert mock.calls[0].request.url == f"{BASE}/proxy/anthropic/v1/messages"


@pytest.mark.parametrize("body", [{"content": "not a list"}, {"content": [{"type": "text", "text": None}]},
                                  {"content": [], "usage": "nope"}])
def test_unexpected_json_shape_is_a_typed_error(mock, client, body):
    from llm_sync import LLMProviderError

    mock.add(responses.POST, URL, json={"id": "m", "model": "x", **body})
    with pytest.raises(LLMProviderError) as info:
        client.complete("Hi")
    assert info.value.error_type == "invalid_response"
