"""Anthropic kind beyond text: content blocks, tools, tool choice, structured
output, system blocks with cache_control (request JSON, exact shapes);
typed blocks, tool calls, thinking, refusal and cache usage parsed from
answers and from SSE transcripts; the tool round trip; count_tokens with
blocks; error and request-id fixes found against real servers."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sync import (
    DocumentBlock,
    ImageBlock,
    LLMManager,
    Message,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolCall,
    ToolResultBlock,
    ToolUseBlock,
)
from llm_sync.errors import LLMError, LLMProviderError, LLMValidationError
from llm_sync.events import TextDelta, ThinkingDelta, ToolCallDelta, ToolCallDone
from llm_sync.providers.anthropic import COUNT_UNSUPPORTED, AnthropicProvider
from llm_sync.providers.anthropic_blocks import REFUSAL_NOTE, STRUCTURED_TOOL_DESCRIPTION
from llm_sync.providers.base import LLMRequest, StreamDecoder
from llm_sync.sse import SSEParser

BASE = "https://api.anthropic.test"
URL = f"{BASE}/v1/messages"
COUNT_URL = f"{BASE}/v1/messages/count_tokens"
KEY = "sk-ant-test-SECRET-0009"
MODEL = "claude-test-model"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "sse" / "anthropic_blocks"
PDF = base64.b64encode(b"%PDF-1.4 tiny").decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
EPHEMERAL = {"type": "ephemeral"}
WEATHER = Tool("get_weather", "Weather for a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def body_of(**fields: Any) -> dict[str, Any]:
    fields.setdefault("model", MODEL)
    return AnthropicProvider(BASE).build_body(LLMRequest(**fields))


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({"providers": {"anthropic": {
            "api_keys": [KEY], "models": [MODEL], "base_url": BASE, "max_retries": 0}}}) as m:
        yield m


@pytest.fixture
def client(manager: LLMManager):
    return manager.get_client("anthropic")


def sent(mock: responses.RequestsMock, index: int = 0) -> dict[str, Any]:
    return json.loads(mock.calls[index].request.body)


def answer(content: list[dict[str, Any]], stop_reason: str = "end_turn", **extra: Any) -> dict[str, Any]:
    return {"id": "msg_01Answer", "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": stop_reason, "usage": {"input_tokens": 10, "output_tokens": 5}, **extra}


# --- request: blocks ------------------------------------------------------------


def test_every_block_kind_has_its_anthropic_shape():
    user = Message(MessageRole.USER, [
        TextBlock("Look:", cache_control=EPHEMERAL),
        ImageBlock(media_type="image/png", data=PNG),
        ImageBlock.from_url("https://example.test/cat.jpg"),
        ImageBlock(url=f"data:image/png;base64,{PNG}"),
        DocumentBlock(data=PDF, title="report.pdf", cache_control=EPHEMERAL),
        DocumentBlock.from_text("plain words", title="notes.txt"),
    ])
    assert body_of(messages=[user])["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Look:", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
         "title": "report.pdf", "cache_control": {"type": "ephemeral"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"},
         "title": "notes.txt"},
    ]}]


def test_assistant_thinking_and_tool_use_then_tool_results_are_exact():
    messages = [
        Message("user", "Weather in Paris and Tokyo?"),
        Message("assistant", [
            ThinkingBlock("Two cities.", "sig-1"),
            ThinkingBlock(redacted="opaque"),
            TextBlock("Checking."),
            ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"}),
            ToolUseBlock("toolu_2", "get_weather", {"city": "Tokyo"}),
        ]),
        Message.tool_result("toolu_1", "18C"),
        Message.tool_result("toolu_2", [TextBlock("no data"), {"type": "text", "text": "(station down)"}],
                            is_error=True),
        Message("user", "Also, which is warmer?"),
    ]
    assert body_of(messages=messages)["messages"] == [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two cities.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Tokyo"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": [
                {"type": "text", "text": "no data"}, {"type": "text", "text": "(station down)"}]},
            {"type": "text", "text": "Also, which is warmer?"},
        ]},
    ]


def test_a_user_turn_before_tool_results_is_merged_results_first():
    messages = [
        Message("assistant", [ToolUseBlock("toolu_1", "f", {})]),
        Message("user", "here you go"),
        Message.tool_result("toolu_1", "done"),
    ]
    assert body_of(messages=messages)["messages"][1:] == [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"},
        {"type": "text", "text": "here you go"},
    ]}]


def test_plain_user_turns_are_not_merged():
    messages = [Message("user", "a"), Message("user", "b")]
    assert body_of(messages=messages)["messages"] == [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


def test_native_anthropic_dicts_pass_through_typed():
    native = [{"type": "text", "text": "hi", "cache_control": EPHEMERAL},
              {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]
    assert body_of(messages=[Message("user", native)])["messages"][0]["content"] == native


def test_empty_text_block_of_a_streamed_answer_is_not_sent_back():
    turn = Message("assistant", [TextBlock(""), ToolUseBlock("toolu_1", "f", {"a": 1})])
    assert body_of(messages=[Message("user", "x"), turn])["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]


def test_a_tool_message_without_a_tool_result_is_refused():
    with pytest.raises(LLMValidationError, match="tool_result"):  # at construction, before any wire
        Message(MessageRole.TOOL, "loose text")


# --- request: system ------------------------------------------------------------


def test_plain_system_sources_are_one_string():
    body = body_of(system=[TextBlock("One.")], messages=[Message("system", "Two."), Message("user", "Hi")])
    assert body["system"] == "One.\n\nTwo."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_system_blocks_with_cache_control_are_a_list_of_text_blocks():
    body = body_of(system=[TextBlock("Long rules.", cache_control=EPHEMERAL)],
                   messages=[Message("system", "Extra."), Message("user", "Hi")])
    assert body["system"] == [
        {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Extra."},
    ]


def test_system_message_of_blocks_keeps_cache_control():
    body = body_of(messages=[Message("system", [{"type": "text", "text": "S", "cache_control": EPHEMERAL}]),
                             Message("user", "Hi")])
    assert body["system"] == [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]


def test_an_image_in_the_system_prompt_is_refused():
    with pytest.raises(LLMValidationError, match="system"):
        body_of(system=[ImageBlock.from_url("https://x.test/a.png")], messages=[Message("user", "Hi")])


# --- request: tools, tool choice, structured output -------------------------------


def test_tools_and_every_tool_choice():
    plain = Tool("ping")
    expected_tools = [
        {"name": "get_weather", "description": "Weather for a city.", "input_schema": WEATHER.input_schema},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    for choice, wire in [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
                         (("tool", "ping"), {"type": "tool", "name": "ping"})]:
        body = body_of(messages=[Message("user", "Hi")], tools=[WEATHER, plain], tool_choice=choice)
        assert body["tools"] == expected_tools
        assert body["tool_choice"] == wire
    assert "tool_choice" not in body_of(messages=[Message("user", "Hi")], tools=[plain])


def test_tool_choice_without_tools_is_not_sent():
    body = body_of(messages=[Message("user", "Hi")], tool_choice="none")
    assert "tool_choice" not in body and "tools" not in body


def test_response_schema_forces_a_tool_of_that_name():
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    body = body_of(messages=[Message("user", "2+2?")], response_schema=("Result", schema))
    assert body["tools"] == [{"name": "Result", "description": STRUCTURED_TOOL_DESCRIPTION, "input_schema": schema}]
    assert body["tool_choice"] == {"type": "tool", "name": "Result"}


def test_response_schema_keeps_the_callers_tools_and_choice():
    schema = {"type": "object", "properties": {}}
    body = body_of(messages=[Message("user", "x")], tools=[WEATHER], tool_choice="auto",
                   response_schema=("Result", schema))
    assert [t["name"] for t in body["tools"]] == ["get_weather", "Result"]
    assert body["tool_choice"] == {"type": "auto"}


def test_response_schema_with_extended_thinking_does_not_force_the_tool():
    body = body_of(messages=[Message("user", "x")], response_schema=("Result", {"type": "object"}),
                   extras={"thinking": {"type": "enabled", "budget_tokens": 2048}})
    assert body["tool_choice"] == {"type": "auto"}


# --- response ---------------------------------------------------------------------


def test_answer_blocks_are_typed_in_order(mock, client):
    content = [
        {"type": "thinking", "thinking": "Let me see.", "signature": "sig-9"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Two calls: "},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {"type": "text", "text": "and one more.", "citations": None},
        {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "Tokyo"}},
    ]
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 1024,
             "cache_read_input_tokens": 2048}
    mock.add(responses.POST, URL, json=answer(content, "tool_use", usage=usage))
    response = client.complete("Hi")
    assert response.content == "Two calls: and one more."
    assert response.stop_reason == "tool_use"
    assert response.tool_calls == [ToolCall(id="toolu_a", name="get_weather", arguments={"city": "Paris"}),
                                   ToolCall(id="toolu_b", name="get_weather", arguments={"city": "Tokyo"})]
    assert response.thinking == "Let me see."
    assert response.refusal is None
    assert response.blocks == [
        ThinkingBlock("Let me see.", "sig-9"), ThinkingBlock(redacted="opaque"), TextBlock("Two calls: "),
        ToolUseBlock("toolu_a", "get_weather", {"city": "Paris"}), TextBlock("and one more."),
        ToolUseBlock("toolu_b", "get_weather", {"city": "Tokyo"}),
    ]
    assert (response.usage.cache_creation_input_tokens, response.usage.cache_read_input_tokens) == (1024, 2048)
    assert response.raw is not None and response.raw["content"][4]["type"] == "server_tool_use"


def test_cache_tokens_are_none_when_not_sent(mock, client):
    mock.add(responses.POST, URL, json=answer([{"type": "text", "text": "ok"}]))
    usage = client.complete("Hi").usage
    assert usage.cache_creation_input_tokens is None and usage.cache_read_input_tokens is None
    assert (usage.input_tokens, usage.output_tokens) == (10, 5)


@pytest.mark.parametrize("content, refusal", [
    ([{"type": "text", "text": "I won't do that."}], "I won't do that."),
    ([], REFUSAL_NOTE),
])
def test_refusal_is_the_text_or_a_note(mock, client, content, refusal):
    mock.add(responses.POST, URL, json=answer(content, "refusal"))
    response = client.complete("Hi")
    assert response.refusal == refusal
    assert response.stop_reason == "refusal"


def test_a_tool_use_block_of_the_wrong_shape_is_an_invalid_response(mock, client):
    mock.add(responses.POST, URL, json=answer([{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]))
    with pytest.raises(LLMProviderError) as info:
        client.complete("Hi")
    assert info.value.error_type == "invalid_response"


# --- the tool round trip ------------------------------------------------------------


def test_round_trip_sends_tool_use_then_a_user_turn_with_its_result(mock, client):
    mock.add(responses.POST, URL, json=answer([
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {"city": "Oslo"}},
    ], "tool_use"))
    mock.add(responses.POST, URL, json=answer([{"type": "text", "text": "It is 3C in Oslo."}]))
    history = [Message("user", "Weather in Oslo?")]
    first = client.complete(history)
    call = first.tool_calls[0]
    history += [first.to_message(), Message.tool_result(call.id, f"3C in {call.arguments['city']}")]
    final = client.complete(history)
    assert final.content == "It is 3C in Oslo."
    assert sent(mock, 1)["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {"city": "Oslo"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_7", "content": "3C in Oslo"}]},
    ]


def test_round_trip_from_a_stream_sends_thinking_back_signed_and_redacted(mock, client):
    mock.add(responses.POST, URL, body=(FIXTURES / "thinking.sse").read_bytes(), content_type="text/event-stream")
    with client.stream("27 * 453?") as stream:
        stream.read()
    turn = stream.response.to_message()
    assert body_of(messages=[Message("user", "27 * 453?"), turn])["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "27 * 453: 27 * 400 = 10800, 27 * 53 = 1431, total 12231.",
         "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "text", "text": "27 * 453 = 12231"},
    ]


# --- streams ----------------------------------------------------------------------------


def decode(data: bytes, splits: Optional[list[int]] = None) -> tuple[StreamDecoder, str]:
    decoder = AnthropicProvider(BASE).stream_decoder()
    parser = SSEParser()
    cuts = sorted(set(splits or []))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    text = []
    for event in [e for chunk in chunks for e in parser.feed(chunk)] + parser.close():
        piece = decoder.feed(event)
        if piece:
            text.append(piece)
    return decoder, "".join(text)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_stream_parallel_tool_calls_events_and_response(mock, client):
    decoder, text = decode(fixture("parallel_tools.sse"))
    paris = ToolCall(id="toolu_01Paris", name="get_weather", arguments={"city": "Paris"})
    tokyo = ToolCall(id="toolu_02Tokyo", name="get_weather", arguments={"city": "Tokyo", "days": 3})
    assert decoder.events == [
        TextDelta("Checking both "), TextDelta("cities."),
        ToolCallDelta(0, id="toolu_01Paris", name="get_weather"),
        ToolCallDelta(0, arguments='{"city": "Pa'), ToolCallDelta(0, arguments='ris"}'),
        ToolCallDone(0, paris),
        ToolCallDelta(1, id="toolu_02Tokyo", name="get_weather"),
        ToolCallDelta(1, arguments='{"city": "Tokyo", "days": 3}'),
        ToolCallDone(1, tokyo),
    ]
    assert text == "Checking both cities."

    mock.add(responses.POST, URL, body=fixture("parallel_tools.sse"), content_type="text/event-stream")
    with client.stream("Weather?") as stream:
        assert stream.read() == "Checking both cities."
    response = stream.response
    assert response.tool_calls == [paris, tokyo]
    assert response.blocks == [TextBlock("Checking both cities."),
                               ToolUseBlock("toolu_01Paris", "get_weather", {"city": "Paris"}),
                               ToolUseBlock("toolu_02Tokyo", "get_weather", {"city": "Tokyo", "days": 3})]
    assert response.stop_reason == "tool_use"
    assert response.usage.cache_read_input_tokens == 512 and response.usage.cache_creation_input_tokens == 0
    assert response.request_id == "msg_01Parallel"  # no request-id header: the message id
    assert response.raw is not None and [t["input"] for t in response.raw["tool_use"]] == [
        {"city": "Paris"}, {"city": "Tokyo", "days": 3}]


def test_stream_thinking_with_signature_and_redacted_block():
    decoder, text = decode(fixture("thinking.sse"))
    thought = "27 * 453: 27 * 400 = 10800, 27 * 53 = 1431, total 12231."
    assert text == "27 * 453 = 12231"  # thinking is not answer text
    assert decoder.events == [ThinkingDelta("27 * 453: 27 * 400 = 10800, "),
                              ThinkingDelta("27 * 53 = 1431, total 12231."), TextDelta("27 * 453 = 12231")]
    assert decoder.thinking == thought
    assert decoder.blocks == [ThinkingBlock(thought, "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"),
                              ThinkingBlock(redacted="EmwKAhgBEgy3va3pzix/LafPsn4a"),
                              TextBlock("27 * 453 = 12231")]
    assert decoder.tool_calls == [] and decoder.refusal is None


def test_stream_refusal_fills_response_refusal(mock, client):
    mock.add(responses.POST, URL, body=fixture("refusal.sse"), content_type="text/event-stream",
             headers={"x-request-id": "req_gateway_1"})
    with client.stream("bad request") as stream:
        stream.read()
    assert stream.response.refusal == "I can't help with that."
    assert stream.response.stop_reason == "refusal"
    assert stream.response.request_id == "req_gateway_1"


def test_stream_refusal_without_text_is_the_note():
    sse = (b'event: message_start\ndata: {"type":"message_start","message":{"model":"m"}}\n\n'
           b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"refusal"}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert decode(sse)[0].refusal == REFUSAL_NOTE


def test_stream_tool_arguments_that_are_not_json_are_kept_raw():
    decoder, _ = decode(fixture("tool_bad_json.sse"))
    assert decoder.tool_calls == [ToolCall(id="toolu_bad", name="lookup", arguments={"_raw": '{"q": "unterminated'})]
    assert isinstance(decoder.events[-1], ToolCallDone)


def test_stream_tool_input_given_whole_at_the_start_is_kept():
    sse = (b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
           b'"content_block":{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}}\n\n'
           b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert decode(sse)[0].tool_calls == [ToolCall(id="t1", name="f", arguments={"a": 1})]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_splits_decode_the_same(data):
    for name in ("parallel_tools.sse", "thinking.sse"):
        raw = fixture(name)
        splits = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
        whole, text = decode(raw)
        split, split_text = decode(raw, splits)
        assert (split.events, split.blocks, split.tool_calls, split_text) == (
            whole.events, whole.blocks, whole.tool_calls, text)


# --- errors (point 6) -----------------------------------------------------------------------


def test_error_sent_as_bare_data_line_is_an_error_with_its_message(mock, client):
    mock.add(responses.POST, URL, body=fixture("bare_data_error.sse"), content_type="text/event-stream")
    received = []
    with pytest.raises(LLMError) as info:
        with client.stream("Hi") as stream:
            for chunk in stream:
                received.append(chunk)
    assert received == ["Partial answ"]
    error = info.value
    assert isinstance(error, LLMProviderError)
    assert "Overloaded: try again shortly" in error.message
    assert error.status_code == 529 and error.mid_stream


@pytest.mark.parametrize("line", [
    b'data: {"error":{"type":"rate_limit_error","message":"slow down please"}}',
    b'event: error\ndata: {"error":{"type":"rate_limit_error","message":"slow down please"}}',
])
def test_error_object_without_a_type_field_is_an_error(line):
    with pytest.raises(LLMProviderError) as info:
        decode(line + b"\n\n")
    assert info.value.message == "slow down please" and info.value.status_code == 429


def test_error_event_whose_data_is_not_json_keeps_the_text():
    with pytest.raises(LLMProviderError) as info:
        decode(b"event: error\ndata: upstream connect error\n\n")
    assert info.value.message == "upstream connect error"


@pytest.mark.parametrize("streamed", [True, False])
def test_non_200_answer_with_an_sse_body_yields_its_message(mock, client, streamed):
    body = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
            b'"message":"Overloaded right now"},"request_id":"req_sse_err"}\n\n')
    mock.add(responses.POST, URL, body=body, status=529, content_type="text/event-stream")
    with pytest.raises(LLMProviderError) as info:
        if streamed:
            with client.stream("Hi") as stream:
                stream.read()
        else:
            client.complete("Hi")
    assert info.value.message == "Overloaded right now"
    assert info.value.error_type == "overloaded_error"
    assert info.value.status_code == 529
    assert info.value.request_id == "req_sse_err"


def test_request_id_falls_back_to_the_body_id(mock, client):
    mock.add(responses.POST, URL, json=answer([{"type": "text", "text": "x"}]))
    assert client.complete("Hi").request_id == "msg_01Answer"


def test_request_id_header_wins_over_the_body(mock, client):
    mock.add(responses.POST, URL, json=answer([{"type": "text", "text": "x"}]),
             headers={"anthropic-request-id": "req_hdr"})
    assert client.complete("Hi").request_id == "req_hdr"


def test_error_request_id_from_another_header(mock, client):
    mock.add(responses.POST, URL, status=400, headers={"x-request-id": "req_x"},
             json={"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})
    with pytest.raises(LLMProviderError) as info:
        client.complete("Hi")
    assert info.value.request_id == "req_x"


# --- count_tokens ---------------------------------------------------------------------------


def test_count_tokens_sends_blocks_system_and_tools():
    request = LLMRequest(model=MODEL, system=[TextBlock("Rules.", cache_control=EPHEMERAL)], tools=[WEATHER],
                         tool_choice="auto", messages=[Message("user", [TextBlock("What is this?"),
                                                                        ImageBlock.from_url("https://x.test/a.png")])])
    http = AnthropicProvider(BASE).count_request(request)
    assert http is not None and http.url == COUNT_URL
    assert http.json == {
        "model": MODEL,
        "system": [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]}],
        "tools": [{"name": "get_weather", "description": "Weather for a city.", "input_schema": WEATHER.input_schema}],
        "tool_choice": {"type": "auto"},
    }


@pytest.mark.parametrize("status, body", [
    (404, {"detail": "Not Found"}),
    (404, {"type": "error", "error": {"type": "not_found_error", "message": "Not found"}}),
    (405, {"error": "method not allowed"}),
])
def test_count_tokens_without_the_endpoint_is_typed_unsupported(mock, client, status, body):
    """The provider types the answer COUNT_UNSUPPORTED; the client then
    falls back to its local estimate instead of failing."""
    mock.add(responses.POST, COUNT_URL, status=status, json=body)
    assert client.count_tokens("Hi") > 0
    assert len(mock.calls) == 1


def test_count_tokens_for_an_unknown_model_is_not_unsupported(mock, client):
    mock.add(responses.POST, COUNT_URL, status=404,
             json={"type": "error", "error": {"type": "not_found_error", "message": "model: claude-nope"}})
    with pytest.raises(LLMProviderError) as info:
        client.count_tokens("Hi")
    assert info.value.error_type == "not_found_error"
