"""Tests of the provider simulator ``llm_sync.testing`` driven with plain ``requests``.

Time never passes on its own here: both clocks are fakes advanced by hand.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_sync.testing import (
    RecordedRequest,
    SimLimits,
    Simulator,
    count_input_tokens,
    count_tokens,
    default_reply,
)
from llm_sync.testing.limits import format_duration, format_rfc3339
from llm_sync.testing.pytest_plugin import llm_simulator  # noqa: F401 - fixture under test
from llm_sync.testing.replies import complete, split_chunks

KEYS = ("sk-sim-alpha-secret", "sk-sim-beta-secret")
VERSION = "2023-06-01"
WALL_START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
CHAT = "/v1/chat/completions"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(5_000.0)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(WALL_START)


@pytest.fixture
def sim(clock: FakeClock, wall: FakeClock) -> Iterator[Simulator]:
    with Simulator(KEYS, clock=clock, wall_clock=wall) as simulator:
        yield simulator


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def anthropic(
    sim: Simulator,
    body: Any = None,
    *,
    key: str | None = KEYS[0],
    path: str = MESSAGES,
    headers: dict[str, str] | None = None,
    session: Any = requests,
    **kwargs: Any,
) -> requests.Response:
    """POST to an Anthropic endpoint with the usual headers."""
    all_headers = {"anthropic-version": VERSION}
    if key is not None:
        all_headers["x-api-key"] = key
    all_headers.update(headers or {})
    if body is None:
        body = {"model": "claude-sim-1", "max_tokens": 100, "messages": [user("Hello, world!")]}
    return session.post(sim.base_url + path, json=body, headers=all_headers, timeout=5, **kwargs)


def openai(
    sim: Simulator,
    body: Any = None,
    *,
    key: str | None = KEYS[0],
    session: Any = requests,
    **kwargs: Any,
) -> requests.Response:
    """POST to the OpenAI chat endpoint with a bearer key."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    if body is None:
        body = {"model": "gpt-sim-1", "messages": [user("Hello, world!")]}
    return session.post(sim.base_url + CHAT, json=body, headers=headers, timeout=5, **kwargs)


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """Minimal SSE parsing: (event name, data) per blank-line separated block."""
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


# -- replies and token counting -----------------------------------------------------


def test_count_tokens_rule() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("what's  up_dog 42?") == 6  # what ' s up_dog 42 ?
    reply = {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]}
    messages = [user("Hello, world!"), reply]
    assert count_input_tokens(messages, "Be brief.") == 3 + (4 + 3) + (1 + 3) + 3


def test_default_reply_trims_to_forty_words() -> None:
    words = [f"w{i}" for i in range(50)]
    reply = default_reply([user("  " + " ".join(words) + "  ")])
    assert reply == "Simulated reply to: " + " ".join(words[:40])


def test_default_reply_remembers_the_most_recent_name() -> None:
    conversation = [
        user("Hello, my name is Ada."),
        {"role": "assistant", "content": "Hi Ada"},
        user("Actually MY NAME IS Grace"),
        {"role": "assistant", "content": "Noted"},
        user("So what is my name?"),
    ]
    assert default_reply(conversation) == "Your name is Grace."
    assert default_reply([user("What's my name?")]) == "Simulated reply to: What's my name?"


@settings(max_examples=60, deadline=None, database=None)
@given(
    reply=st.text(max_size=80),
    max_tokens=st.integers(min_value=1, max_value=30),
    stops=st.lists(st.text(min_size=1, max_size=3), max_size=3),
)
def test_complete_never_exceeds_limits(reply: str, max_tokens: int, stops: list[str]) -> None:
    done = complete(reply, max_tokens=max_tokens, stop_sequences=stops)
    assert reply.startswith(done.text)
    assert done.output_tokens == count_tokens(done.text) <= max_tokens
    assert "".join(split_chunks(done.text)) == done.text
    if done.finish == "stop_sequence":
        assert done.stop_sequence in stops
        assert reply[len(done.text) :].startswith(done.stop_sequence)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0s"), (0.02, "20ms"), (0.0004, "1ms"), (1, "1s"), (1.1, "1.1s"), (59.999, "59.999s"),
     (360, "6m0s"), (3723.5, "1h2m3.5s"), (3600, "1h0m0s")],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


