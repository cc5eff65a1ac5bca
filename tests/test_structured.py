"""Structured output: reading ``.parsed`` from text or a forced tool call,
the one repair attempt, its error, and the checks made before any I/O."""

from __future__ import annotations

import json
import pickle
from typing import Any, Iterator, Optional

import pytest
import responses
from pydantic import BaseModel

from llm_sync import LLMManager, LLMResponse, LLMStructuredOutputError, LLMValidationError, Message, Tool, ToolCall
from llm_sync.call import CallOptions
from llm_sync.providers.base import LLMRequest
from llm_sync.structured import complete_structured, parse_answer, repair_request, response_schema

URLS = {"anthropic": "https://api.anthropic.test/v1/messages", "openai": "https://api.openai.test/v1/chat/completions"}


class Weather(BaseModel):
    """Weather in a city."""

    city: str
    celsius: float


GOOD = '{"city": "Oslo", "celsius": -3.5}'
BAD = '{"city": "Oslo", "celsius": "cold"}'


def answer(content: str = "", tool_calls: Optional[list[ToolCall]] = None, **fields: Any) -> LLMResponse:
    return LLMResponse(content=content, tool_calls=tool_calls or [], **fields)


def request() -> LLMRequest:
    return LLMRequest(messages=[Message("user", "Weather in Oslo?")], model="m",
                      response_schema=response_schema(Weather))


class Sender:
    """A stand-in for Pipeline.complete: answers in order, records calls."""

    def __init__(self, *answers: LLMResponse, clock: Optional[list[float]] = None, took: float = 0.0) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[LLMRequest, CallOptions]] = []
        self.clock = clock
        self.took = took

    def __call__(self, req: LLMRequest, options: CallOptions) -> LLMResponse:
        self.calls.append((req, options))
        if self.clock is not None:
            self.clock[0] += self.took
        return self.answers.pop(0)


# --- reading the answer -----------------------------------------------------------


def test_schema_is_named_after_the_model():
    name, schema = response_schema(Weather)
    assert name == "Weather"
    assert schema == Weather.model_json_schema()


@pytest.mark.parametrize("content", [GOOD, f"```json\n{GOOD}\n```", f"  {GOOD}\n"])
def test_json_text_is_parsed(content):
    parsed, raw, errors = parse_answer(answer(content), Weather, "Weather")
    assert parsed == Weather(city="Oslo", celsius=-3.5)
    assert raw == GOOD and errors == []


def test_the_forced_tool_call_is_parsed():
    call = ToolCall(id="toolu_1", name="Weather", arguments={"city": "Oslo", "celsius": -3.5})
    parsed, _, errors = parse_answer(answer("", [call]), Weather, "Weather")
    assert parsed == Weather(city="Oslo", celsius=-3.5) and errors == []


def test_a_valid_tool_call_wins_over_chatty_text():
    call = ToolCall(id="toolu_1", name="Weather", arguments=json.loads(GOOD))
    parsed, _, _ = parse_answer(answer("Here you go:", [call]), Weather, "Weather")
    assert parsed is not None and parsed.city == "Oslo"


def test_invalid_answers_say_why():
    parsed, raw, errors = parse_answer(answer(BAD), Weather, "Weather")
    assert parsed is None and raw == BAD
    assert errors and errors[0].startswith("celsius:")
    call = ToolCall(id="t", name="Weather", arguments={"_raw": '{"city": "Os'})
    parsed, raw, errors = parse_answer(answer("", [call]), Weather, "Weather")
    assert parsed is None and raw == '{"city": "Os' and "JSON" in errors[0]
    parsed, raw, errors = parse_answer(answer(""), Weather, "Weather")
    assert parsed is None and raw == "" and "no JSON" in errors[0]


# --- the repair loop --------------------------------------------------------------


def test_a_valid_answer_takes_one_call():
    send = Sender(answer(GOOD))
    response = complete_structured(send, request(), CallOptions(), Weather, None)
    assert response.parsed == Weather(city="Oslo", celsius=-3.5)
    assert len(send.calls) == 1


def test_an_invalid_answer_is_repaired_once():
    send = Sender(answer(BAD), answer(GOOD))
    original = request()
    response = complete_structured(send, original, CallOptions(timeout=30.0), Weather, 30.0)
    assert response.parsed == Weather(city="Oslo", celsius=-3.5)
    assert len(send.calls) == 2
    repair, options = send.calls[1]
    assert [m.role.value for m in repair.messages] == ["user", "assistant", "user"]
    assert repair.messages[1].content == BAD
    assert "celsius" in repair.messages[2].text and "JSON only" in repair.messages[2].text
    assert repair.response_schema == original.response_schema
    assert len(original.messages) == 1  # the caller's request is not changed
    assert isinstance(options.timeout, float) and 0 < options.timeout <= 30.0


def test_the_repair_gets_only_the_time_left():
    clock = [100.0]
    send = Sender(answer(BAD), answer(GOOD), clock=clock, took=7.0)
    complete_structured(send, request(), CallOptions(timeout=10.0), Weather, 10.0, clock=lambda: clock[0])
    assert send.calls[1][1].timeout == pytest.approx(3.0)


