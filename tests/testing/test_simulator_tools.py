"""The simulator beyond text, driven with plain ``requests``: tools, tool
results, images and documents, prompt caching, refusals, thinking and
structured output, for both kinds, streamed and not."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from llm_sync.testing import SimLimits, Simulator, count_input_tokens
from llm_sync.testing.tools import sample

KEY = "sk-sim-tools"
MESSAGES = "/v1/messages"
CHAT = "/v1/chat/completions"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
A_TOOLS = [{"name": "weather", "description": "Weather in a city", "input_schema": WEATHER},
           {"name": "time", "input_schema": {"type": "object", "properties": {}}}]
O_TOOLS = [{"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
           for t in A_TOOLS]
LONG = " ".join(f"w{i}" for i in range(1100))  # 1100 tokens: cacheable


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(KEY, clock=clock) as simulator:
        yield simulator


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = base64.b64encode(png(30, 25)).decode()
PDF = base64.b64encode(b"%PDF-1.4\n" + b"x" * 391).decode()  # 400 bytes: 100 tokens


def post_a(sim: Simulator, body: dict[str, Any], **extra: Any) -> requests.Response:
    full = {"model": "claude-sim-1", "max_tokens": 2000, **body}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    return requests.post(sim.base_url + MESSAGES, json=full, headers=headers, timeout=5, **extra)


def post_o(sim: Simulator, body: dict[str, Any], **extra: Any) -> requests.Response:
    full = {"model": "gpt-sim-1", **body}
    return requests.post(sim.base_url + CHAT, json=full, headers={"Authorization": f"Bearer {KEY}"},
                         timeout=5, **extra)


def events(response: requests.Response) -> list[tuple[str | None, Any]]:
    assert response.status_code == 200, response.text
    out: list[tuple[str | None, Any]] = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


def a_stream(sim: Simulator, body: dict[str, Any]) -> dict[str, Any]:
    """Rebuild an Anthropic message from its SSE events, as a client must."""
    message: dict[str, Any] = {}
    blocks: list[dict[str, Any]] = []
    partial: dict[int, list[str]] = {}
    for name, data in events(post_a(sim, {**body, "stream": True})):
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            delta, block = data["delta"], blocks[data["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial.setdefault(data["index"], []).append(delta["partial_json"])
        elif name == "message_delta":
            message["stop_reason"] = data["delta"]["stop_reason"]
            message["usage"].update(data["usage"])
    for index, fragments in partial.items():
        assert len([f for f in fragments if f]) >= 2  # the JSON comes in several deltas
        blocks[index]["input"] = json.loads("".join(fragments))
    message["content"] = blocks
    return message


def o_stream(sim: Simulator, body: dict[str, Any]) -> tuple[dict[str, Any], str, list[Any]]:
    """Rebuild an OpenAI message (and finish reason, raw deltas) from its chunks."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    message: dict[str, Any] = {"content": None}
    calls: dict[int, dict[str, Any]] = {}
    finish, deltas, usage = "", [], None
    for _, data in events(post_o(sim, body)):
        if data == "[DONE]":
            break
        if not data["choices"]:
            usage = data["usage"]
            continue
        delta = data["choices"][0]["delta"]
        deltas.append(delta)
        finish = data["choices"][0]["finish_reason"] or finish
        for field in ("content", "refusal", "reasoning_content"):
            if delta.get(field):
                message[field] = (message.get(field) or "") + delta[field]
        for call in delta.get("tool_calls") or []:
            slot = calls.setdefault(call["index"], {"arguments": ""})
            slot.update({k: v for k, v in call.items() if k in ("id",)})
            slot["name"] = call.get("function", {}).get("name") or slot.get("name")
            slot["arguments"] += call["function"].get("arguments", "")
    message["tool_calls"] = [calls[i] for i in sorted(calls)]
    message["usage"] = usage
    return message, finish, deltas


# -- tool calls ----------------------------------------------------------------------


