"""Stream.events(): typed events as they arrive, one reading view per
stream, and the final response's tool calls, refusal, thinking and blocks
(with a fake decoder standing in for the providers' wire translation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import responses

from llm_sync import LLMError, LLMManager, LLMProviderError, TextBlock, ToolCall, ToolUseBlock
from llm_sync.events import StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta, ToolCallDone
from llm_sync.providers.base import StreamDecoder
from llm_sync.sse import SSEEvent

URL = "https://api.openai.test/v1/chat/completions"
FIXTURES = Path(__file__).parent / "fixtures" / "sse"


class FakeDecoder(StreamDecoder):
    """Reads ``data: {"text"|"thinking"|"tool"|"error"|"end": ...}`` lines.
    ``own_text_events``: append a TextDelta per text chunk (as the
    providers' decoders do) or leave it to the Stream."""

    def __init__(self, own_text_events: bool) -> None:
        super().__init__()
        self.own_text_events = own_text_events
        self.texts: list[str] = []

    def feed(self, event: SSEEvent) -> Optional[str]:
        data = json.loads(event.data)
        if "text" in data:
            if self.own_text_events:
                self.events.append(TextDelta(data["text"]))
            self.texts.append(data["text"])
            return str(data["text"])
        if "thinking" in data:
            self.events.append(ThinkingDelta(data["thinking"]))
            self.thinking = (self.thinking or "") + data["thinking"]
        elif "tool" in data:
            call = ToolCall(id="call_1", name="lookup", arguments=data["tool"])
            self.events.append(ToolCallDelta(0, "call_1", "lookup", json.dumps(data["tool"])))
            self.events.append(ToolCallDone(0, call))
            self.tool_calls.append(call)
        elif "error" in data:
            raise LLMProviderError("overloaded", status_code=529, error_type="overloaded_error", mid_stream=True)
        elif "end" in data:
            self.blocks = [TextBlock("".join(self.texts)), ToolUseBlock("call_1", "lookup", {"q": "Oslo"})]
            self.stop_reason = "tool_calls"
            self.done = True
        return None


def sse(*items: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(item).encode() + b"\n\n" for item in items)


BODY = sse({"thinking": "Let me see."}, {"text": "Looking "}, {"text": "it up."}, {"tool": {"q": "Oslo"}},
           {"end": True})


@pytest.fixture(params=[False, True], ids=["stream-adds-text-events", "decoder-adds-text-events"])
def manager(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMManager]:
    with LLMManager.from_dict({"providers": {"openai": {
        "api_keys": ["sk-test-0001"], "base_url": "https://api.openai.test", "max_retries": 0}},
            "pool": {"max_size": 1}}) as m:
        provider = m.get_client("openai")._pipeline.provider
        monkeypatch.setattr(provider, "stream_decoder", lambda: FakeDecoder(request.param))
        yield m


def serve(mock: responses.RequestsMock, body: bytes = BODY) -> None:
    mock.add(responses.POST, URL, body=body, status=200, content_type="text/event-stream")


def free(manager: LLMManager) -> int:
    return int(manager.get_status("openai")["available_clients"])


def test_events_arrive_typed_and_in_order(mock, manager):
    serve(mock)
    with manager.get_client("openai").stream("Hi", tools=[{"name": "lookup"}]) as stream:
        events: list[StreamEvent] = list(stream.events())
        assert [type(e).__name__ for e in events] == [
            "ThinkingDelta", "TextDelta", "TextDelta", "ToolCallDelta", "ToolCallDone"]
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["Looking ", "it up."]
        assert stream.text == "Looking it up."
        response = stream.response
    assert response.content == "Looking it up."
    assert response.tool_calls == [ToolCall(id="call_1", name="lookup", arguments={"q": "Oslo"})]
    assert response.thinking == "Let me see."
    assert response.stop_reason == "tool_use"
    assert any(isinstance(b, ToolUseBlock) for b in response.blocks)
    assert response.to_message().blocks[-1] == ToolUseBlock("call_1", "lookup", {"q": "Oslo"})
    assert free(manager) == 1


def test_text_iteration_is_unchanged_and_the_response_still_has_the_tool_call(mock, manager):
    serve(mock)
    with manager.get_client("openai").stream("Hi") as stream:
        assert list(stream) == ["Looking ", "it up."]
        assert stream.response.tool_calls[0].arguments == {"q": "Oslo"}
        assert stream.response.thinking == "Let me see."


def test_one_view_per_stream(mock, manager):
    serve(mock)
    serve(mock)
    client = manager.get_client("openai")
    with client.stream("Hi") as stream:
        assert next(stream) == "Looking "
        with pytest.raises(LLMError, match="events\\(\\) must be called before"):
            stream.events()
    with client.stream("Hi") as stream:
        events = stream.events()
        assert isinstance(next(events), ThinkingDelta)
        with pytest.raises(LLMError, match="read with events"):
            next(stream)
        with pytest.raises(LLMError, match="read with events"):
            list(stream)
        with pytest.raises(LLMError, match="once"):
            stream.events()


def test_breaking_out_of_events_returns_the_lease(mock, manager):
    serve(mock)
    stream = manager.get_client("openai").stream("Hi")
    assert free(manager) == 0
    for event in stream.events():
        if isinstance(event, TextDelta):
            break
    assert stream.closed and free(manager) == 1
    assert stream.text == "Looking "


def test_an_error_after_the_first_event_reaches_the_reader_after_it(mock, manager):
    serve(mock, sse({"thinking": "Hmm."}, {"error": "overloaded"}))
    stream = manager.get_client("openai").stream("Hi")  # opened: the first event arrived
    events = stream.events()
    assert next(events) == ThinkingDelta("Hmm.")
    with pytest.raises(LLMProviderError) as info:
        next(events)
    assert info.value.status_code == 529
    assert free(manager) == 1


def test_an_error_before_any_event_is_raised_when_opening(mock, manager):
    serve(mock, sse({"error": "overloaded"}))
    with pytest.raises(LLMProviderError):
        manager.get_client("openai").stream("Hi")
    assert free(manager) == 1


def test_todays_decoders_feed_events_too(mock):
    """The providers' own decoders (text only until the wire translation
    lands): events() yields exactly the text chunks text iteration would."""
    mock.add(responses.POST, URL, body=(FIXTURES / "openai_basic.sse").read_bytes(), status=200,
             content_type="text/event-stream")
    mock.add(responses.POST, URL, body=(FIXTURES / "openai_basic.sse").read_bytes(), status=200,
             content_type="text/event-stream")
    with LLMManager.from_dict({"providers": {"openai": {
            "api_keys": ["sk-test-0001"], "base_url": "https://api.openai.test", "max_retries": 0}}}) as m:
        client = m.get_client("openai")
        with client.stream("Hi") as stream:
            chunks = list(stream)
        with client.stream("Hi") as stream:
            events = list(stream.events())
            assert all(isinstance(e, TextDelta) for e in events)
            assert [e.text for e in events if isinstance(e, TextDelta)] == chunks
            assert stream.response.content == "".join(chunks) != ""