def test_no_time_left_fails_without_a_second_call():
    clock = [0.0]
    send = Sender(answer(BAD), clock=clock, took=11.0)
    with pytest.raises(LLMStructuredOutputError) as info:
        complete_structured(send, request(), CallOptions(timeout=10.0), Weather, 10.0, clock=lambda: clock[0])
    assert len(send.calls) == 1
    assert info.value.raw_text == BAD and "no time" in info.value.message


def test_two_invalid_answers_raise_a_typed_error_with_the_raw_text():
    send = Sender(answer(BAD), answer('{"city": 7}'))
    with pytest.raises(LLMStructuredOutputError) as info:
        complete_structured(send, request(), CallOptions(), Weather, None)
    error = info.value
    assert len(send.calls) == 2
    assert error.raw_text == '{"city": 7}'
    assert any(line.startswith("city:") for line in error.errors)
    assert any(line.startswith("celsius:") for line in error.errors)
    again = pickle.loads(pickle.dumps(error))
    assert again.raw_text == error.raw_text and again.errors == error.errors


def test_a_refusal_or_a_call_of_another_tool_is_returned_unparsed():
    refused = answer("", refusal="I can't help with that.")
    assert complete_structured(Sender(refused), request(), CallOptions(), Weather, None).parsed is None
    other = answer("", [ToolCall(id="c1", name="lookup", arguments={"q": "Oslo"})])
    send = Sender(other)
    assert complete_structured(send, request(), CallOptions(), Weather, None) is other
    assert len(send.calls) == 1


def test_repair_request_keeps_an_empty_answer_sendable():
    req = repair_request(request(), "", ["no JSON"], "Weather")
    assert req.messages[1].content == "(no answer)"


# --- through the client (plain text answers on the wire) ---------------------------


def text_answer(provider: str, text: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": 5}}
    return {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({"providers": {
        "anthropic": {"api_keys": ["sk-ant-test-0001"], "base_url": "https://api.anthropic.test", "max_retries": 0},
        "openai": {"api_keys": ["sk-test-0002"], "base_url": "https://api.openai.test", "max_retries": 0},
    }}) as m:
        yield m


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_complete_with_response_model_is_parsed(mock, manager, provider):
    mock.add(responses.POST, URLS[provider], json=text_answer(provider, GOOD))
    response = manager.get_client(provider).complete("Weather in Oslo?", response_model=Weather)
    assert isinstance(response.parsed, Weather) and response.parsed.celsius == -3.5
    assert len(mock.calls) == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_complete_repairs_over_the_wire(mock, manager, provider):
    mock.add(responses.POST, URLS[provider], json=text_answer(provider, BAD))
    mock.add(responses.POST, URLS[provider], json=text_answer(provider, GOOD))
    response = manager.get_client(provider).complete("Weather in Oslo?", response_model=Weather, timeout=20)
    assert response.parsed == Weather(city="Oslo", celsius=-3.5)
    second = json.loads(mock.calls[1].request.body)
    assert second["messages"][-2] == {"role": "assistant", "content": BAD}
    assert "celsius" in second["messages"][-1]["content"]
    assert manager.get_status(provider)["available_clients"] == manager.get_status(provider)["total_clients"]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_complete_raises_after_a_failed_repair(mock, manager, provider):
    mock.add(responses.POST, URLS[provider], json=text_answer(provider, BAD))
    mock.add(responses.POST, URLS[provider], json=text_answer(provider, "not JSON at all"))
    with pytest.raises(LLMStructuredOutputError) as info:
        manager.get_client(provider).complete("Weather in Oslo?", response_model=Weather)
    assert info.value.raw_text == "not JSON at all"
    assert len(mock.calls) == 2


@pytest.mark.parametrize("kwargs, words", [
    ({"response_model": dict}, "BaseModel subclass"),
    ({"response_model": Weather(city="x", celsius=1)}, "BaseModel subclass"),
    ({"response_model": Weather, "tool_choice": "auto", "tools": [Tool("lookup", "look it up")]}, "tool_choice"),
    ({"response_model": Weather, "response_format": {"type": "json_object"}}, "response_format"),
    ({"response_model": Weather, "extra_body": {"tools": []}}, "tools"),
    ({"response_model": Weather, "tools": [{"name": "Weather"}]}, "named Weather"),
])
def test_bad_structured_calls_fail_before_any_io(mock, manager, kwargs, words):
    for provider in ("anthropic", "openai"):
        with pytest.raises(LLMValidationError, match=words):
            manager.get_client(provider).complete("Hi", **kwargs)
        with pytest.raises(LLMValidationError, match=words):
            manager.get_client(provider).submit("Hi", **kwargs)
    assert len(mock.calls) == 0


def test_streaming_with_a_response_model_is_refused(mock, manager):
    with pytest.raises(LLMValidationError, match="stream"):
        manager.get_client("openai").stream("Hi", response_model=Weather)
    assert len(mock.calls) == 0