def test_anthropic_call_marker_and_parallel_calls(sim: Simulator) -> None:
    prompt = 'Do it CALL:weather{"city": "Paris"} and CALL:time and CALL:unknown{"a": 1}'
    body = {"tools": A_TOOLS, "messages": [{"role": "user", "content": prompt}]}
    data = post_a(sim, body).json()
    assert data["stop_reason"] == "tool_use"
    calls = [(b["name"], b["input"]) for b in data["content"]]
    assert calls == [("weather", {"city": "Paris"}), ("time", {})]
    assert all(b["type"] == "tool_use" and b["id"].startswith("toolu_") for b in data["content"])
    streamed = a_stream(sim, body)
    assert streamed["stop_reason"] == "tool_use"
    assert [(b["name"], b["input"]) for b in streamed["content"]] == calls
    assert data["usage"]["output_tokens"] == streamed["usage"]["output_tokens"] > 0


def test_no_tools_or_tool_choice_none_means_no_call(sim: Simulator) -> None:
    prompt = 'CALL:weather{"city": "Paris"}'
    plain = post_a(sim, {"messages": [{"role": "user", "content": prompt}]}).json()
    assert plain["stop_reason"] == "end_turn"
    none = post_o(sim, {"tools": O_TOOLS, "tool_choice": "none",
                        "messages": [{"role": "user", "content": prompt}]}).json()
    assert none["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in none["choices"][0]["message"]


def test_openai_parallel_calls_streamed_interleaved(sim: Simulator) -> None:
    prompt = 'CALL:weather{"city": "Paris, France"} CALL:weather{"city": "Rome"}'
    body = {"tools": O_TOOLS, "messages": [{"role": "user", "content": prompt}]}
    data = post_o(sim, body).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris, France"}, {"city": "Rome"}]
    assert all(isinstance(c["function"]["arguments"], str) and c["type"] == "function" for c in calls)
    message, finish, deltas = o_stream(sim, body)
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in message["tool_calls"]] == [
        ("weather", {"city": "Paris, France"}), ("weather", {"city": "Rome"})]
    assert all(c["id"].startswith("call_") for c in message["tool_calls"])
    order = [d["tool_calls"][0]["index"] for d in deltas if d.get("tool_calls")]
    assert order[:4] == [0, 1, 0, 1]  # first fragments, then arguments interleaved
    fragments = [d for d in deltas if d.get("tool_calls") and "id" not in d["tool_calls"][0]]
    assert len(fragments) >= 4 and all("name" not in d["tool_calls"][0]["function"] for d in fragments)


