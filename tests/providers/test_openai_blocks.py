"""OpenAI kind beyond text: content blocks, tools, tool_choice and
structured output on the wire; tool calls, refusals, reasoning and cache
tokens read back (answers and streams); the error shapes compatible
servers send."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import responses
from pydantic import BaseModel

from llm_sync import LLMManager, LLMProviderError, LLMQuotaExceededError, LLMRateLimitError, Message, Middleware
from llm_sync.content import (
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from llm_sync.errors import LLMValidationError
from llm_sync.events import RefusalDelta, TextDelta, ThinkingDelta, ToolCallDelta, ToolCallDone
from llm_sync.models import MessageRole
from llm_sync.providers.base import LLMRequest
from llm_sync.providers.openai import OpenAIProvider
from llm_sync.sse import SSEParser
from llm_sync.tools import Tool, ToolCall

BASE = "https://api.openai.test"
URL = f"{BASE}/v1/chat/completions"
KEY = "sk-test-SECRET-0009"
MODEL = "gpt-test-model"
TRANSCRIPTS = Path(__file__).parent.parent / "fixtures" / "sse" / "openai_blocks"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
PDF = base64.b64encode(b"%PDF-1.4 tiny").decode()
WEATHER = Tool("get_weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]})


# --- helpers -------------------------------------------------------------------------
def body(messages: list[Message], **fields: Any) -> dict[str, Any]:
    return OpenAIProvider(BASE).build_body(LLMRequest(messages=messages, model=MODEL, max_tokens=50, **fields))


def completion(message: dict[str, Any], finish_reason: str = "stop", usage: Any = None,
               **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-xyz", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
            "usage": usage if usage is not None else {"prompt_tokens": 10, "completion_tokens": 5}, **extra}


class SetRequest(Middleware):
    """Sets LLMRequest fields the client has no argument for (yet)."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def process_request(self, request: LLMRequest, context: Any) -> LLMRequest:
        for name, value in self.fields.items():
            setattr(request, name, value)
        return request


def manager(max_retries: int = 0) -> LLMManager:
    return LLMManager.from_dict({"providers": {"openai": {
        "api_keys": [KEY], "models": [MODEL], "base_url": BASE, "max_retries": max_retries}}})


@pytest.fixture
def client() -> Iterator[Any]:
    with manager() as m:
        yield m.get_client("openai")


def sent(mock: responses.RequestsMock, index: int = 0) -> dict[str, Any]:
    return json.loads(mock.calls[index].request.body)


def serve(mock: responses.RequestsMock, name: str, status: int = 200, headers: Optional[dict[str, str]] = None) -> None:
    mock.add(responses.POST, URL, status=status, body=(TRANSCRIPTS / name).read_bytes(),
             content_type="text/event-stream", headers=headers or {})


def decode(name: str, chunk_size: Optional[int] = None) -> Any:
    """The decoder after a whole transcript, fed in chunks of ``chunk_size`` bytes."""
    raw = (TRANSCRIPTS / name).read_bytes()
    size = chunk_size or len(raw)
    decoder = OpenAIProvider(BASE).stream_decoder()
    parser = SSEParser()
    text = []
    for start in range(0, len(raw), size):
        for event in parser.feed(raw[start:start + size]):
            piece = decoder.feed(event)
            if piece:
                text.append(piece)
    decoder.text = "".join(text)
    return decoder


# --- request: content blocks --------------------------------------------------------
def test_user_blocks_become_content_parts():
    content = [
        TextBlock("Compare these."),
        ImageBlock(media_type="image/png", data=PNG),
        ImageBlock.from_url("https://example.test/cat.jpg"),
        DocumentBlock(data=PDF, title="report.pdf"),
        DocumentBlock(data=PDF),
        DocumentBlock.from_text("plain notes", title="notes.txt"),
    ]
    assert body([Message("user", content)])["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "report.pdf"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "document.pdf"}},
        {"type": "text", "text": "plain notes"},
    ]}]


def test_native_dicts_of_either_provider_reach_the_wire_as_openai_parts():
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
               {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}}]
    assert body([Message("user", content)])["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
    ]


def test_a_plain_string_stays_a_plain_string():
    messages = [Message("system", "S"), Message("user", "Hi"), Message("assistant", "Hello")]
    assert body(messages)["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello"}]