def test_format_rfc3339_rounds_up_to_the_second() -> None:
    assert format_rfc3339(WALL_START) == "2027-01-15T08:00:00Z"
    assert format_rfc3339(WALL_START + 0.2) == "2027-01-15T08:00:01Z"


# -- Anthropic ----------------------------------------------------------------------


def test_anthropic_message(sim: Simulator) -> None:
    body = {
        "model": "claude-sim-1",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [user("Hello, world!")],
    }
    response = anthropic(sim, body)
    assert response.status_code == 200
    number = response.headers["request-id"].removeprefix("req_sim_")
    assert response.headers["content-length"] == str(len(response.content))
    assert response.json() == {
        "id": f"msg_sim_{number}",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Simulated reply to: Hello, world!"}],
        "model": "claude-sim-1",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3 + 4 + 3 + 3, "output_tokens": 8},
    }
    assert not any(name.startswith("anthropic-ratelimit") for name in response.headers)


def test_anthropic_stream(sim: Simulator) -> None:
    body = {"model": "claude-sim-1", "max_tokens": 100, "messages": [user("one two three")]}
    plain = anthropic(sim, body).json()
    response = anthropic(sim, {**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert deltas == len(split_chunks(plain["content"][0]["text"])) > 1
    assert names == [
        "message_start", "ping", "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop", "message_delta", "message_stop",
    ]
    data = [json.loads(payload) for _, payload in events]
    assert [item["type"] for item in data] == names
    start = data[0]["message"]
    assert start["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert start["id"] == "msg_sim_" + response.headers["request-id"].removeprefix("req_sim_")
    text = "".join(item["delta"]["text"] for item in data if item["type"] == "content_block_delta")
    assert text == plain["content"][0]["text"]
    assert data[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[-2]["usage"] == {"output_tokens": plain["usage"]["output_tokens"]}


def test_count_tokens_matches_message_usage(sim: Simulator) -> None:
    body = {
        "model": "claude-sim-1",
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [user("Tell me, please, a story."), {"role": "assistant", "content": "Once"}],
    }
    counted = anthropic(sim, body, path=COUNT)
    assert counted.status_code == 200
    assert counted.json() == {"input_tokens": count_input_tokens(body["messages"], body["system"])}
    message = anthropic(sim, {**body, "max_tokens": 5}).json()
    assert message["usage"]["input_tokens"] == counted.json()["input_tokens"]


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_anthropic_auth_failure(sim: Simulator, key: str | None) -> None:
    response = anthropic(sim, key=key)
    assert response.status_code == 401
    body = response.json()
    assert body["request_id"].startswith("req_")
    assert body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": body["request_id"],
    }


def test_anthropic_requires_version_header(sim: Simulator) -> None:
    response = requests.post(
        sim.base_url + MESSAGES,
        json={"model": "m", "max_tokens": 1, "messages": [user("hi")]},
        headers={"x-api-key": KEYS[0]},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "system", "content": "rules"}, user("hi")]},
        {"max_tokens": 0},
        {"max_tokens": "10"},
        {"max_tokens": None},
        {"model": None},
        {"messages": []},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
        {"system": 42},
        {"stop_sequences": "END"},
        {"temperature": 1.5},
    ],
)
def test_anthropic_validation(sim: Simulator, change: dict[str, Any]) -> None:
    body = {"model": "claude-sim-1", "max_tokens": 10, "messages": [user("hi")], **change}
    response = anthropic(sim, {k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_system_role_message_explains(sim: Simulator) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}
    assert "top-level `system`" in anthropic(sim, body).json()["error"]["message"]
    raw = requests.post(
        sim.base_url + MESSAGES,
        data=b"{not json",
        headers={"x-api-key": KEYS[0], "anthropic-version": VERSION},
        timeout=5,
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["type"] == "invalid_request_error"


# -- OpenAI -------------------------------------------------------------------------


def test_openai_completion(sim: Simulator, wall: FakeClock) -> None:
    body = {
        "model": "gpt-sim-1",
        "messages": [{"role": "system", "content": "Be brief."}, user("Hello, world!")],
        "temperature": 0.2,
    }
    response = openai(sim, body)
    assert response.status_code == 200
    number = response.headers["x-request-id"].removeprefix("req_sim_")
    data = response.json()
    assert data["id"] == f"chatcmpl-sim-{number}"
    assert data["object"] == "chat.completion"
    assert data["created"] == int(WALL_START)
    assert data["model"] == "gpt-sim-1"
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Simulated reply to: Hello, world!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    prompt = (3 + 3) + (4 + 3) + 3
    assert data["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 8,
        "total_tokens": prompt + 8,
    }


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_stream(sim: Simulator, include_usage: bool) -> None:
    body: dict[str, Any] = {"model": "gpt-sim-1", "messages": [user("a b c d")], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = openai(sim, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(payload) for _, payload in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        usage = {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}
        assert usage_chunk["usage"] == usage
        assert all(chunk["usage"] is None for chunk in chunks)
    else:
        assert all("usage" not in chunk for chunk in chunks)
    final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"][0] == final
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == "Simulated reply to: a b c d"
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])


@pytest.mark.parametrize(
    ("key", "message", "code"),
    [
        ("sk-wrong", "Incorrect API key provided.", "invalid_api_key"),
        (None, None, None),
    ],
)
def test_openai_auth_failure(
    sim: Simulator, key: str | None, message: str | None, code: str | None
) -> None:
    response = openai(sim, key=key)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert error["code"] == code
    if message is not None:
        assert response.json() == {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }


def test_keys_are_per_api_header(sim: Simulator) -> None:
    """An Anthropic call with a bearer key (and vice versa) is unauthenticated."""
    bearer_only = requests.post(
        sim.base_url + MESSAGES,
        json={"model": "m", "max_tokens": 5, "messages": [user("hi")]},
        headers={"Authorization": f"Bearer {KEYS[0]}", "anthropic-version": VERSION},
        timeout=5,
    )
    assert bearer_only.status_code == 401
    x_api_key_only = requests.post(
        sim.base_url + CHAT,
        json={"model": "m", "messages": [user("hi")]},
        headers={"x-api-key": KEYS[0]},
        timeout=5,
    )
    assert x_api_key_only.status_code == 401
    assert anthropic(sim, key=KEYS[1]).status_code == openai(sim, key=KEYS[1]).status_code == 200


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 2.5}, "max_completion_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_openai_validation(sim: Simulator, change: dict[str, Any], param: str) -> None:
    response = openai(sim, {"model": "gpt-sim-1", "messages": [user("hi")], **change})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


# -- replies over HTTP ----------------------------------------------------------------


def test_name_memory_on_both_apis(sim: Simulator) -> None:
    turns = [
        user("Hi! My name is Ada and I like maths."),
        {"role": "assistant", "content": "Nice to meet you."},
        user("what's my name"),
    ]
    message = anthropic(sim, {"model": "m", "max_tokens": 50, "messages": turns}).json()
    assert message["content"][0]["text"] == "Your name is Ada."
    system = {"role": "system", "content": "hi"}
    chat = openai(sim, {"model": "m", "messages": [system, *turns]}).json()
    assert chat["choices"][0]["message"]["content"] == "Your name is Ada."


def test_max_tokens_cut(sim: Simulator) -> None:
    body = {"model": "m", "max_tokens": 3, "messages": [user("Hello, world!")]}
    message = anthropic(sim, body).json()
    assert message["content"][0]["text"] == "Simulated reply to"
    assert message["stop_reason"] == "max_tokens"
    assert message["stop_sequence"] is None
    assert message["usage"]["output_tokens"] == 3
    for limit_name in ("max_completion_tokens", "max_tokens"):
        body = {"model": "m", "messages": [user("Hello, world!")], limit_name: 4}
        chat = openai(sim, body).json()
        assert chat["choices"][0]["message"]["content"] == "Simulated reply to:"
        assert chat["choices"][0]["finish_reason"] == "length"
        assert chat["usage"]["completion_tokens"] == 4


def test_stop_sequences(sim: Simulator) -> None:
    body = {
        "model": "m",
        "max_tokens": 50,
        "messages": [user("alpha beta")],
        "stop_sequences": ["beta", "to:"],
    }
    message = anthropic(sim, body).json()
    assert message["content"][0]["text"] == "Simulated reply "
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "to:")
    assert message["usage"]["output_tokens"] == 2
    streamed = parse_sse(anthropic(sim, {**body, "stream": True}).text)
    delta = json.loads(streamed[-2][1])
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "to:"}
    # A stop sequence beyond max_tokens loses to max_tokens.
    late = anthropic(sim, {**body, "max_tokens": 1}).json()
    assert (late["stop_reason"], late["stop_sequence"]) == ("max_tokens", None)
    for stop in ("reply", ["zzz", "reply"]):
        chat = openai(sim, {"model": "m", "messages": [user("x")], "stop": stop}).json()
        assert chat["choices"][0]["message"]["content"] == "Simulated "
        assert chat["choices"][0]["finish_reason"] == "stop"


