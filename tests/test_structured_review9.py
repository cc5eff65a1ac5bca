"""Review 9: an Anthropic structured answer given as the schema tool's call
leaves a valid history behind; next to the caller's tools any tool may be
called, and a call of theirs comes back unparsed."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
from pydantic import BaseModel

from llm_sync import LLMManager, LLMResponse, Message, TextBlock, ThinkingBlock, Tool, ToolCall, ToolUseBlock
from llm_sync.call import CallOptions
from llm_sync.providers.base import LLMRequest
from llm_sync.structured import complete_structured, response_schema
from llm_sync.testing import Simulator

WEATHER = Tool("get_weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]})


class City(BaseModel):
    name: str
    population: int


def _request(**fields: object) -> LLMRequest:
    return LLMRequest(messages=[Message("user", "name a city")], model="m",
                      response_schema=response_schema(City), **fields)  # type: ignore[arg-type]


def test_an_answer_by_the_schema_tool_becomes_a_text_answer_of_its_json():
    call = ToolUseBlock("toolu_1", "City", {"name": "Oslo", "population": 700000})
    thought = ThinkingBlock("hmm", "sig")
    response = LLMResponse(content="Here:", stop_reason="tool_use",
                           tool_calls=[ToolCall(id="toolu_1", name="City", arguments=dict(call.input))],
                           blocks=[thought, TextBlock("Here:"), call])
    result = complete_structured(lambda req, opts: response, _request(), CallOptions(), City, None)
    assert result.parsed == City(name="Oslo", population=700000)
    assert result.tool_calls == []
    assert json.loads(result.content) == {"name": "Oslo", "population": 700000}
    assert result.blocks == [thought, TextBlock(result.content)]
    message = result.to_message()
    assert not any(isinstance(b, ToolUseBlock) for b in message.blocks)


def test_a_caller_tool_named_like_the_schema_is_left_alone():
    tool = Tool("City", "the caller's own", {"type": "object"})
    call = ToolCall(id="toolu_1", name="City", arguments={"name": "Oslo", "population": 1})
    response = LLMResponse(content="", tool_calls=[call], blocks=[ToolUseBlock("toolu_1", "City", call.arguments)])
    result = complete_structured(lambda req, opts: response, _request(tools=[tool]), CallOptions(), City, None)
    assert result.parsed is not None and result.tool_calls == [call]


@pytest.fixture
def sim_manager() -> Iterator[tuple[Simulator, LLMManager]]:
    with Simulator(keys=("sk-sim-1",)) as sim, LLMManager.from_dict({"providers": {
            "anthropic": {"api_keys": ["sk-sim-1"], "base_url": sim.base_url, "models": ["claude-sim-1"]}}}) as m:
        yield sim, m


def test_the_conversation_continues_after_a_structured_answer(sim_manager):
    sim, manager = sim_manager
    client = manager.get_client("anthropic")
    response = client.complete("name a city", response_model=City)
    assert isinstance(response.parsed, City)
    assert sim.requests[-1].body["tool_choice"] == {"type": "tool", "name": "City"}
    history = [Message("user", "name a city"), response.to_message(), Message("user", "another?")]
    assert client.complete(history).content
    assert sim.requests[-1].body["messages"][1]["content"] == response.content


def test_the_callers_tools_stay_callable_next_to_a_response_model(sim_manager):
    sim, manager = sim_manager
    client = manager.get_client("anthropic")
    response = client.complete('CALL:get_weather{"city":"Oslo"}', tools=[WEATHER], response_model=City)
    assert sim.requests[-1].body["tool_choice"] == {"type": "any"}
    assert response.parsed is None and [c.name for c in response.tool_calls] == ["get_weather"]
    history = [Message("user", 'CALL:get_weather{"city":"Oslo"}'), response.to_message(),
               Message.tool_result(response.tool_calls[0].id, "sunny")]
    client.complete(history, tools=[WEATHER], response_model=City)  # the round trip is accepted