def test_a_system_prompt_of_blocks_is_one_system_message():
    system = [TextBlock("You are terse.", cache_control={"type": "ephemeral"}), TextBlock("Answer in French.")]
    messages = body([Message("system", [TextBlock("Extra rule.")]), Message("user", "Hi")], system=system)["messages"]
    assert messages == [{"role": "system", "content": "You are terse.\n\nAnswer in French."},
                        {"role": "system", "content": "Extra rule."},
                        {"role": "user", "content": "Hi"}]


def test_assistant_tool_use_becomes_tool_calls_and_thinking_is_dropped():
    turn = Message("assistant", [ThinkingBlock("let me think", "sig"), TextBlock("Checking."),
                                 ToolUseBlock("call_1", "get_weather", {"city": "Paris"}),
                                 ToolUseBlock("call_2", "get_time", {})])
    assert body([Message("user", "Hi"), turn])["messages"][1] == {
        "role": "assistant", "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]}


def test_tool_call_arguments_are_sent_as_they_arrived():
    turn = Message("assistant", [ToolUseBlock("c1", "t", {"city": "Zürich"}), ToolUseBlock("c2", "t", {"_raw": "{bad"})])
    calls = body([Message("user", "Hi"), turn])["messages"][1]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ['{"city": "Zürich"}', "{bad"]


def test_an_assistant_turn_of_tool_calls_only_has_null_content():
    turn = Message("assistant", [ToolUseBlock("call_1", "get_weather", {"city": "Rome"})])
    assert body([Message("user", "Hi"), turn])["messages"][1]["content"] is None


def test_tool_results_become_tool_messages():
    messages = [Message("user", "Hi"),
                Message("assistant", [ToolUseBlock("call_1", "a", {}), ToolUseBlock("call_2", "b", {})]),
                Message(MessageRole.TOOL, [ToolResultBlock("call_1", "18 degrees"),
                                           ToolResultBlock("call_2", "no such city", is_error=True)])]
    assert body(messages)["messages"][2:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: no such city"},
    ]


def test_a_user_turn_mixing_results_and_text_is_tool_messages_then_a_user_message():
    turn = Message("user", [TextBlock("And now summarise."), ToolResultBlock("call_1", [TextBlock("a"), TextBlock("b")]),
                            ImageBlock.from_url("https://example.test/x.png")])
    assert body([turn])["messages"] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "ab"},
        {"role": "user", "content": [{"type": "text", "text": "And now summarise."},
                                     {"type": "image_url", "image_url": {"url": "https://example.test/x.png"}}]},
    ]


# A block in the wrong role (a tool_use in a user turn, text in a tool turn)
# is refused at Message construction: tests/test_models.py.
@pytest.mark.parametrize("messages, words", [
    ([Message("user", [ToolResultBlock("c", [ImageBlock.from_url("https://example.test/x.png")])])],
     "a tool result holds text only"),
])
def test_blocks_the_wire_cannot_carry_are_validation_errors(messages, words):
    with pytest.raises(LLMValidationError) as info:
        body(messages)
    assert words in info.value.message