def test_set_reply_scripts_answers(sim: Simulator) -> None:
    seen: list[list[dict[str, Any]]] = []

    def script(messages: list[dict[str, Any]]) -> str:
        seen.append(messages)
        return f"turn {len(messages)}"

    sim.set_reply(script)
    assert anthropic(sim).json()["content"][0]["text"] == "turn 1"
    assert openai(sim).json()["choices"][0]["message"]["content"] == "turn 1"
    assert seen[0] == [user("Hello, world!")]
    sim.set_reply(lambda messages: None)  # type: ignore[arg-type, return-value]
    assert anthropic(sim).status_code == 500
    sim.set_reply(None)
    assert anthropic(sim).json()["content"][0]["text"].startswith("Simulated reply to:")


# -- recordings -----------------------------------------------------------------------


def test_recordings_never_contain_keys(sim: Simulator) -> None:
    anthropic(sim, key=KEYS[1], headers={"x-debug": f"copy of {KEYS[0]}"})
    openai(sim, key=KEYS[0])
    anthropic(sim, key="sk-unknown")
    anthropic(sim, path=COUNT, body={"model": "m", "messages": [user("hi")]})
    recorded = sim.requests
    assert [item.key_id for item in recorded] == [1, 0, None, 0]
    assert [item.status for item in recorded] == [200, 200, 401, 200]
    assert all(isinstance(item, RecordedRequest) for item in recorded)
    assert recorded[0].headers["x-api-key"] == "***"
    assert recorded[0].headers["x-debug"] == "copy of ***"
    assert recorded[1].headers["authorization"] == "***"
    assert recorded[0].body["messages"] == [user("Hello, world!")]
    everything = repr(recorded) + repr(sim) + str(sim.stats())
    assert not any(key in everything for key in KEYS)
    assert "sk-unknown" not in everything
    assert sim.request_count() == 4
    assert sim.request_count(path=MESSAGES) == 2
    assert sim.request_count(key_index=0) == 2
    assert sim.request_count(path=COUNT, key_index=1) == 0
    assert sim.stats() == {0: {200: 2, 429: 0}, 1: {200: 1, 429: 0}, None: {200: 0, 429: 0, 401: 1}}
    sim.reset()
    assert sim.requests == []


