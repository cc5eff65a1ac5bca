"""Review 9: OpenAI tool messages directly after the calls they answer; an
image's detail; a document by URL refused before I/O."""

from __future__ import annotations

from llm_sync import ImageBlock, Message, TextBlock, ToolResultBlock, ToolUseBlock
from llm_sync.content import DocumentBlock
from llm_sync.errors import LLMValidationError
from llm_sync.providers.openai_wire import _part, wire_messages

import pytest

CALLS = Message("assistant", [ToolUseBlock("call_1", "f", {}), ToolUseBlock("call_2", "g", {})])


def roles(turns):
    return [(t["role"], t.get("tool_call_id")) for t in turns]


def test_a_user_turn_between_calls_and_results_goes_after_the_results():
    messages = [Message("user", "go"), CALLS, Message("user", "also"),
                Message.tool_result("call_1", "one"), Message.tool_result("call_2", "two")]
    turns = wire_messages(None, messages)
    assert roles(turns) == [("user", None), ("assistant", None), ("tool", "call_1"), ("tool", "call_2"),
                            ("user", None)]
    assert turns[-1]["content"] == "also"


def test_results_split_around_a_user_turn_keep_their_order():
    messages = [Message("system", "s"), Message("user", "go"), CALLS, Message.tool_result("call_2", "two"),
                Message("user", [TextBlock("and"), ToolResultBlock("call_1", "one")])]
    assert roles(wire_messages(None, messages)) == [
        ("system", None), ("user", None), ("assistant", None), ("tool", "call_2"), ("tool", "call_1"),
        ("user", None)]


def test_each_result_follows_the_turn_that_made_its_call():
    second = Message("assistant", [ToolUseBlock("call_3", "h", {})])
    messages = [Message("user", "go"), CALLS, Message.tool_result("call_1", "one"),
                Message.tool_result("call_2", "two"), second, Message("user", "wait"),
                Message.tool_result("call_3", "three")]
    assert roles(wire_messages(None, messages)) == [
        ("user", None), ("assistant", None), ("tool", "call_1"), ("tool", "call_2"),
        ("assistant", None), ("tool", "call_3"), ("user", None)]


def test_a_result_of_an_unknown_call_stays_where_it_is():
    messages = [Message("user", "go"), Message.tool_result("call_9", "x")]
    assert roles(wire_messages(None, messages)) == [("user", None), ("tool", "call_9")]


def test_image_detail_goes_on_the_wire():
    image = ImageBlock(url="https://x.test/a.png").model_copy(update={"detail": "low"})
    assert _part(image) == {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}}


def test_a_document_by_url_is_refused():
    doc = DocumentBlock.from_text("x").model_copy(update={"text": None, "url": "https://x.test/a.pdf"})
    with pytest.raises(LLMValidationError, match="URL"):
        _part(doc)


def test_the_portable_history_reaches_the_simulator_in_order():
    from llm_sync import LLMManager, Tool
    from llm_sync.testing import Simulator

    weather = Tool("get_weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    with Simulator(keys=("sk-sim-1",)) as sim, LLMManager.from_dict({"providers": {
            "openai": {"api_keys": ["sk-sim-1"], "base_url": sim.base_url, "models": ["gpt-sim-1"]}}}) as manager:
        client = manager.get_client("openai")
        first = client.complete('CALL:get_weather{"city":"Oslo"}', tools=[weather])
        history = [Message("user", 'CALL:get_weather{"city":"Oslo"}'), first.to_message(), Message("user", "also"),
                   Message.tool_result(first.tool_calls[0].id, "sunny")]
        assert client.complete(history, tools=[weather]).content
        assert [m["role"] for m in sim.requests[-1].body["messages"]] == ["user", "assistant", "tool", "user"]
