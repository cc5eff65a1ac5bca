"""Beyond text over real sockets, both endpoint kinds, streamed and not:
tool round trips, parallel calls, images and PDFs on the wire, refusals,
structured output (valid and repaired), typed cache tokens."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any, Callable

import pytest
from pydantic import BaseModel

from llm_sync import (
    DocumentBlock,
    ImageBlock,
    LLMManager,
    Message,
    MessageRole,
    TextBlock,
    Tool,
)

KINDS = ["anthropic", "openai"]
WEATHER = Tool("get_weather", "Weather in a city",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def answer(client: Any, messages: Any, streamed: bool, **kwargs: Any) -> Any:
    if not streamed:
        return client.complete(messages, **kwargs)
    with client.stream(messages, **kwargs) as stream:
        for _ in stream:
            pass
    return stream.response


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("streamed", [False, True])
def test_the_tool_round_trip_with_parallel_calls(make_manager: Callable[..., LLMManager], kind: str,
                                                 streamed: bool):
    client = make_manager().get_client(kind)
    history: list[Any] = [Message(MessageRole.USER, 'Oslo and Rome? CALL:get_weather{"city": "Oslo"} '
                                                    'CALL:get_weather{"city": "Rome"}')]
    response = answer(client, history, streamed, tools=[WEATHER])
    assert response.stop_reason == "tool_use"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]
    assert len({c.id for c in response.tool_calls}) == 2
    history.append(response.to_message())
    for call in response.tool_calls:
        history.append(Message.tool_result(call.id, f"sunny in {call.arguments['city']}"))
    final = answer(client, history, streamed, tools=[WEATHER])
    assert not final.tool_calls and final.stop_reason == "end_turn"
    assert "sunny in Oslo" in final.content and "sunny in Rome" in final.content


@pytest.mark.parametrize("kind", KINDS)
def test_stream_events_carry_tool_calls_as_they_arrive(make_manager: Callable[..., LLMManager], kind: str):
    from llm_sync.events import ToolCallDelta, ToolCallDone

    client = make_manager().get_client(kind)
    with client.stream('CALL:get_weather{"city": "Oslo"}', tools=[WEATHER]) as stream:
        events = list(stream.events())
    assert any(isinstance(e, ToolCallDelta) for e in events)
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [d.tool_call.arguments for d in done] == [{"city": "Oslo"}]
    assert stream.response.tool_calls == [d.tool_call for d in done]


@pytest.mark.parametrize("kind", KINDS)
def test_an_image_and_a_pdf_reach_the_server_in_its_shape(make_manager: Callable[..., LLMManager],
                                                          llm_simulator: Any, kind: str):
    client = make_manager().get_client(kind)
    image = ImageBlock.from_bytes(png(8, 8))
    pdf = DocumentBlock.from_bytes(b"%PDF-1.4\n% tiny\n", title="tiny.pdf")
    response = client.complete([Message(MessageRole.USER, [TextBlock("What are these?"), image, pdf])])
    assert response.content
    sent = llm_simulator.requests[-1].body["messages"][-1]["content"]
    if kind == "anthropic":
        assert sent[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                       "data": image.data}}
        assert sent[2]["type"] == "document" and sent[2]["source"]["media_type"] == "application/pdf"
    else:
        assert sent[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image.data}"}}
        assert sent[2]["type"] == "file"
        assert sent[2]["file"]["file_data"] == f"data:application/pdf;base64,{pdf.data}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("streamed", [False, True])
def test_a_refusal_is_never_an_empty_success(make_manager: Callable[..., LLMManager], kind: str, streamed: bool):
    response = answer(make_manager().get_client(kind), "REFUSE please", streamed)
    assert response.refusal


class City(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("kind", KINDS)
def test_structured_output_valid_and_repaired(make_manager: Callable[..., LLMManager], llm_simulator: Any,
                                              kind: str):
    client = make_manager().get_client(kind)
    city = client.complete("Name a city.", response_model=City).parsed
    assert isinstance(city, City)
    before = llm_simulator.request_count()
    repaired = client.complete("Name a city. BADJSON", response_model=City)
    assert isinstance(repaired.parsed, City)
    assert llm_simulator.request_count() - before == 2  # one bounded repair


@pytest.mark.parametrize("kind", KINDS)
def test_cache_tokens_are_typed(make_manager: Callable[..., LLMManager], llm_simulator: Any, kind: str):
    client = make_manager(api_keys=[llm_simulator.keys[0]]).get_client(kind)  # the cache is per key
    long_text = "The quick brown fox jumps over the lazy dog. " * 400
    system: Any = [TextBlock(long_text, cache_control={"type": "ephemeral"})] if kind == "anthropic" else long_text
    first = client.complete("hi", system=system)
    second = client.complete("hi", system=system)
    if kind == "anthropic":
        assert first.usage.cache_creation_input_tokens and first.usage.cache_read_input_tokens in (None, 0)
        assert second.usage.cache_read_input_tokens and second.usage.cache_read_input_tokens > 1000
    else:
        assert second.usage.cache_read_input_tokens and second.usage.cache_read_input_tokens >= 1024
    assert second.usage.reasoning_tokens is None


@pytest.mark.parametrize("name, expected", [
    ("tools.py", ["[anthropic] Result:", "[openai] streamed: [('get_weather', {'city': 'Oslo'})",
                  "[openai] structured: City("]),
    ("vision.py", ["[anthropic] Simulated reply to: What is in this picture?",
                   "[openai] Simulated reply to: Summarise the report."]),
])
def test_the_examples_run_against_the_simulator(name: str, expected: list[str]):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / name
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    for line in expected:
        assert line in result.stdout, result.stdout