def test_repr_and_lifecycle(clock: FakeClock) -> None:
    simulator = Simulator(KEYS, clock=clock)
    assert "keys=2" in repr(simulator)
    with pytest.raises(RuntimeError):
        _ = simulator.base_url
    with simulator:
        assert simulator.running
        assert simulator.base_url == f"http://127.0.0.1:{simulator.port}"
        assert f"port={simulator.port}" in repr(simulator)
        assert simulator.start() is simulator
        assert not any(key in repr(simulator) for key in KEYS)
    simulator.stop()
    assert not simulator.running
    with pytest.raises(ValueError):
        Simulator(("a", "a"))
    with pytest.raises(ValueError):
        Simulator(KEYS, limits=[SimLimits(requests_per_minute=1)])


def test_pytest_fixture(llm_simulator: Simulator) -> None:  # noqa: F811
    assert llm_simulator.keys == ("sk-sim-1", "sk-sim-2", "sk-sim-3", "sk-sim-4")
    assert anthropic(llm_simulator, key="sk-sim-4").status_code == 200
    assert llm_simulator.requests[0].key_id == 3


# -- routing and connections ------------------------------------------------------------


def test_unknown_paths_and_methods(sim: Simulator) -> None:
    missing = requests.post(sim.base_url + "/v1/complete", json={}, timeout=5)
    assert missing.status_code == 404
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "not_found_error"
    chat_missing = requests.post(sim.base_url + "/v1/chat/complete", json={}, timeout=5)
    assert chat_missing.status_code == 404
    assert set(chat_missing.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = requests.get(sim.base_url + MESSAGES, headers={"x-api-key": KEYS[0]}, timeout=5)
    assert wrong_method.status_code == 405
    anthropic_models = requests.get(
        sim.base_url + "/v1/models", headers={"x-api-key": KEYS[0]}, timeout=5
    )
    assert anthropic_models.json()["data"][0]["type"] == "model"
    openai_models = requests.get(
        sim.base_url + "/v1/models", headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=5
    )
    assert openai_models.json()["object"] == "list"
    assert requests.get(sim.base_url + "/v1/models", timeout=5).status_code == 401


def test_keep_alive_reuses_one_connection(sim: Simulator) -> None:
    with requests.Session() as session:
        assert anthropic(sim, session=session).status_code == 200
        stream_body = {"model": "m", "max_tokens": 20, "messages": [user("hi")], "stream": True}
        assert "message_stop" in anthropic(sim, stream_body, session=session).text
        assert openai(sim, session=session).status_code == 200
        chat_stream = {"model": "m", "messages": [user("x")], "stream": True}
        assert "[DONE]" in openai(sim, chat_stream, session=session).text
        assert anthropic(sim, key="sk-nope", session=session).status_code == 401
        assert session.post(sim.base_url + "/nowhere", timeout=5).status_code == 404
    assert sim.connection_count == 1
    anthropic(sim)
    assert sim.connection_count == 2


# -- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
     (404, "not_found_error"), (408, "timeout_error"), (409, "conflict_error"),
     (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
     (529, "overloaded_error")],
)
def test_injected_status_anthropic_shapes(sim: Simulator, status: int, error_type: str) -> None:
    sim.inject(status)
    response = anthropic(sim)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    assert "retry-after" not in response.headers
    assert anthropic(sim).status_code == 200
    assert [item.status for item in sim.requests] == [status, 200]


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [(429, "requests", "rate_limit_exceeded"), (500, "server_error", None),
     (503, "server_error", None), (401, "invalid_request_error", "invalid_api_key")],
)
def test_injected_status_openai_shapes(
    sim: Simulator, status: int, error_type: str, code: str | None
) -> None:
    headers = {"retry-after": "2", "retry-after-ms": "1500", "x-should-retry": "false"}
    sim.inject(status, headers=headers)
    response = openai(sim)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (error_type, code, None)
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.headers["x-should-retry"] == "false"


