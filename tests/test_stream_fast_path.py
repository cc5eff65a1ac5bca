"""The streams' fast path for plain text deltas (``feed_text_chunk``, taken
while the SSE parser is idle) against the general path (SSE parser, JSON,
``feed``): the same chunks, events, final response and errors, whatever
the transcript, its JSON formatting and how its bytes are cut into chunks."""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sync.errors import LLMError
from llm_sync.providers.anthropic import AnthropicProvider
from llm_sync.providers.anthropic_stream import AnthropicStream
from llm_sync.providers.base import StreamDecoder
from llm_sync.sse import SSEEvent, SSEParser
from llm_sync.streaming import Stream

MARK = "\ue000"  # replaced, in the body's bytes, by bytes that are not UTF-8


class _Raw:
    chunked = False


class _HTTP:
    """A response whose body is ``chunks``, as the socket would hand them."""

    url = "https://api.anthropic.test/v1/messages"
    headers: dict[str, str] = {}

    def __init__(self, chunks: list[bytes]) -> None:
        self.raw = _Raw()
        self._chunks = chunks

    def iter_content(self, chunk_size: Optional[int] = None) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        pass


class _SlowDecoder(AnthropicStream):
    """The general path only."""

    def feed_text_chunk(self, chunk: bytes) -> Optional[list[str]]:
        return None


class _CountingDecoder(AnthropicStream):
    fast_chunks = 0

    def feed_text_chunk(self, chunk: bytes) -> Optional[list[str]]:
        texts = super().feed_text_chunk(chunk)
        if texts is not None:
            _CountingDecoder.fast_chunks += 1
        return texts


class _Provider(AnthropicProvider):
    def __init__(self, decoder: type[AnthropicStream]) -> None:
        super().__init__("https://api.anthropic.test")
        self._decoder_class = decoder

    def stream_decoder(self) -> StreamDecoder:
        return self._decoder_class(self)


def _outcome(decoder: type[AnthropicStream], chunks: list[bytes], view: str) -> dict[str, Any]:
    """Everything a caller can see of one stream read through ``view``."""
    stream = Stream(_HTTP(chunks), _Provider(decoder), "client-1", 0.0)  # type: ignore[arg-type]
    seen: list[Any] = []
    result: dict[str, Any] = {"items": seen}
    try:
        if view == "text":
            for chunk in stream:
                seen.append(chunk)
        else:
            for event in stream.events():
                seen.append(event)
    except LLMError as error:
        result["error"] = (type(error), error.message, getattr(error, "partial_text", None))
    result["text"] = stream.text
    if "error" not in result:
        response = stream.response
        result["response"] = response.model_dump(exclude={"latency_ms", "metadata"})
    return result


# --- transcripts ---------------------------------------------------------------

_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["Hello", " world", 'say "hi"', "a\\b", "tab\there", "line\nbreak", "\u00e9t\u00e9", "\U0001f600",
     MARK, "x" + MARK + "y", "\x7f", "\u2028"])


@st.composite
def _transcript(draw: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test",
        "usage": {"input_tokens": 5, "output_tokens": 1}}}]
    kinds: dict[int, str] = {}
    for _ in range(draw(st.integers(0, 25))):
        index = draw(st.integers(0, 3))
        action = draw(st.sampled_from(["delta"] * 6 + ["start", "stop", "ping", "thinking", "json", "error"]))
        if action == "start":
            kind = draw(st.sampled_from(["text", "thinking", "tool_use"]))
            block: dict[str, Any] = {"type": kind}
            if kind == "text":
                block["text"] = draw(st.sampled_from(["", "Hi"]))
            elif kind == "thinking":
                block["thinking"] = ""
            else:
                block.update(id=f"toolu_{index}", name="lookup", input={})
            kinds[index] = kind
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        elif action == "delta":  # to any block: open text, thinking, tool, closed or never opened
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": draw(_texts)}})
        elif action == "thinking":
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": draw(_texts)}})
        elif action == "json":
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": '{"q": 1}'}})
        elif action == "stop":
            events.append({"type": "content_block_stop", "index": index})
        elif action == "ping":
            events.append({"type": "ping"})
        elif draw(st.integers(0, 3)) == 0:  # errors: rare, they end the stream
            events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    if draw(st.booleans()):
        events.append({"type": "message_delta", "delta": {"stop_reason": draw(st.sampled_from(["end_turn", "refusal"]))},
                       "usage": {"output_tokens": 7}})
        events.append({"type": "message_stop"})
    return events


