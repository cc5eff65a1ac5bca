"""Review 9: Anthropic user turns in the shapes the real API accepts, the
structured tool next to the caller's tools, cache_control on tools and
tool blocks, documents by URL."""

from __future__ import annotations

from typing import Any

from llm_sync import DocumentBlock, Message, TextBlock, Tool, ToolResultBlock, ToolUseBlock
from llm_sync.providers.anthropic import AnthropicProvider
from llm_sync.providers.anthropic_blocks import wire_block
from llm_sync.providers.base import LLMRequest

BASE = "https://api.anthropic.test"
EPHEMERAL = {"type": "ephemeral"}
WEATHER = Tool("get_weather", "Weather for a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
CALL = Message("assistant", [ToolUseBlock("toolu_1", "get_weather", {"city": "Oslo"})])


def body_of(**fields: Any) -> dict[str, Any]:
    fields.setdefault("model", "claude-test")
    return AnthropicProvider(BASE).build_body(LLMRequest(**fields))


def test_tool_results_come_first_within_one_user_turn():
    turn = Message("user", [TextBlock("here:"), ToolResultBlock("toolu_1", "sunny")])
    body = body_of(messages=[Message("user", "weather?"), CALL, turn], tools=[WEATHER])
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "text", "text": "here:"},
    ]}


def test_whitespace_only_text_of_an_answer_is_not_sent_back():
    provider = AnthropicProvider(BASE)
    answer = provider.parse_body({
        "id": "msg_1", "model": "claude", "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 5},
        "content": [{"type": "text", "text": "\n\n"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]})
    body = provider.build_body(LLMRequest(messages=[Message("user", "hi"), answer.to_message(),
                                                    Message.tool_result("toolu_1", "ok")], model="m"))
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]


def test_whitespace_text_in_a_user_turn_is_dropped_unless_it_is_a_cache_breakpoint():
    turn = Message("user", [TextBlock(" \t"), TextBlock("hi"), TextBlock(" ", cache_control=EPHEMERAL)])
    assert body_of(messages=[turn])["messages"][0]["content"] == [
        {"type": "text", "text": "hi"}, {"type": "text", "text": " ", "cache_control": EPHEMERAL}]


def test_whitespace_user_turn_merged_with_tool_results_is_dropped():
    messages = [Message("user", "x"), CALL, Message.tool_result("toolu_1", "sunny"), Message("user", [TextBlock("  ")])]
    assert body_of(messages=messages, tools=[WEATHER])["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]


def test_response_schema_next_to_the_callers_tools_asks_for_any_tool():
    body = body_of(messages=[Message("user", "x")], tools=[WEATHER], response_schema=("City", {"type": "object"}))
    assert [t["name"] for t in body["tools"]] == ["get_weather", "City"]
    assert body["tool_choice"] == {"type": "any"}


def test_response_schema_alone_still_forces_its_tool():
    body = body_of(messages=[Message("user", "x")], response_schema=("City", {"type": "object"}))
    assert body["tool_choice"] == {"type": "tool", "name": "City"}


def test_cache_control_of_tools_and_tool_blocks_goes_on_the_wire():
    # getattr-based: works whether or not the types declare the field yet.
    tool = WEATHER.model_copy(update={"cache_control": EPHEMERAL})
    use = ToolUseBlock("toolu_1", "get_weather", {}).model_copy(update={"cache_control": EPHEMERAL})
    result = ToolResultBlock("toolu_1", "sunny").model_copy(update={"cache_control": EPHEMERAL})
    body = body_of(messages=[Message("user", "x"), Message("assistant", [use]), Message("tool", [result])],
                   tools=[tool])
    assert body["tools"][0]["cache_control"] == EPHEMERAL
    assert body["messages"][1]["content"][0]["cache_control"] == EPHEMERAL
    assert body["messages"][2]["content"][0]["cache_control"] == EPHEMERAL


def test_a_document_by_url_is_sent_as_a_url_source():
    doc = DocumentBlock.from_text("x").model_copy(
        update={"text": None, "data": None, "url": "https://x.test/a.pdf", "media_type": "application/pdf"})
    assert wire_block(doc) == {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}