def test_injection_count_matching_and_fifo(sim: Simulator) -> None:
    sim.inject(500, count=2)
    sim.inject(503, body={"custom": True})
    sim.inject(502, body=b"<html>bad gateway</html>")
    assert [anthropic(sim).status_code for _ in range(2)] == [500, 500]
    third = openai(sim)
    assert (third.status_code, third.json()) == (503, {"custom": True})
    fourth = anthropic(sim)
    assert (fourth.status_code, fourth.content) == (502, b"<html>bad gateway</html>")
    assert anthropic(sim).status_code == 200

    sim.inject(529, key_index=1)
    sim.inject(408, path=CHAT)
    assert anthropic(sim, key=KEYS[0]).status_code == 200  # neither matches
    assert openai(sim, key=KEYS[0]).status_code == 408
    assert anthropic(sim, key=KEYS[1]).status_code == 529
    assert sim.pending_faults() == []
    sim.inject(500, count=3)
    sim.reset()
    assert anthropic(sim).status_code == 200


def test_injected_delay(sim: Simulator) -> None:
    sim.inject(503, delay=0.05)
    started = time.perf_counter()
    assert openai(sim).status_code == 503
    assert time.perf_counter() - started >= 0.05


def test_quota_exceeded(sim: Simulator) -> None:
    sim.inject_quota_exceeded(count=2)
    chat = openai(sim)
    assert chat.status_code == 429
    assert "retry-after" not in chat.headers
    error = chat.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    message = anthropic(sim)
    assert message.status_code == 429
    assert "retry-after" not in message.headers
    error = message.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["message"].startswith("You have reached your specified API usage limits")
    assert "2027-02-01" in error["message"]
    assert error["details"] == {"error_code": "enforced_spend_limit_reached"}