# --- request: tools and structured output ---------------------------------------------
@pytest.mark.parametrize("choice, wire", [
    (None, None), ("auto", "auto"), ("required", "required"), ("none", "none"),
    (("tool", "get_weather"), {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tools_and_tool_choice(choice, wire):
    sent_body = body([Message("user", "Hi")], tools=[WEATHER, Tool("noop")], tool_choice=choice)
    assert sent_body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
    ]
    assert sent_body.get("tool_choice") == wire


def test_no_tools_sends_neither_tools_nor_tool_choice():
    sent_body = body([Message("user", "Hi")], tool_choice="none")
    assert "tools" not in sent_body and "tool_choice" not in sent_body


class Answer(BaseModel):
    city: str
    temperature: Optional[float] = None


def test_response_schema_is_a_strict_json_schema_response_format():
    schema = Answer.model_json_schema()
    sent_body = body([Message("user", "Hi")], response_schema=("Answer", schema))
    assert sent_body["response_format"] == {"type": "json_schema", "json_schema": {"name": "Answer", "strict": True,
        "schema": {"type": "object", "title": "Answer", "additionalProperties": False,
                   "required": ["city", "temperature"],
                   "properties": {"city": {"title": "City", "type": "string"},
                                  "temperature": {"anyOf": [{"type": "number"}, {"type": "null"}],
                                                  "title": "Temperature"}}}}}
    assert schema["properties"]["temperature"]["default"] is None  # the caller's schema is not changed


def test_a_schema_already_strict_is_sent_unchanged():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
              "required": ["a"], "additionalProperties": False}
    assert body([Message("user", "Hi")], response_schema=("x", schema))["response_format"]["json_schema"]["schema"] \
        == schema


def test_tools_reach_the_server_through_the_pipeline(mock):
    mock.add(responses.POST, URL, json=completion({"content": "ok"}))
    with manager() as m:
        m.add_middleware(SetRequest(tools=[WEATHER], tool_choice="required"))
        m.get_client("openai").complete([Message("user", [TextBlock("Hi"), ImageBlock(media_type="image/png",
                                                                                     data=PNG)])])
    assert sent(mock)["tool_choice"] == "required"
    assert sent(mock)["tools"][0]["function"]["name"] == "get_weather"
    assert sent(mock)["messages"][0]["content"][1]["type"] == "image_url"


# --- answers ---------------------------------------------------------------------------
def test_tool_calls_are_typed(mock, client):
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]
    mock.add(responses.POST, URL, json=completion({"content": None, "tool_calls": calls, "refusal": None},
                                                  "tool_calls"))
    response = client.complete("Weather?")
    assert response.content == "" and response.stop_reason == "tool_use" and response.refusal is None
    assert response.tool_calls == [ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),
                                   ToolCall(id="call_2", name="get_weather", arguments={"city": "Rome"})]
    assert response.blocks == [ToolUseBlock("call_1", "get_weather", {"city": "Paris"}),
                               ToolUseBlock("call_2", "get_weather", {"city": "Rome"})]