def test_forced_tool_generates_input_from_schema(sim: Simulator) -> None:
    schema = {"type": "object", "required": ["name", "age", "ok", "tags", "home", "kind"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "ok": {"type": "boolean"},
                             "tags": {"type": "array", "items": {"type": "string"}},
                             "home": {"$ref": "#/$defs/Home"}, "kind": {"enum": ["a", "b"]},
                             "skip": {"type": "string"}},
              "$defs": {"Home": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    expected = {"name": "x", "age": 1, "ok": True, "tags": ["x"], "home": {"city": "x"}, "kind": "a"}
    assert sample(schema) == expected
    tools = [{"name": "person", "input_schema": schema}]
    body = {"tools": tools, "tool_choice": {"type": "tool", "name": "person"},
            "messages": [{"role": "user", "content": "Describe someone"}]}
    assert post_a(sim, body).json()["content"][0]["input"] == expected
    assert a_stream(sim, body)["content"][0]["input"] == expected
    o_body = {"tools": [{"type": "function", "function": {"name": "person", "parameters": schema}}],
              "tool_choice": {"type": "function", "function": {"name": "person"}},
              "messages": [{"role": "user", "content": "Describe someone"}]}
    call = post_o(sim, o_body).json()["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == expected
    assert json.loads(o_stream(sim, o_body)[0]["tool_calls"][0]["arguments"]) == expected
    required = post_o(sim, {**o_body, "tool_choice": "required"}).json()
    assert required["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "person"


def test_response_format_json_schema_and_badjson_once(sim: Simulator) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    good = post_o(sim, {"response_format": fmt, "messages": [{"role": "user", "content": "Where?"}]}).json()
    assert json.loads(good["choices"][0]["message"]["content"]) == {"city": "x"}
    bad_turn = {"role": "user", "content": "Where? BADJSON"}
    bad = o_stream(sim, {"response_format": fmt, "messages": [bad_turn]})[0]["content"]
    with pytest.raises(ValueError):
        json.loads(bad)
    repair = [bad_turn, {"role": "assistant", "content": bad}, {"role": "user", "content": "Invalid JSON; fix it"}]
    fixed = post_o(sim, {"response_format": fmt, "messages": repair}).json()
    assert json.loads(fixed["choices"][0]["message"]["content"]) == {"city": "x"}
    # Anthropic forced tool: the first answer has the wrong types, the repair is valid.
    body = {"tools": A_TOOLS[:1], "tool_choice": {"type": "tool", "name": "weather"},
            "messages": [{"role": "user", "content": "Weather? BADJSON"}]}
    first = post_a(sim, body).json()["content"][0]
    assert not isinstance(first["input"]["city"], str)
    history = body["messages"] + [
        {"role": "assistant", "content": [first]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first["id"],
                                      "content": "city must be a string", "is_error": True}]}]
    second = post_a(sim, {**body, "messages": history}).json()["content"][0]
    assert second["input"] == {"city": "x"}


@pytest.mark.parametrize("choice", [{"type": "tool", "name": "nope"}, {"type": "sometimes"}])
def test_anthropic_bad_tool_choice_is_400(sim: Simulator, choice: dict[str, Any]) -> None:
    response = post_a(sim, {"tools": A_TOOLS, "tool_choice": choice, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# -- tool results ----------------------------------------------------------------------


def test_anthropic_tool_round_trip(sim: Simulator) -> None:
    first_turn = {"role": "user", "content": 'CALL:weather{"city": "Oslo"} CALL:time'}
    first = post_a(sim, {"tools": A_TOOLS, "messages": [first_turn]}).json()
    ids = [block["id"] for block in first["content"]]
    results = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": ids[0], "content": "sunny, 21 C"},
        {"type": "tool_result", "tool_use_id": ids[1], "content": [{"type": "text", "text": "noon"}],
         "is_error": True}]}
    body = {"tools": A_TOOLS, "messages": [first_turn, {"role": "assistant", "content": first["content"]}, results]}
    final = post_a(sim, body).json()
    assert final["stop_reason"] == "end_turn"
    assert final["content"] == [{"type": "text", "text": "Result: sunny, 21 C; error: noon"}]
    assert a_stream(sim, body)["content"][0]["text"] == "Result: sunny, 21 C; error: noon"


def test_openai_tool_round_trip(sim: Simulator) -> None:
    first_turn = {"role": "user", "content": 'CALL:weather{"city": "Oslo"}'}
    message = post_o(sim, {"tools": O_TOOLS, "messages": [first_turn]}).json()["choices"][0]["message"]
    call_id = message["tool_calls"][0]["id"]
    history = [first_turn, message, {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
    final = post_o(sim, {"tools": O_TOOLS, "messages": history}).json()["choices"][0]
    assert final["finish_reason"] == "stop"
    assert final["message"]["content"] == "Result: sunny"
    assert o_stream(sim, {"tools": O_TOOLS, "messages": history})[0]["content"] == "Result: sunny"


def test_tool_results_must_answer_a_call(sim: Simulator) -> None:
    stray = post_a(sim, {"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}]}]})
    assert stray.status_code == 400
    assert "unexpected `tool_use_id`" in stray.json()["error"]["message"]
    call = {"type": "tool_use", "id": "toolu_a", "name": "time", "input": {}}
    unanswered = post_a(sim, {"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": [call]},
        {"role": "user", "content": "and?"}]})
    assert unanswered.status_code == 400
    assert "without `tool_result`" in unanswered.json()["error"]["message"]
    o_stray = post_o(sim, {"messages": [{"role": "user", "content": "hi"},
                                        {"role": "tool", "tool_call_id": "call_x", "content": "1"}]})
    assert o_stray.status_code == 400
    assert o_stray.json()["error"]["param"] == "messages[1].role"
    o_call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}
    o_unanswered = post_o(sim, {"messages": [{"role": "user", "content": "hi"}, o_call,
                                             {"role": "user", "content": "and?"}]})
    assert o_unanswered.status_code == 400
    assert "call_a" in o_unanswered.json()["error"]["message"]


# -- images and documents ----------------------------------------------------------------


def test_images_and_documents_are_accepted_and_counted(sim: Simulator) -> None:
    text = {"type": "text", "text": "Describe"}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    plain = post_a(sim, {"messages": [{"role": "user", "content": [text]}]}).json()
    with_image = post_a(sim, {"messages": [{"role": "user", "content": [text, image]}]}).json()
    with_pdf = post_a(sim, {"messages": [{"role": "user", "content": [text, pdf]}]}).json()
    base = plain["usage"]["input_tokens"]
    assert with_image["usage"]["input_tokens"] == base + 1  # ceil(30 * 25 / 750)
    assert with_pdf["usage"]["input_tokens"] == base + 100
    assert with_image["content"][0]["text"] == "Simulated reply to: Describe"
    assert count_input_tokens([{"role": "user", "content": [text, image]}]) == base + 1
    o_text = {"type": "text", "text": "Describe"}
    o_image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    o_low = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    o_pdf = {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}}
    o_plain = post_o(sim, {"messages": [{"role": "user", "content": [o_text]}]}).json()["usage"]["prompt_tokens"]
    for part, extra in ((o_image, 85 + 170), (o_low, 85), (o_pdf, 100)):
        usage = post_o(sim, {"messages": [{"role": "user", "content": [o_text, part]}]}).json()["usage"]
        assert usage["prompt_tokens"] == o_plain + extra
    streamed = o_stream(sim, {"messages": [{"role": "user", "content": [o_text, o_image]}]})[0]
    assert streamed["usage"]["prompt_tokens"] == o_plain + 255


@pytest.mark.parametrize("block", [
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}},
    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}},
    {"type": "tool_use", "id": "t", "name": "x", "input": {}},
    {"type": "video"},
])
def test_anthropic_malformed_blocks_are_400(sim: Simulator, block: dict[str, Any]) -> None:
    response = post_a(sim, {"messages": [{"role": "user", "content": [block]}]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    {"type": "image_url", "image_url": {"url": "ftp://x"}},
    {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PNG}"}},
    {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}},
    {"type": "input_audio"},
])
def test_openai_malformed_parts_are_400(sim: Simulator, part: dict[str, Any]) -> None:
    response = post_o(sim, {"messages": [{"role": "user", "content": [part]}]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# -- prompt caching ----------------------------------------------------------------------------


def test_anthropic_cache_write_then_read_and_expiry(clock: FakeClock) -> None:
    limits = SimLimits(input_tokens_per_minute=100_000)
    with Simulator(KEY, clock=clock, limits=limits) as sim:
        system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
        body = {"system": system, "messages": [{"role": "user", "content": "Question one"}]}
        first = post_a(sim, body).json()["usage"]
        assert first["cache_creation_input_tokens"] == 3 + 1100 and first["cache_read_input_tokens"] == 0
        assert first["input_tokens"] == 2 + 3
        level = sim.bucket_levels(0)["input_tokens"]
        again = {**body, "messages": [{"role": "user", "content": "Another question here"}]}
        second = a_stream(sim, again)["usage"]
        assert second["cache_read_input_tokens"] == 1103 and second["cache_creation_input_tokens"] == 0
        assert second["input_tokens"] == 3 + 3
        assert level - sim.bucket_levels(0)["input_tokens"] == 6  # cache reads are not charged
        clock.now += 301
        expired = post_a(sim, body).json()["usage"]
        assert expired["cache_read_input_tokens"] == 0 and expired["cache_creation_input_tokens"] == 1103
        short = post_a(sim, {"system": [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}],
                             "messages": [{"role": "user", "content": "hi"}]}).json()["usage"]
        assert short["cache_creation_input_tokens"] == short["cache_read_input_tokens"] == 0
        plain = post_a(sim, {"messages": [{"role": "user", "content": "hi"}]}).json()["usage"]
        assert "cache_read_input_tokens" not in plain


def test_anthropic_cache_breakpoint_on_a_message(sim: Simulator) -> None:
    turn = {"role": "user", "content": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]}
    history = [turn, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    assert post_a(sim, {"messages": history}).json()["usage"]["cache_creation_input_tokens"] == 1106
    assert post_a(sim, {"messages": history}).json()["usage"]["cache_read_input_tokens"] == 1106
    too_many = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}] * 5
    assert post_a(sim, {"messages": [{"role": "user", "content": too_many}]}).status_code == 400