@st.composite
def _body(draw: Any) -> list[bytes]:
    """A transcript as the server might write it, cut into chunks."""
    compact = draw(st.booleans())
    ascii_only = draw(st.booleans())
    named = draw(st.booleans())  # event: lines, or the type in the data only
    eol = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", MARK.encode()]))
    events = []
    for event in draw(_transcript()):
        data = json.dumps(event, separators=(",", ":") if compact else (", ", ": "), ensure_ascii=ascii_only)
        raw = (b"event: " + event["type"].encode() + eol if named else b"") + b"data: " + data.encode() + eol + eol
        events.append(raw.replace(MARK.encode(), bad))
    # Cut at event boundaries (where the fast path applies), and anywhere.
    body = b"".join(events)
    cuts = set()
    position = 0
    for raw in events:
        position += len(raw)
        if draw(st.booleans()):
            cuts.add(position)
    cuts.update(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=4)))
    if draw(st.booleans()):
        cuts = {cut for cut in cuts if cut in _boundaries(events)}
    edges = [0, *sorted(cut for cut in cuts if 0 < cut < len(body)), len(body)]
    return [body[start:end] for start, end in zip(edges, edges[1:]) if end > start]


def _boundaries(events: list[bytes]) -> set[int]:
    out, position = set(), 0
    for raw in events:
        position += len(raw)
        out.add(position)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=_body(), view=st.sampled_from(["text", "events"]))
def test_fast_path_matches_the_general_path(chunks: list[bytes], view: str) -> None:
    assert _outcome(AnthropicStream, chunks, view) == _outcome(_SlowDecoder, chunks, view)


@settings(max_examples=300, deadline=None)
@given(chunks=_body())
def test_decoder_fast_path_leaves_the_decoder_as_feed_does(chunks: list[bytes]) -> None:
    """At the decoder: feed_text_chunk (where it applies) and the parser
    plus feed leave the same text, blocks and answer behind."""
    fast, slow = AnthropicStream(AnthropicProvider("https://x.test")), AnthropicStream(AnthropicProvider("https://x.test"))
    fast_parser, slow_parser = SSEParser(), SSEParser()
    fast_texts: list[str] = []
    slow_texts: list[str] = []
    fast_error = slow_error = None

    def run(decoder: AnthropicStream, parser: SSEParser, texts: list[str], use_fast: bool) -> Optional[str]:
        for chunk in chunks:
            if use_fast and parser.idle:
                taken = decoder.feed_text_chunk(chunk)
                if taken is not None:
                    texts.extend(taken)
                    continue
            try:
                for event in parser.feed(chunk):
                    text = decoder.feed(event)
                    if text:
                        texts.append(text)
            except Exception as exc:
                return type(exc).__name__
        return None

    fast_error = run(fast, fast_parser, fast_texts, True)
    slow_error = run(slow, slow_parser, slow_texts, False)
    assert (fast_texts, fast_error) == (slow_texts, slow_error)
    assert fast.blocks == slow.blocks
    assert (fast.thinking, fast.tool_calls, fast.done, fast.usage) == (slow.thinking, slow.tool_calls, slow.done,
                                                                       slow.usage)
    assert [e for e in fast.events if type(e).__name__ != "TextDelta"] == \
        [e for e in slow.events if type(e).__name__ != "TextDelta"]


# --- the fast path is taken ---------------------------------------------------------

def _delta(text: str, compact: bool = True, index: int = 0) -> bytes:
    data = json.dumps({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}},
                      separators=(",", ":") if compact else (", ", ": "), ensure_ascii=False)
    return b"event: content_block_delta\ndata: " + data.encode() + b"\n\n"