def test_text_and_a_tool_call_are_both_blocks(mock, client):
    calls = [{"type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}},
             {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": "{not json"}}]
    mock.add(responses.POST, URL, json=completion({"content": "Looking.", "tool_calls": calls}, "tool_calls"))
    response = client.complete("Hi")
    assert response.content == "Looking."
    assert response.blocks == [TextBlock("Looking."), ToolUseBlock("call_0", "lookup", {"q": "x"}),
                               ToolUseBlock("call_b", "lookup", {"_raw": "{not json"})]


def test_a_tool_call_without_a_name_is_an_invalid_response(mock, client):
    calls = [{"id": "call_1", "type": "function", "function": {"arguments": "{}"}}]
    mock.add(responses.POST, URL, json=completion({"content": None, "tool_calls": calls}, "tool_calls"))
    with pytest.raises(LLMProviderError) as info:
        client.complete("Hi")
    assert info.value.error_type == "invalid_response" and info.value.status_code == 502


def test_a_refusal_is_not_an_empty_answer(mock, client):
    mock.add(responses.POST, URL, json=completion({"content": None, "refusal": "I can't help with that."}))
    response = client.complete("Hi")
    assert response.refusal == "I can't help with that."
    assert response.stop_reason == "refusal" and response.content == "" and response.blocks == []


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_content_is_thinking(mock, client, field):
    mock.add(responses.POST, URL, json=completion({"content": "4", field: "2+2 is 4."}))
    response = client.complete("2+2?")
    assert response.thinking == "2+2 is 4." and response.content == "4" and response.blocks == [TextBlock("4")]


def test_usage_cached_and_reasoning_tokens(mock, client):
    mock.add(responses.POST, URL, json=completion({"content": "ok"}, usage={
        "prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 256}}))
    mock.add(responses.POST, URL, json=completion({"content": "ok"}, usage={"prompt_tokens": 5, "completion_tokens": 1}))
    usage = client.complete("Hi").usage
    assert (usage.input_tokens, usage.output_tokens) == (2006, 300)
    assert (usage.cache_read_input_tokens, usage.reasoning_tokens) == (1920, 256)
    assert usage.cache_creation_input_tokens is None
    usage = client.complete("Hi").usage
    assert (usage.cache_read_input_tokens, usage.reasoning_tokens) == (None, None)


# --- streams ----------------------------------------------------------------------------
def test_stream_parallel_interleaved_tool_calls(mock, client):
    serve(mock, "parallel_tool_calls.sse")
    with client.stream("Weather in Paris and time in Tokyo?") as stream:
        assert "".join(stream) == "Checking both cities."
    response = stream.response
    assert response.stop_reason == "tool_use"
    assert response.tool_calls == [
        ToolCall(id="call_paris01", name="get_weather", arguments={"city": "Paris", "unit": "°C"}),
        ToolCall(id="call_tokyo02", name="get_time", arguments={"zone": "Asia/Tokyo"})]
    assert response.blocks == [TextBlock("Checking both cities."),
                               ToolUseBlock("call_paris01", "get_weather", {"city": "Paris", "unit": "°C"}),
                               ToolUseBlock("call_tokyo02", "get_time", {"zone": "Asia/Tokyo"})]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2110, 58)
    assert (response.usage.cache_read_input_tokens, response.usage.reasoning_tokens) == (1920, 0)
    assert response.request_id == "chatcmpl-B1par4llelT00lC4lls9x"  # no request-id header: the chunks' id


def test_stream_tool_call_events_in_order():
    events = decode("parallel_tool_calls.sse").events
    assert events == [
        TextDelta("Checking both cities."),
        ToolCallDelta(0, "call_paris01", "get_weather", ""),
        ToolCallDelta(1, "call_tokyo02", "get_time", ""),
        ToolCallDelta(0, None, None, '{"city": "Pa'),
        ToolCallDelta(1, None, None, '{"zone":'),
        ToolCallDelta(0, None, None, 'ris", "unit": "°C"}'),
        ToolCallDelta(1, None, None, ' "Asia/Tokyo"}'),
        ToolCallDone(0, ToolCall(id="call_paris01", name="get_weather", arguments={"city": "Paris", "unit": "°C"})),
        ToolCallDone(1, ToolCall(id="call_tokyo02", name="get_time", arguments={"zone": "Asia/Tokyo"})),
    ]


@pytest.mark.parametrize("name", ["parallel_tool_calls.sse", "refusal.sse", "reasoning_content.sse",
                                  "tool_calls_without_index.sse"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_stream_decoding_does_not_depend_on_chunking(name, chunk_size):
    whole, split = decode(name), decode(name, chunk_size)
    assert split.done and (split.text, split.events, split.tool_calls, split.refusal, split.thinking, split.blocks,
                           split.stop_reason, split.usage) == (whole.text, whole.events, whole.tool_calls, whole.refusal,
                                                               whole.thinking, whole.blocks, whole.stop_reason,
                                                               whole.usage)


def test_stream_refusal_is_kept(mock, client):
    serve(mock, "refusal.sse")
    with client.stream("Something harmful") as stream:
        assert list(stream) == []
    response = stream.response
    assert response.refusal == "I'm sorry, but I can't help with that."
    assert response.stop_reason == "refusal" and response.content == ""
    assert [e for e in decode("refusal.sse").events] == [
        RefusalDelta("I'm sorry,"), RefusalDelta(" but I can't"), RefusalDelta(" help with that.")]


def test_stream_reasoning_content_is_thinking(mock, client):
    serve(mock, "reasoning_content.sse", headers={"request-id": "req_deep_1"})
    with client.stream("2+2?") as stream:
        assert "".join(stream) == "2 + 2 = 4"
    response = stream.response
    assert response.thinking == "The user asks 2+2. That is 4."
    assert response.stop_reason == "end_turn" and response.usage.reasoning_tokens == 15
    assert response.request_id == "req_deep_1"
    assert decode("reasoning_content.sse").events == [
        ThinkingDelta("The user asks 2+2."), ThinkingDelta(" That is 4."), TextDelta("2 + 2"), TextDelta(" = 4")]


def test_stream_tool_calls_without_an_index(mock, client):
    serve(mock, "tool_calls_without_index.sse")
    with client.stream("Weather?") as stream:
        assert list(stream) == []
    assert stream.response.tool_calls == [ToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"}),
                                          ToolCall(id="call_b", name="get_weather", arguments={"city": "Rome"})]


# --- round trip -----------------------------------------------------------------------------
def test_tool_round_trip(mock, client):
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]
    mock.add(responses.POST, URL, json=completion({"content": "Let me check.", "tool_calls": calls}, "tool_calls"))
    mock.add(responses.POST, URL, json=completion({"content": "Paris 18, Rome 24."}))
    history = [Message("user", "Weather in Paris and Rome?")]
    first = client.complete(history)
    history.append(first.to_message())
    history += [Message.tool_result(c.id, f"{c.arguments['city']}: fine") for c in first.tool_calls]
    assert client.complete(history).content == "Paris 18, Rome 24."
    assert sent(mock, 1)["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": calls_as_sent(calls)},
        {"role": "tool", "tool_call_id": "call_1", "content": "Paris: fine"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Rome: fine"},
    ]


def calls_as_sent(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls as the next request carries them (arguments re-serialised)."""
    return [{**c, "function": {**c["function"], "arguments": json.dumps(json.loads(c["function"]["arguments"]),
                                                                             ensure_ascii=False)}}
            for c in calls]


def test_streamed_tool_round_trip(mock, client):
    serve(mock, "parallel_tool_calls.sse")
    mock.add(responses.POST, URL, json=completion({"content": "Done."}))
    with client.stream("Weather in Paris and time in Tokyo?") as stream:
        list(stream)
    history = [Message("user", "Weather in Paris and time in Tokyo?"), stream.response.to_message(),
               Message.tool_result("call_paris01", "18"), Message.tool_result("call_tokyo02", "boom", is_error=True)]
    client.complete(history)
    messages = sent(mock, 1)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_paris01", "call_tokyo02"]
    assert messages[1]["content"] == "Checking both cities."
    assert messages[3] == {"role": "tool", "tool_call_id": "call_tokyo02", "content": "Error: boom"}


# --- wire fixes (issue 9 point 6) ---------------------------------------------------------
def test_a_numeric_error_code_in_a_stream_is_its_status_and_not_retried(mock):
    serve(mock, "error_numeric_code.sse")
    with manager(max_retries=2) as m:
        with pytest.raises(LLMProviderError) as info:
            with m.get_client("openai").stream("a very long prompt") as stream:
                list(stream)
    assert info.value.status_code == 400 and info.value.mid_stream
    assert "exceeds the available context size" in info.value.message
    assert len(mock.calls) == 1  # a 400 is not retried (as a 500 would be)


@pytest.mark.parametrize("code, cls, status", [(429, LLMRateLimitError, 429), ("503", LLMProviderError, 503),
                                               (None, LLMProviderError, 500), (7, LLMProviderError, 500)])
def test_error_event_status_from_a_numeric_code(code, cls, status):
    error = OpenAIProvider(BASE).error_from_event({"error": {"code": code, "message": "m"}})
    assert type(error) is cls and error.status_code == status


def test_a_quota_message_is_a_quota_error_whatever_the_type(mock, client):
    message = "You exceeded your current quota, please check your plan and billing details."
    mock.add(responses.POST, URL, status=429, json={"error": {"message": message, "type": "rate_limit_error"}})
    with pytest.raises(LLMQuotaExceededError):
        client.complete("Hi")
    event = OpenAIProvider(BASE).error_from_event({"error": {"message": message, "type": "upstream_error"}})
    assert type(event) is LLMQuotaExceededError and event.status_code == 429


def test_an_ordinary_429_is_still_a_rate_limit(mock, client):
    mock.add(responses.POST, URL, status=429, json={"error": {"message": "Rate limit reached", "type": "requests"}})
    with pytest.raises(LLMRateLimitError) as info:
        client.complete("Hi")
    assert type(info.value) is LLMRateLimitError


@pytest.mark.parametrize("headers, expected", [
    ({"x-request-id": "req_a", "request-id": "req_b"}, "req_a"),
    ({"request-id": "req_b"}, "req_b"),
    ({"openai-request-id": "req_c"}, "req_c"),
    ({"cf-ray": "8f00aa-CDG"}, "chatcmpl-xyz"),
    ({"x-request-id": f"req-{KEY}"}, "req-***"),
])
def test_request_id_fallbacks(mock, client, headers, expected):
    mock.add(responses.POST, URL, json=completion({"content": "ok"}), headers=headers)
    assert client.complete("Hi").request_id == expected


def test_a_request_id_from_other_headers_on_errors(mock, client):
    mock.add(responses.POST, URL, status=400, json={"error": {"message": "bad", "type": "invalid_request_error"}},
             headers={"openai-request-id": "req_err"})
    with pytest.raises(LLMProviderError) as info:
        client.complete("Hi")
    assert info.value.request_id == "req_err"


def test_a_non_200_answer_with_an_sse_body_yields_its_message(mock, client):
    mock.add(responses.POST, URL, status=400, content_type="text/event-stream",
             body=b'data: {"error":{"message":"context length exceeded","type":"invalid_request_error",'
                  b'"code":"context_length_exceeded"}}\n\ndata: [DONE]\n\n')
    with pytest.raises(LLMProviderError) as info:
        client.stream("Hi")
    assert info.value.message == "context length exceeded"
    assert (info.value.status_code, info.value.error_type, info.value.code) == (
        400, "invalid_request_error", "context_length_exceeded")
