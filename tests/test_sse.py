"""Tests for llm_sync.sse: fixture transcripts, chunk-split invariance, per-rule units."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sync.sse import SSEEvent, SSEParser, iter_sse

FIXTURES = Path(__file__).parent / "fixtures" / "sse"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text("utf-8"))
NAMES = sorted(EXPECTED)
# Fixtures whose byte stream stops in the middle of an SSE event (parser-level truncation).
# anthropic_truncated.sse is cut cleanly between events, so only the provider notices.
PARSER_TRUNCATED = {"openai_truncated.sse"}


def _raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(chunks: list[bytes]) -> tuple[list[SSEEvent], bool]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events, parser.truncated


def split_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in zip(bounds, bounds[1:])]


def decode(provider: str, events: list[SSEEvent]) -> dict[str, Any]:
    """Minimal test-only provider decoding (deliberately independent of provider code)."""
    text: list[str] = []
    out: dict[str, Any] = {"stop_reason": None, "input_tokens": None, "output_tokens": None}
    error = "truncated"
    for ev in events:
        if provider == "anthropic":
            payload = json.loads(ev.data)
            assert payload["type"] == ev.event
            if ev.event == "message_start":
                usage = payload["message"]["usage"]
                out["input_tokens"] = usage["input_tokens"]
                out["output_tokens"] = usage["output_tokens"]
            elif ev.event == "content_block_delta" and payload["delta"]["type"] == "text_delta":
                text.append(payload["delta"]["text"])
            elif ev.event == "message_delta":
                out["stop_reason"] = payload["delta"]["stop_reason"]
                out["output_tokens"] = payload["usage"]["output_tokens"]
            elif ev.event == "message_stop":
                error = None
            elif ev.event == "error":
                error = "midstream"
        else:
            assert ev.event == "message"
            if ev.data == "[DONE]":
                error = None
                continue
            payload = json.loads(ev.data)
            if "error" in payload:
                error = "midstream"
                continue
            for choice in payload["choices"]:
                text.append(choice["delta"].get("content") or "")
                if choice["finish_reason"] is not None:
                    out["stop_reason"] = choice["finish_reason"]
            if payload.get("usage"):
                out["input_tokens"] = payload["usage"]["prompt_tokens"]
                out["output_tokens"] = payload["usage"]["completion_tokens"]
    return {"provider": provider, "text": "".join(text), **out, "error": error, "events": len(events)}


# --------------------------------------------------------------------------- fixtures


def test_expected_covers_every_fixture() -> None:
    assert set(EXPECTED) == {p.name for p in FIXTURES.glob("*.sse")}


@pytest.mark.parametrize("name", NAMES)
def test_fixture_whole(name: str) -> None:
    events, truncated = parse([_raw(name)])
    exp = EXPECTED[name]
    assert len(events) == exp["events"]
    assert decode(exp["provider"], events) == exp
    assert truncated == (name in PARSER_TRUNCATED)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_byte_at_a_time(name: str) -> None:
    raw = _raw(name)
    whole = parse([raw])
    assert parse([raw[i : i + 1] for i in range(len(raw))]) == whole
    assert list(iter_sse(raw[i : i + 1] for i in range(len(raw)))) == whole[0]


def test_crlf_fixture_equals_lf_fixture() -> None:
    assert parse([_raw("anthropic_crlf.sse")]) == parse([_raw("anthropic_basic.sse")])


def _interesting_cuts(raw: bytes) -> list[int]:
    """Positions between CR and LF, and inside multi-byte UTF-8 characters."""
    between_crlf = [i + 1 for i in range(len(raw) - 1) if raw[i : i + 2] == b"\r\n"]
    inside_char = [i for i, b in enumerate(raw) if 0x80 <= b < 0xC0]
    return between_crlf + inside_char


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fixture_random_splits(name: str, data: st.DataObject) -> None:
    raw = _raw(name)
    position = st.integers(0, len(raw))
    interesting = _interesting_cuts(raw)
    if interesting:
        position = st.one_of(position, st.sampled_from(interesting))
    cuts = data.draw(st.lists(position, max_size=60), label="cuts")
    assert parse(split_at(raw, cuts)) == parse([raw])


# ------------------------------------------------------------------------ unit rules


def test_lf_crlf_and_cr_only_line_endings() -> None:
    for eol in (b"\n", b"\r\n", b"\r"):
        events, _ = parse([b"event: a" + eol + b"data: x" + eol + eol + b"data: y" + eol + eol])
        assert events == [SSEEvent("a", "x"), SSEEvent("message", "y")], eol


def test_mixed_line_endings() -> None:
    events, _ = parse([b"data: a\rdata: b\r\ndata: c\n\r\n"])
    assert events == [SSEEvent("message", "a\nb\nc")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    # If the LF were a second line ending, this would dispatch "a" early.
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SSEEvent("message", "a\nb")]
    assert parser.feed(b"\n") == []  # completes the CRLF, not a blank line
    parser.close()
    assert not parser.truncated


def test_cr_then_empty_chunk_then_lf() -> None:
    events, _ = parse([b"data: a\r", b"", b"\n", b"\r", b"", b"\n"])
    assert events == [SSEEvent("message", "a")]


def test_cr_then_cr_is_blank_line() -> None:
    events, _ = parse([b"data: a\r", b"\r"])
    assert events == [SSEEvent("message", "a")]


def test_utf8_split_inside_character() -> None:
    raw = "data: h\u00e9llo \u4e16\u754c \U0001f44b\n\n".encode()
    for i in range(len(raw) + 1):
        assert parse([raw[:i], raw[i:]])[0] == [SSEEvent("message", "h\u00e9llo \u4e16\u754c \U0001f44b")]


def test_invalid_utf8_is_replaced() -> None:
    events, _ = parse([b"data: a\xffb\n\n"])
    assert events == [SSEEvent("message", "a\ufffdb")]


def test_bom_stripped_only_at_start() -> None:
    bom = b"\xef\xbb\xbf"
    assert parse([bom + b"data: x\n\n"])[0] == [SSEEvent("message", "x")]
    assert parse([bom[:1], bom[1:] + b"event: e\n", b"data: x\n\n"])[0] == [SSEEvent("e", "x")]
    # A second BOM (or one after the first line) is part of the field name -> unknown field.
    assert parse([bom + bom + b"data: x\n\n"])[0] == []
    assert parse([b"\n" + bom + b"data: x\n\n"])[0] == []


def test_comments_ignored() -> None:
    events, _ = parse([b": keep-alive\n\n:\ndata: a\n: inside\ndata: b\n\n"])
    assert events == [SSEEvent("message", "a\nb")]


def test_multiline_data_joined_with_newline() -> None:
    events, _ = parse([b"data: {\"a\":\ndata: 1}\ndata:\n\n"])
    assert events == [SSEEvent("message", '{"a":\n1}\n')]


def test_exactly_one_space_stripped() -> None:
    events, _ = parse([b"data:x\n\ndata:  x \n\nevent:  e\ndata:\tx\n\n"])
    assert events == [SSEEvent("message", "x"), SSEEvent("message", " x "), SSEEvent(" e", "\tx")]


def test_field_without_colon_has_empty_value() -> None:
    events, _ = parse([b"data\ndata\n\nevent\ndata: x\n\n"])
    # "data" twice -> two empty lines -> "\n"; bare "event" -> empty type -> "message".
    assert events == [SSEEvent("message", "\n"), SSEEvent("message", "x")]


def test_value_may_contain_colons() -> None:
    events, _ = parse([b"data: a: b:c\n\n"])
    assert events == [SSEEvent("message", "a: b:c")]


def test_unknown_fields_and_case_sensitivity_ignored() -> None:
    events, _ = parse([b"Data: no\nfoo: bar\ndata: yes\n\n"])
    assert events == [SSEEvent("message", "yes")]


def test_event_without_data_not_dispatched() -> None:
    events, _ = parse([b"event: ping\n\nid: 1\n\nretry: 5\n\n\n\n"])
    assert events == []


def test_event_with_empty_data_is_dispatched() -> None:
    events, _ = parse([b"event: ping\ndata:\n\n", b"event: x\ndata\n\n"])
    assert events == [SSEEvent("ping", ""), SSEEvent("x", "")]


def test_event_type_reset_after_dispatch() -> None:
    events, _ = parse([b"event: a\ndata: 1\n\ndata: 2\n\n"])
    assert events == [SSEEvent("a", "1"), SSEEvent("message", "2")]
    # Also reset by a blank line that dispatched nothing.
    events, _ = parse([b"event: a\n\ndata: 3\n\n"])
    assert events == [SSEEvent("message", "3")]


def test_id_persists_and_nul_ignored() -> None:
    events, _ = parse([b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid: x\0y\ndata: d\n\nid\ndata: e\n\n"])
    assert [e.id for e in events] == ["1", "1", "2", "2", ""]


def test_id_default_none() -> None:
    assert parse([b"data: a\n\n"])[0] == [SSEEvent("message", "a", id=None, retry=None)]


def test_retry_only_all_digits() -> None:
    raw = b"retry: 1500\ndata: a\n\nretry: 12a\ndata: b\n\nretry: -1\nretry:\nretry: \xd9\xa3\ndata: c\n\nretry: 0\n\ndata: d\n\n"
    events, _ = parse([raw])
    assert [e.retry for e in events] == [1500, 1500, 1500, 0]


def test_truncated_after_partial_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b") == [SSEEvent("message", "a")]
    assert not parser.truncated
    assert parser.close() == []
    assert parser.truncated


def test_truncated_after_unterminated_event() -> None:
    events, truncated = parse([b"data: a\n\nevent: x\ndata: b\n"])  # no blank line
    assert events == [SSEEvent("message", "a")]
    assert truncated


def test_not_truncated_after_clean_end() -> None:
    assert parse([b"data: a\n\n"]) == ([SSEEvent("message", "a")], False)
    assert parse([b"data: a\r\n\r\n"]) == ([SSEEvent("message", "a")], False)
    assert parse([b"data: a\n\n: bye\n"]) == ([SSEEvent("message", "a")], False)
    assert parse([]) == ([], False)


def test_close_idempotent_and_feed_after_close_rejected() -> None:
    parser = SSEParser()
    parser.feed(b"data: a")
    assert parser.close() == [] and parser.close() == []
    assert parser.truncated
    with pytest.raises(ValueError):
        parser.feed(b"\n\n")


def test_iter_sse_is_lazy() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"data: 1\n\n"
        raise AssertionError("consumed too eagerly")

    it = iter_sse(chunks())
    assert next(it) == SSEEvent("message", "1")


def test_large_stream_in_tiny_chunks_is_linear() -> None:
    # One 1 MB data line fed 16 bytes at a time: quadratic rescanning would take minutes.
    line = b"data: " + b"x" * 1_000_000 + b"\n\n"
    parser = SSEParser()
    events: list[SSEEvent] = []
    for i in range(0, len(line), 16):
        events.extend(parser.feed(line[i : i + 16]))
    assert len(events) == 1 and len(events[0].data) == 1_000_000


# ------------------------------------------------------------- fast path = general path


class _GeneralOnly(SSEParser):
    """The parser with its LF-only fast path switched off."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._closed:
            raise ValueError("feed() called after close()")
        return self._feed_general(chunk) if chunk else []