def test_anthropic_stream_error(sim: Simulator) -> None:
    sim.inject_stream_error(after_chunks=2)
    # Requests that never start a stream do not use the fault up.
    assert anthropic(sim, path=COUNT, body={"model": "m", "messages": [user("x")]}).ok
    assert anthropic(sim).ok
    body = {"model": "m", "max_tokens": 50, "messages": [user("one two three")], "stream": True}
    events = parse_sse(anthropic(sim, body).text)
    names = [name for name, _ in events]
    assert names == ["message_start", "ping", "content_block_start",
                     "content_block_delta", "content_block_delta", "error"]
    assert json.loads(events[-1][1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert "message_stop" in anthropic(sim, body).text


def test_openai_stream_error(sim: Simulator) -> None:
    sim.inject_stream_error(after_chunks=1)
    body = {"model": "m", "messages": [user("one two")], "stream": True}
    events = parse_sse(openai(sim, body).text)
    payloads = [json.loads(data) for _, data in events]
    assert len(payloads) == 3  # role chunk, one content delta, error
    assert payloads[1]["choices"][0]["delta"] == {"content": "Simulated"}
    assert payloads[-1]["error"]["type"] == "server_error"
    assert "[DONE]" not in [data for _, data in events]


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_truncated_stream(sim: Simulator, api: str) -> None:
    sim.inject_truncated_stream(after_chunks=2)
    if api == "anthropic":
        body = {"model": "m", "max_tokens": 50, "messages": [user("x y z")], "stream": True}
        response = anthropic(sim, body, stream=True)
    else:
        body = {"model": "m", "messages": [user("x y z")], "stream": True}
        response = openai(sim, body, stream=True)
    assert response.status_code == 200
    received = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in response.iter_content(chunk_size=None):
            received += piece
    assert b"Simulated" in received and b" reply" in received
    assert b"message_stop" not in received and b"[DONE]" not in received
    assert sim.requests[-1].status == 200
    assert (anthropic(sim) if api == "anthropic" else openai(sim)).ok


def test_invalid_json(sim: Simulator) -> None:
    sim.inject_invalid_json(count=2)
    for response in (anthropic(sim), openai(sim)):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        with pytest.raises(ValueError):
            response.json()
        assert response.text.startswith('{"id": ')


def test_disconnect(sim: Simulator) -> None:
    sim.inject_disconnect()
    with pytest.raises(requests.exceptions.ConnectionError):
        anthropic(sim)
    assert sim.requests[-1].status is None
    assert sim.requests[-1].key_id == 0
    assert anthropic(sim).ok


def test_redirect(sim: Simulator) -> None:
    sim.inject_redirect("https://elsewhere.invalid/v1/messages")
    response = anthropic(sim, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "https://elsewhere.invalid/v1/messages"
    assert sim.requests[-1].status == 302


# -- rate limits ------------------------------------------------------------------------


def test_requests_bucket_refills_at_limit_over_sixty(sim: Simulator, clock: FakeClock) -> None:
    sim.set_limits(0, SimLimits(requests_per_minute=6))
    assert [anthropic(sim).status_code for _ in range(6)] == [200] * 6
    refused = anthropic(sim)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"  # one request at 0.1/s
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert sim.bucket_levels(0)["requests"] == pytest.approx(0)  # nothing charged
    clock.advance(9.9)
    assert anthropic(sim).headers["retry-after"] == "1"
    clock.advance(0.1)
    assert anthropic(sim).status_code == 200
    clock.advance(30)
    assert sim.bucket_levels(0)["requests"] == pytest.approx(3)
    clock.advance(3600)
    assert sim.bucket_levels(0)["requests"] == pytest.approx(6)  # capped at capacity
    assert anthropic(sim, key=KEYS[1]).status_code == 200  # other key unlimited
    assert sim.stats()[0] == {200: 7, 429: 2}


def test_burst_seconds_limits_capacity(sim: Simulator, clock: FakeClock) -> None:
    sim.set_limits(1, SimLimits(requests_per_minute=60, burst_seconds=2))
    assert sim.bucket_levels(1) == {"requests": pytest.approx(2)}
    statuses = [anthropic(sim, key=KEYS[1]).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    clock.advance(1)
    assert anthropic(sim, key=KEYS[1]).status_code == 200
    assert anthropic(sim, key=KEYS[1]).status_code == 429


def test_anthropic_headers_and_output_refund(sim: Simulator, clock: FakeClock) -> None:
    sim.set_limits(0, SimLimits(requests_per_minute=50, input_tokens_per_minute=1200,
                                output_tokens_per_minute=600))
    body = {"model": "m", "max_tokens": 100, "messages": [user("Hello, world!")]}
    input_tokens, output_tokens = 4 + 3 + 3, 8
    first = anthropic(sim, body)
    assert first.status_code == 200
    headers = first.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "50"
    assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert headers["anthropic-ratelimit-requests-reset"] == "2027-01-15T08:00:02Z"  # 1.2 s, up
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "1200"
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == str(1200 - input_tokens)
    assert headers["anthropic-ratelimit-input-tokens-reset"] == "2027-01-15T08:00:01Z"  # 0.5 s
    assert headers["anthropic-ratelimit-output-tokens-limit"] == "600"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "500"  # max_tokens charged
    assert headers["anthropic-ratelimit-output-tokens-reset"] == "2027-01-15T08:00:10Z"  # 10 s
    assert headers["anthropic-ratelimit-tokens-limit"] == "600"  # the tighter figure
    assert headers["anthropic-ratelimit-tokens-remaining"] == "500"
    assert headers["anthropic-ratelimit-tokens-reset"] == "2027-01-15T08:00:10Z"
    # The unused part of max_tokens came back when the reply ended.
    assert sim.bucket_levels(0) == {
        "requests": pytest.approx(49),
        "input_tokens": pytest.approx(1200 - input_tokens),
        "output_tokens": pytest.approx(600 - output_tokens),
    }
    second = anthropic(sim, {**body, "stream": True})
    remaining = second.headers["anthropic-ratelimit-output-tokens-remaining"]
    assert remaining == str(600 - output_tokens - 100)
    assert "message_stop" in second.text
    assert sim.bucket_levels(0)["output_tokens"] == pytest.approx(600 - 2 * output_tokens)


def test_anthropic_429_charges_nothing(sim: Simulator, clock: FakeClock) -> None:
    sim.set_limits(0, SimLimits(requests_per_minute=10, output_tokens_per_minute=120))
    body = {"model": "m", "max_tokens": 100, "messages": [user("hi")]}
    assert anthropic(sim, body).status_code == 200  # output bucket: 120 - 100 + refund
    used = 120 - sim.bucket_levels(0)["output_tokens"]
    refused = anthropic(sim, {**body, "max_tokens": 120})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == str(math.ceil(used / 2))  # 2 output tokens/s
    assert "output tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "9"
    assert sim.bucket_levels(0)["requests"] == pytest.approx(9)
    assert anthropic(sim, path=COUNT, body={"model": "m", "messages": [user("hi")]}).ok
    assert "input-tokens" not in " ".join(refused.headers)  # only configured figures


def test_openai_headers_and_no_refund(sim: Simulator) -> None:
    limits = SimLimits(requests_per_minute=60, tokens_per_minute=6000, output_tokens_per_minute=1)
    sim.set_limits(0, limits)
    prompt = 4 + 3 + 3
    body = {"model": "m", "messages": [user("Hello, world!")], "max_completion_tokens": 100}
    response = openai(sim, body)
    assert response.status_code == 200
    headers = response.headers
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "59"
    assert headers["x-ratelimit-reset-requests"] == "1s"
    assert headers["x-ratelimit-limit-tokens"] == "6000"
    assert headers["x-ratelimit-remaining-tokens"] == str(6000 - prompt - 100)
    assert headers["x-ratelimit-reset-tokens"] == "1.1s"  # 110 tokens at 100/s
    assert not any(name.startswith("anthropic-") for name in headers)
    assert sim.bucket_levels(0, "openai") == {
        "requests": pytest.approx(59),
        "tokens": pytest.approx(6000 - prompt - 100),  # not refunded
    }
    default = openai(sim)  # charged the default 1024 completion tokens
    assert default.headers["x-ratelimit-remaining-tokens"] == str(6000 - 2 * prompt - 100 - 1024)
    anthropic_levels = {"requests": pytest.approx(60), "output_tokens": pytest.approx(1)}
    assert sim.bucket_levels(0) == anthropic_levels  # the Anthropic buckets are separate


def test_openai_429_retry_after(sim: Simulator, clock: FakeClock) -> None:
    # No tokens_per_minute: the OpenAI tokens bucket falls back to the input figure.
    sim.set_limits(0, SimLimits(requests_per_minute=100, input_tokens_per_minute=1200))
    assert openai(sim).status_code == 200  # 10 + 1024 of 1200 used
    refused = openai(sim)
    assert refused.status_code == 429
    wait = (1034 - 166) / 20
    assert refused.headers["retry-after"] == str(math.ceil(wait))
    assert refused.headers["retry-after-ms"] == "43400"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "166"
    assert refused.headers["x-ratelimit-reset-tokens"] == "51.7s"
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("tokens", "rate_limit_exceeded", None)
    assert error["message"].startswith("Rate limit reached for gpt-sim-1")
    clock.advance(wait)
    assert openai(sim).status_code == 200

    sim.set_limits(1, SimLimits(requests_per_minute=1))
    assert openai(sim, key=KEYS[1]).status_code == 200
    by_requests = openai(sim, key=KEYS[1])
    assert by_requests.status_code == 429
    assert by_requests.json()["error"]["type"] == "requests"
    assert by_requests.headers["retry-after"] == "60"
    assert by_requests.headers["x-ratelimit-reset-requests"] == "1m0s"


def test_limits_per_key_list_and_reset(clock: FakeClock) -> None:
    limits = [SimLimits(requests_per_minute=1), None]
    with Simulator(KEYS, limits=limits, clock=clock) as simulator:
        assert [anthropic(simulator).status_code for _ in range(2)] == [200, 429]
        assert [anthropic(simulator, key=KEYS[1]).status_code for _ in range(3)] == [200] * 3
        assert simulator.bucket_levels(1) == {}
        simulator.reset()
        assert anthropic(simulator).status_code == 200
        simulator.set_limits(0, None)
        assert anthropic(simulator).status_code == 200


def test_concurrent_requests_charge_exactly_the_limit(sim: Simulator) -> None:
    sim.set_limits(0, SimLimits(requests_per_minute=40))
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            for _ in range(10):
                code = anthropic(sim, session=session).status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 40 + [429] * 40
    assert sim.stats()[0] == {200: 40, 429: 40}
