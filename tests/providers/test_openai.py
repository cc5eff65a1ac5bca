"""OpenAI chat-completions wire format (also used for compatible servers)."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import responses

from llm_sync import LLMManager, LLMProvider, Message, MessageRole, Middleware
from llm_sync.providers.base import LLMRequest
from llm_sync.providers.openai import OpenAIProvider

BASE = "https://api.openai.test"
URL = f"{BASE}/v1/chat/completions"
OFFICIAL_URL = "https://api.openai.com/v1/chat/completions"
KEY0 = "sk-test-SECRET-0001"
MODEL = "gpt-test-model"


def completion(content: Any = "Hello there!", finish_reason: str = "stop", usage: Any = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1732000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
        "usage": usage if usage is not None else {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
    }


def make_manager(base_url: str | None = BASE, **provider: Any) -> LLMManager:
    entry: dict[str, Any] = {"api_keys": [KEY0], "models": [MODEL], "max_retries": 0, **provider}
    if base_url is not None:
        entry["base_url"] = base_url
    return LLMManager.from_dict({"providers": {"openai": entry}})


@pytest.fixture
def client() -> Iterator[Any]:
    with make_manager() as m:
        yield m.get_client("openai")


def body_of(mock: responses.RequestsMock, index: int = 0) -> dict[str, Any]:
    return json.loads(mock.calls[index].request.body)


def test_authorization_bearer_header(mock, client):
    mock.add(responses.POST, URL, json=completion())
    client.complete("Hi")
    headers = mock.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {KEY0}"
    assert headers["content-type"].startswith("application/json")
    assert "x-api-key" not in {k.lower() for k in headers}
    assert "anthropic-version" not in {k.lower() for k in headers}


def test_body_compatible_host_uses_max_tokens(mock, client):
    mock.add(responses.POST, URL, json=completion())
    client.complete(
        [Message(MessageRole.USER, "Hi"), Message(MessageRole.ASSISTANT, "Hello"), Message("user", "Again")],
        system="Be brief.",
        max_tokens=33,
        temperature=1.5,
        stop=["END", "STOP"],
    )
    assert body_of(mock) == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Again"},
        ],
        "max_tokens": 33,
        "temperature": 1.5,
        "stop": ["END", "STOP"],
    }


def test_system_argument_comes_first(mock, client):
    mock.add(responses.POST, URL, json=completion())
    client.complete([Message("user", "Hi")], system="SYS")
    messages = body_of(mock)["messages"]
    assert messages[0] == {"role": "system", "content": "SYS"}
    assert messages[1:] == [{"role": "user", "content": "Hi"}]
    assert "system" not in body_of(mock)


def test_system_message_stays_in_messages(mock, client):
    mock.add(responses.POST, URL, json=completion())
    client.complete([Message("system", "SYS"), Message("user", "Hi")])
    assert body_of(mock)["messages"] == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Hi"},
    ]


def test_official_host_uses_max_completion_tokens(mock):
    mock.add(responses.POST, OFFICIAL_URL, json=completion())
    with make_manager(base_url="https://api.openai.com") as m:
        m.get_client("openai").complete("Hi", max_tokens=64)
    body = body_of(mock)
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body


def test_default_base_url_is_official_host(mock):
    mock.add(responses.POST, OFFICIAL_URL, json=completion())
    with make_manager(base_url=None) as m:
        m.get_client("openai").complete("Hi", max_tokens=7)
    assert mock.calls[0].request.url == OFFICIAL_URL
    assert body_of(mock)["max_completion_tokens"] == 7


@pytest.mark.parametrize("base", ["https://api.openai.com", BASE])
def test_max_tokens_in_extras_overrides_field_choice(base):
    provider = OpenAIProvider(base)
    request = LLMRequest(messages=[Message("user", "Hi")], model=MODEL, max_tokens=64, extras={"max_tokens": 77})
    body = provider.build_body(request)
    assert body["max_tokens"] == 77
    assert "max_completion_tokens" not in body


def test_max_tokens_extra_set_by_middleware_reaches_official_host(mock):
    class ForceMaxTokens(Middleware):
        def process_request(self, request, context):
            request.extras["max_tokens"] = request.max_tokens
            return request

    mock.add(responses.POST, OFFICIAL_URL, json=completion())
    with make_manager(base_url="https://api.openai.com/v1") as m:
        m.add_middleware(ForceMaxTokens())
        m.get_client("openai").complete("Hi", max_tokens=64)
    assert mock.calls[0].request.url == OFFICIAL_URL
    body = body_of(mock)
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body


def test_max_completion_tokens_extra_on_compatible_host(mock, client):
    mock.add(responses.POST, URL, json=completion())
    client.complete("Hi", max_tokens=64, max_completion_tokens=99)
    body = body_of(mock)
    assert body["max_completion_tokens"] == 99
    assert "max_tokens" not in body


def test_stop_string_is_sent_as_list(mock, client):
    mock.add(responses.POST, URL, json=completion())
    client.complete("Hi", stop="\n\n")
    assert body_of(mock)["stop"] == ["\n\n"]


def test_non_stream_body_has_no_stream_fields(mock, client):
    mock.add(responses.POST, URL, json=completion())
    client.complete("Hi")
    body = body_of(mock)
    assert "stream" not in body and "stream_options" not in body
    assert "temperature" not in body and "stop" not in body


def test_stream_body_requests_usage(mock, client):
    sse = (
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    mock.add(responses.POST, URL, body=sse, status=200, content_type="text/event-stream")
    assert "".join(client.stream_complete("Hi")) == "Hi"
    body = body_of(mock)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 1024


@pytest.mark.parametrize(
    "finish_reason, expected",
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("function_call", "tool_use")],
)
def test_finish_reason_is_normalised(mock, client, finish_reason, expected):
    mock.add(responses.POST, URL, json=completion(finish_reason=finish_reason))
    assert client.complete("Hi").stop_reason == expected


def test_parse_response(mock, client):
    data = completion(usage={"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29})
    mock.add(responses.POST, URL, json=data, headers={"x-request-id": "req_abc123"})
    response = client.complete("Hi")
    assert response.content == "Hello there!"
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.stop_reason == "end_turn"
    assert response.usage.input_tokens == 19
    assert response.usage.output_tokens == 10
    assert response.usage.total_tokens == 29
    assert response.request_id == "req_abc123"
    assert response.client_id == "openai-0"
    assert response.provider is LLMProvider.OPENAI
    assert response.latency_ms >= 0
    assert response.raw == data


def test_null_content_and_missing_usage(mock, client):
    data = completion(content=None, finish_reason="tool_calls")
    del data["usage"]
    mock.add(responses.POST, URL, json=data)
    response = client.complete("Hi")
    assert response.content == ""
    assert response.stop_reason == "tool_use"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (0, 0)
    assert response.request_id == "chatcmpl-123"  # no request-id header: the body's id


def test_v1_base_url_is_not_doubled(mock):
    mock.add(responses.POST, URL, json=completion())
    with make_manager(base_url=f"{BASE}/v1") as m:
        m.get_client("openai").complete("Hi")
    assert mock.calls[0].request.url == URL


def test_count_tokens_is_a_local_estimate(mock, client):
    short = client.count_tokens("Hi")
    long = client.count_tokens([Message("user", "word " * 400)])
    with_system = client.count_tokens("Hi", system="A long system prompt " * 20)
    assert len(mock.calls) == 0
    assert isinstance(short, int) and short > 0
    assert long > short + 300
    assert with_system > short


@pytest.mark.parametrize("body", [{"choices": []}, {"choices": "x"}, {"choices": [{"message": "hi"}]},
                                  {"choices": [{"message": {"content": "hi"}}], "usage": 3}])
def test_unexpected_json_shape_is_a_typed_error(mock, client, body):
    from llm_sync import LLMProviderError

    mock.add(responses.POST, URL, json={"id": "c", "model": "x", **body})
    with pytest.raises(LLMProviderError) as info:
        client.complete("Hi")
    assert info.value.error_type == "invalid_response"