def _parse_with(parser: SSEParser, chunks: list[bytes]) -> tuple[list[SSEEvent], bool, list[list[SSEEvent]]]:
    per_chunk = [parser.feed(chunk) for chunk in chunks]
    closed = parser.close()
    return [e for events in per_chunk for e in events] + closed, parser.truncated, per_chunk


_FIELD_LINES = st.one_of(
    st.builds(lambda v: b"data: " + v, st.binary(max_size=12).filter(lambda b: b"\n" not in b and b"\r" not in b)),
    st.builds(lambda v: b"event: " + v, st.text(max_size=8).map(lambda t: t.encode()).filter(
        lambda b: b"\n" not in b and b"\r" not in b)),
    st.sampled_from([b"", b"", b"data:", b"data:  two spaces", b"data", b"event:x", b": comment", b"id: 7",
                     b"id: a\x00b", b"retry: 150", b"retry: x", b"unknown: field", b"\xef\xbb\xbfdata: bom",
                     b"data: \xc3\xa9\xff", b"event: \xe2\x82", b"data: a:b"]),
)


@settings(max_examples=400, deadline=None, database=None)
@given(lines=st.lists(_FIELD_LINES, max_size=25),
       eols=st.lists(st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"]), min_size=25, max_size=25),
       lf_only=st.booleans(), data=st.data())
def test_fast_path_gives_the_same_events_as_the_general_path(lines, eols, lf_only, data):
    raw = b"".join(line + (b"\n" if lf_only else eol) for line, eol in zip(lines, eols))
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12), label="cuts")
    chunks = split_at(raw, cuts)
    fast = _parse_with(SSEParser(), chunks)
    general = _parse_with(_GeneralOnly(), chunks)
    assert fast == general  # events, truncation and which chunk completed each event


def test_fast_path_is_taken_after_the_first_line():
    chunks = [b"data: a\n\n", b"data: b\n\n", b"event: e\ndata:  c\n\n"]
    assert _parse_with(SSEParser(), chunks) == _parse_with(_GeneralOnly(), chunks)
    assert _parse_with(SSEParser(), chunks)[0][1:] == [SSEEvent("message", "b"), SSEEvent("e", " c")]


def test_fast_path_handles_lines_split_across_chunks():
    parser = SSEParser()
    assert parser.feed(b"event: first\ndata: {}\n\n") == [SSEEvent("first", "{}")]
    assert parser.feed(b"event: content_block_delta\nda") == []
    assert parser.feed(b"ta: {\"te") == []
    assert parser.feed(b"xt\": 1}\n") == []
    assert parser.feed(b"\n") == [SSEEvent("content_block_delta", '{"text": 1}')]