def test_openai_automatic_cache(sim: Simulator) -> None:
    body = {"messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "one"}]}
    first = post_o(sim, body).json()["usage"]
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    second = post_o(sim, {"messages": [body["messages"][0], {"role": "user", "content": "two"}]}).json()["usage"]
    assert second["prompt_tokens_details"]["cached_tokens"] == 1024  # 1106-token prefix, in steps of 128
    assert second["prompt_tokens"] == first["prompt_tokens"]
    streamed = o_stream(sim, body)[0]["usage"]
    assert streamed["prompt_tokens_details"]["cached_tokens"] == 1024  # 1110 tokens, in steps of 128
    assert "prompt_tokens_details" not in post_o(sim, {"messages": [{"role": "user", "content": "hi"}]}).json()["usage"]


# -- refusals and thinking ---------------------------------------------------------------------


def test_refusal_both_kinds(sim: Simulator) -> None:
    body = {"messages": [{"role": "user", "content": "REFUSE this"}]}
    data = post_a(sim, body).json()
    assert data["stop_reason"] == "refusal"
    assert a_stream(sim, body)["stop_reason"] == "refusal"
    message = post_o(sim, body).json()["choices"][0]["message"]
    assert message["content"] is None and message["refusal"]
    streamed, finish, deltas = o_stream(sim, body)
    assert streamed["refusal"] == message["refusal"] and streamed["content"] is None
    assert finish == "stop" and deltas[0]["content"] is None


def test_thinking_both_kinds(sim: Simulator) -> None:
    body = {"thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "THINK hard"}]}
    data = post_a(sim, body).json()
    thinking, text = data["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "Thinking about: THINK hard"
    assert thinking["signature"] and text["type"] == "text"
    streamed = a_stream(sim, body)
    assert streamed["content"][0] == thinking
    assert streamed["usage"]["output_tokens"] == data["usage"]["output_tokens"]
    off = post_a(sim, {"messages": body["messages"]}).json()
    assert [b["type"] for b in off["content"]] == ["text"]
    history = body["messages"] + [{"role": "assistant", "content": data["content"]},
                                  {"role": "user", "content": "again"}]
    assert post_a(sim, {**body, "messages": history}).status_code == 200
    assert post_a(sim, {**body, "thinking": {"type": "enabled", "budget_tokens": 10}}).status_code == 400
    o_message = post_o(sim, {"messages": body["messages"]}).json()
    assert o_message["choices"][0]["message"]["reasoning_content"] == "Thinking about: THINK hard"
    assert o_message["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    assert o_stream(sim, {"messages": body["messages"]})[0]["reasoning_content"] == "Thinking about: THINK hard"