def _wrap(*middle: bytes) -> list[bytes]:
    start = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"m",'
             b'"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
             b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
             b'"content_block":{"type":"text","text":""}}\n\n')
    end = (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
           b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
           b'"usage":{"output_tokens":3}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return [start, *middle, end]


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "spaced"])
def test_plain_text_deltas_take_the_fast_path(compact: bool) -> None:
    _CountingDecoder.fast_chunks = 0
    chunks = _wrap(_delta("Hello", compact), _delta(" w\u00f6rld", compact), _delta("!", compact) + _delta("?", compact))
    outcome = _outcome(_CountingDecoder, chunks, "text")
    assert outcome["items"] == ["Hello", " w\u00f6rld", "!", "?"]
    assert outcome["response"]["content"] == "Hello w\u00f6rld!?"
    assert _CountingDecoder.fast_chunks == 3
    assert outcome == _outcome(_SlowDecoder, chunks, "text")


def test_the_fast_path_declines_what_it_cannot_take_whole() -> None:
    decoder = AnthropicStream(AnthropicProvider("https://x.test"))
    assert decoder.feed_text_chunk(_delta("no block open yet")) is None  # a delta without its start
    list(map(decoder.feed, SSEParser().feed(_wrap()[0])))
    assert decoder.feed_text_chunk(_delta("ok")) == ["ok"]
    assert decoder.feed_text_chunk(_delta('esc"aped')) is None  # JSON escapes: json.loads decides
    assert decoder.feed_text_chunk(_delta("ok") + b"event: ping\ndata: {}\n\n") is None  # not all text deltas
    assert decoder.feed_text_chunk(_delta("ok")[:-1]) is None  # unfinished
    assert decoder.feed_text_chunk(_delta("x", index=1)) is None  # block 1 not open
    assert decoder.feed_text_chunk(_delta("x").replace(b"\n", b"\r\n")) is None
    assert decoder.feed_text_chunk(b"id: 7\n" + _delta("x")) is None  # id: changes the parser's state
    assert decoder.feed_text_chunk(_delta("x").replace(b'"index":0', b'"index":' + b"9" * 5000)) is None


def test_an_index_too_long_for_int_fails_as_on_the_general_path() -> None:
    huge = _delta("x").replace(b'"index":0', b'"index":' + b"1" * 5000)
    chunks = _wrap(huge)
    fast = _outcome(AnthropicStream, chunks, "text")
    assert fast == _outcome(_SlowDecoder, chunks, "text")
    assert "error" in fast


def test_sse_parser_idle() -> None:
    parser = SSEParser()
    assert not parser.idle  # the first line may carry a BOM
    parser.feed(b"event: ping\ndata: {}\n\n")
    assert parser.idle
    parser.feed(b"data: {")
    assert not parser.idle  # a partial line
    parser.feed(b"}\n")
    assert not parser.idle  # an unfinished event
    parser.feed(b"\n")
    assert parser.idle
    parser.feed(b"data: x\r")
    parser.feed(b"\n")
    assert not parser.idle  # CR then LF across chunks, event unfinished
    parser.close()
    assert not parser.idle


def test_events_view_makes_text_deltas_from_fast_path_text() -> None:
    chunks = _wrap(_delta("Hel"), _delta("lo"))
    outcome = _outcome(AnthropicStream, chunks, "events")
    assert outcome == _outcome(_SlowDecoder, chunks, "events")
    assert [type(event).__name__ for event in outcome["items"]] == ["TextDelta", "TextDelta"]
    assert isinstance(SSEEvent("message", "x"), SSEEvent)


def test_a_second_pass_after_close_is_refused_even_with_events_read_ahead() -> None:
    """Several events in one chunk are queued at once; closing after the
    first still makes a second pass an error, not a silent empty loop."""
    from llm_sync.errors import LLMError as Error

    stream = Stream(_HTTP(_wrap(_delta("a") + _delta("b") + _delta("c"))), _Provider(AnthropicStream), "c", 0.0)  # type: ignore[arg-type]
    assert next(stream) == "a"
    stream.close()
    assert next(stream, None) is None
    with pytest.raises(Error, match="only once"):
        list(stream)
