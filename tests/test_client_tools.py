"""Tools, tool choice and system blocks reach the request in one neutral
form, every bad combination is refused before any I/O; count_tokens falls
back to the estimate on a 404; a response without usage keeps the
limiter's estimate; SessionManager holds block and tool turns."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import responses
from pydantic import BaseModel

from llm_sync import (
    LLMManager,
    LLMProviderError,
    LLMResponse,
    LLMValidationError,
    Message,
    MessageRole,
    Middleware,
    SessionManager,
    TextBlock,
    Tool,
    ToolUseBlock,
    Usage,
)
from llm_sync.pipeline import Sends
from llm_sync.providers.base import LLMRequest
from llm_sync.tokens import estimate_tokens

BASES = {"anthropic": "https://api.anthropic.test", "openai": "https://api.openai.test"}
URLS = {"anthropic": f"{BASES['anthropic']}/v1/messages", "openai": f"{BASES['openai']}/v1/chat/completions"}
COUNT_URL = f"{BASES['anthropic']}/v1/messages/count_tokens"
ANSWERS = {
    "anthropic": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                  "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 3, "output_tokens": 1}},
    "openai": {"id": "c1", "object": "chat.completion", "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
}


class GetWeather(BaseModel):
    """Current weather for a city."""

    city: str


class Recorder(Middleware):
    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    def process_request(self, request: LLMRequest, context: Any) -> LLMRequest:
        self.requests.append(request)
        return request


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({"providers": {
        name: {"api_keys": [f"sk-test-{name}-0001"], "base_url": base, "max_retries": 0}
        for name, base in BASES.items()
    }}) as m:
        yield m


@pytest.fixture
def recorder(manager: LLMManager) -> Recorder:
    rec = Recorder()
    manager.add_middleware(rec)
    return rec


PROVIDERS = pytest.mark.parametrize("provider", ["anthropic", "openai"])


# --- what reaches the request -------------------------------------------------------


@PROVIDERS
def test_every_tool_shape_becomes_a_tool_on_the_request(mock, manager, recorder, provider):
    mock.add(responses.POST, URLS[provider], json=ANSWERS[provider])
    manager.get_client(provider).complete("Weather?", tools=[
        Tool("a_tool", "first", {"type": "object", "properties": {"x": {"type": "integer"}}}),
        GetWeather,
        {"name": "anthropic_shape", "description": "third", "input_schema": {"type": "object"}},
        {"type": "function", "function": {"name": "openai_shape", "parameters": {"type": "object"}}},
    ], tool_choice="GetWeather")
    request = recorder.requests[0]
    assert [t.name for t in request.tools] == ["a_tool", "GetWeather", "anthropic_shape", "openai_shape"]
    assert all(isinstance(t, Tool) for t in request.tools)
    assert request.tools[1].description == "Current weather for a city."
    assert request.tool_choice == ("tool", "GetWeather")
    assert request.response_schema is None


@pytest.mark.parametrize("choice, expected", [
    ("auto", "auto"), ("required", "required"), ("any", "required"), ("none", "none"),
    ({"type": "function", "function": {"name": "GetWeather"}}, ("tool", "GetWeather")),
    ({"type": "tool", "name": "GetWeather"}, ("tool", "GetWeather")),
])
def test_tool_choice_in_any_shape(mock, manager, recorder, choice, expected):
    mock.add(responses.POST, URLS["anthropic"], json=ANSWERS["anthropic"])
    manager.get_client("anthropic").complete("Hi", tools=[GetWeather], tool_choice=choice)
    assert recorder.requests[0].tool_choice == expected


def test_response_model_puts_its_schema_on_the_request(mock, manager, recorder):
    mock.add(responses.POST, URLS["openai"], json={**ANSWERS["openai"], "choices": [
        {"index": 0, "message": {"role": "assistant", "content": '{"city": "Oslo"}'}, "finish_reason": "stop"}]})
    response = manager.get_client("openai").complete("Hi", response_model=GetWeather)
    assert recorder.requests[0].response_schema == ("GetWeather", GetWeather.model_json_schema())
    assert response.parsed == GetWeather(city="Oslo")


def test_a_system_prompt_of_blocks_keeps_cache_control(mock, manager, recorder):
    mock.add(responses.POST, URLS["anthropic"], json=ANSWERS["anthropic"])
    manager.get_client("anthropic").complete("Hi", system=[
        TextBlock("You are terse."),
        {"type": "text", "text": "A long, cached preamble.", "cache_control": {"type": "ephemeral"}},
    ])
    system = recorder.requests[0].system
    assert isinstance(system, list) and len(system) == 2
    assert system[1].cache_control == {"type": "ephemeral"}
    assert recorder.requests[0].system_text() == "You are terse.A long, cached preamble."
    assert json.loads(mock.calls[0].request.body)["system"]  # today's wire: the text


def test_tool_turns_round_trip_into_the_next_request(mock, manager, recorder):
    mock.add(responses.POST, URLS["anthropic"], json=ANSWERS["anthropic"])
    call = LLMResponse(content="", tool_calls=[{"id": "toolu_1", "name": "GetWeather",
                                                "arguments": {"city": "Oslo"}}])
    history = [Message("user", "Weather?"), call.to_message(), Message.tool_result("toolu_1", "-3 C")]
    manager.get_client("anthropic").complete(history, tools=[GetWeather])
    request = recorder.requests[0]
    assert request.messages[1].blocks == [ToolUseBlock("toolu_1", "GetWeather", {"city": "Oslo"})]
    assert request.messages[2].role is MessageRole.TOOL
    sent = json.loads(mock.calls[0].request.body)["messages"]
    assert sent[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "GetWeather", "input": {"city": "Oslo"}}]}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3 C"}]}


# --- refused before any I/O ------------------------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    ({"tool_choice": "auto"}, "tool_choice needs tools"),
    ({"tools": GetWeather}, "tools must be a list"),
    ({"tools": [GetWeather, GetWeather]}, "same name"),
    ({"tools": [{"description": "nameless"}]}, "tools\\[0\\]"),
    ({"tools": [GetWeather], "tool_choice": "other"}, "names no tool"),
    ({"tools": [GetWeather], "tool_choice": 3}, "tool_choice must be"),
    ({"tools": [GetWeather], "extra_body": {"tools": []}}, "tools is set both"),
    ({"tools": [GetWeather], "tool_choice": "auto", "extra_body": {"tool_choice": "none"}}, "tool_choice is set both"),
    ({"system": ""}, "system must not be empty"),
    ({"system": []}, "system must be"),
    ({"system": 7}, "system must be"),
    ({"system": [{"type": "text", "text": "  "}]}, "must not be empty"),
    ({"system": [{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]}, "text blocks only"),
    ({"system": [{"type": "nope"}]}, "system: content\\[0\\]"),
])
def test_bad_tool_and_system_arguments_fail_before_any_io(mock, manager, kwargs, words):
    for provider in BASES:
        client = manager.get_client(provider)
        with pytest.raises(LLMValidationError, match=words):
            client.complete("Hi", **kwargs)
        with pytest.raises(LLMValidationError, match=words):
            client.submit("Hi", **kwargs)
        with pytest.raises(LLMValidationError, match=words):
            client.complete_batch(["Hi"], **kwargs)
        with pytest.raises(LLMValidationError, match=words):
            client.stream("Hi", **kwargs)
    assert len(mock.calls) == 0


def test_raw_tools_alone_still_go_through_extra_body(mock, manager):
    mock.add(responses.POST, URLS["openai"], json=ANSWERS["openai"])
    raw = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    manager.get_client("openai").complete("Hi", extra_body={"tools": raw})
    assert json.loads(mock.calls[0].request.body)["tools"] == raw


# --- count_tokens -----------------------------------------------------------------------


def test_count_tokens_falls_back_to_the_estimate_on_a_404(mock, manager):
    mock.add(responses.POST, COUNT_URL, status=404,
             json={"type": "error", "error": {"type": "not_found_error", "message": "Not Found"}})
    messages = [Message("user", "How many tokens is this?")]
    count = manager.get_client("anthropic").count_tokens(messages, tools=[GetWeather])
    request = LLMRequest(messages=messages, model="m")
    assert count == estimate_tokens(request.messages, None, [Tool.from_model(GetWeather)])
    assert len(mock.calls) == 1


def test_count_tokens_other_errors_still_raise(mock, manager):
    mock.add(responses.POST, COUNT_URL, status=400,
             json={"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})
    with pytest.raises(LLMProviderError) as info:
        manager.get_client("anthropic").count_tokens("Hi")
    assert info.value.status_code == 400


# --- accounting: no usage reported keeps the estimate --------------------------------


class LimiterLog:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.prompts: list[Any] = []

    def settle(self, reservation: Any, input_tokens: int, output_tokens: int, headers: Any,
               prompt_tokens: Any = None) -> None:
        self.calls.append(("settle", input_tokens, output_tokens))
        self.prompts.append(prompt_tokens)

    def release(self, reservation: Any, headers: Any = None) -> None:
        self.calls.append(("release",))


@pytest.mark.parametrize("usage, expected", [
    (Usage(), ("release",)),  # the server sent no usage: keep the estimate, never "correct" to 0
    (Usage(input_tokens=10, output_tokens=5), ("settle", 10, 5)),
    (Usage(input_tokens=10, output_tokens=5, cache_creation_input_tokens=100, cache_read_input_tokens=900),
     ("settle", 110, 5)),  # a cache write counts toward input limits, a cache read does not
    (Usage(cache_read_input_tokens=900), ("settle", None, None)),  # no input or output figure: estimates stand
])
def test_settle_uses_reported_usage_only(usage, expected):
    log = LimiterLog()
    provider = SimpleNamespace(cache_reads_in_input=False)  # Anthropic's way
    sends = Sends(SimpleNamespace(limiter=log, provider=provider, cache_reads_counted=False), None, None, None)  # type: ignore[arg-type]
    sends.settle(object(), LLMResponse(content="ok", usage=usage))  # type: ignore[arg-type]
    assert log.calls == [expected]


# --- SessionManager -------------------------------------------------------------------------


def tool_exchange(n: int) -> list[Message]:
    return [
        Message("assistant", [TextBlock(f"checking {n}"), ToolUseBlock(f"t{n}", "lookup", {"n": n})]),
        Message.tool_result(f"t{n}", f"result {n}"),
    ]


def test_session_holds_blocks_and_tool_turns():
    session = SessionManager()
    session.add_message("user", [TextBlock("Look at this"), {"type": "text", "text": "please"}])
    response = LLMResponse(content="", tool_calls=[{"id": "t1", "name": "lookup", "arguments": {}}])
    session.add_message(response.to_message())
    session.add_message(Message.tool_result("t1", "found"))
    roles = [m.role for m in session.get_messages()]
    assert roles == [MessageRole.USER, MessageRole.ASSISTANT, MessageRole.TOOL]
    assert session.get_messages()[0].text == "Look at thisplease"
    with pytest.raises(LLMValidationError):
        session.add_message(Message("user", "x"), "extra")


def test_truncation_drops_a_tool_call_with_its_results():
    session = SessionManager(max_messages=4)
    session.add_message("system", "Be brief.")
    session.add_message("user", "Question")
    for message in tool_exchange(1):
        session.add_message(message)
    assert [m.role.value for m in session.get_messages()] == ["system", "user", "assistant", "tool"]
    for message in tool_exchange(2):
        session.add_message(message)
    kept = session.get_messages()
    # Dropping "user" was not enough; the first exchange went as a whole,
    # never leaving a tool result without its call.
    assert [m.role.value for m in kept] == ["system", "assistant", "tool"]
    assert kept[1].blocks[1] == ToolUseBlock("t2", "lookup", {"n": 2})


def test_truncation_never_splits_the_newest_exchange():
    session = SessionManager(max_messages=1)
    session.add_message("user", "Question")
    for message in tool_exchange(1):
        session.add_message(message)
    assert [m.role.value for m in session.get_messages()] == ["assistant", "tool"]


def test_truncation_by_tokens_counts_blocks():
    session = SessionManager(max_tokens=40)
    session.add_message("user", "x" * 200)
    for message in tool_exchange(1):
        session.add_message(message)
    assert [m.role.value for m in session.get_messages()] == ["assistant", "tool"]


def test_calibration_counts_the_cached_prompt_where_the_charge_does_not():
    """Anthropic: a cache read is not charged, but the estimate counted the
    whole prompt, so calibration must see the whole prompt (else every
    cache hit drags later estimates down and the key over-sends)."""
    log = LimiterLog()
    sends = Sends(SimpleNamespace(limiter=log, provider=SimpleNamespace(cache_reads_in_input=False), cache_reads_counted=False),  # type: ignore[arg-type]
                  None, None, None)  # type: ignore[arg-type]
    usage = Usage(input_tokens=10, output_tokens=5, cache_read_input_tokens=3000)
    sends.settle(object(), LLMResponse(content="ok", usage=usage))  # type: ignore[arg-type]
    assert log.calls == [("settle", 10, 5)] and log.prompts == [3010]
    openai = LimiterLog()
    sends = Sends(SimpleNamespace(limiter=openai, provider=SimpleNamespace(cache_reads_in_input=True), cache_reads_counted=True),  # type: ignore[arg-type]
                  None, None, None)  # type: ignore[arg-type]
    sends.settle(object(), LLMResponse(content="ok", usage=Usage(input_tokens=3010, output_tokens=5,  # type: ignore[arg-type]
                                                                 cache_read_input_tokens=3000)))
    assert openai.calls == [("settle", 3010, 5)] and openai.prompts == [3010]


def test_repeated_cache_hits_keep_the_estimate_calibrated(llm_like_limiter=None):
    from llm_sync.ratelimit.limiter import Cost, ProviderLimiter

    limiter = ProviderLimiter([("k", None)], refunds_output=True)
    for _ in range(6):
        reservation = limiter.reserve(Cost(3000, 10), None)
        limiter.mark_sent(reservation)
        limiter.settle(reservation, 10, 5, None, prompt_tokens=3010)
    assert limiter.keys[0].calibration > 0.95


@pytest.mark.parametrize("switch, charged, tracker", [(None, 10, True), (True, 3010, False), (False, 10, True)])
def test_cache_reads_count_toward_limits_is_a_per_endpoint_switch(switch, charged, tracker):
    """Anthropic's current models do not count cache reads toward input
    limits (the default); an endpoint whose models do says so in config."""
    from llm_sync import LLMManager

    endpoint = {"api_keys": ["sk-switch-1"], "base_url": "https://api.anthropic.test"}
    if switch is not None:
        endpoint["cache_reads_count_toward_limits"] = switch
    with LLMManager.from_dict({"providers": {"anthropic": endpoint}}) as manager:
        pipeline = manager.get_client("anthropic")._pipeline
        assert (pipeline.prompt_cache is not None) is tracker
        log = LimiterLog()
        sends = Sends(SimpleNamespace(limiter=log, provider=pipeline.provider,  # type: ignore[arg-type]
                                      cache_reads_counted=pipeline.cache_reads_counted, prompt_cache=None),
                      None, None, None)  # type: ignore[arg-type]
        usage = Usage(input_tokens=10, output_tokens=5, cache_read_input_tokens=3000)
        sends.settle(object(), LLMResponse(content="ok", usage=usage))  # type: ignore[arg-type]
        assert log.calls == [("settle", charged, 5)] and log.prompts == [3010]
