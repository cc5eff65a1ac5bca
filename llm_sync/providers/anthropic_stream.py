"""Anthropic stream events → text chunks, typed events and the final
answer's blocks, tool calls, thinking and refusal.

``message_start`` → per block ``content_block_start`` /
``content_block_delta``\\ s / ``content_block_stop`` → ``message_delta`` →
``message_stop``; ``ping`` anywhere; ``error`` anywhere (also as a bare
``data:`` line without an ``event:`` line).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ..content import ContentBlock, TextBlock, ThinkingBlock, ToolUseBlock
from ..events import TextDelta, ThinkingDelta, ToolCallDelta, ToolCallDone
from ..sse import SSEEvent
from ..tools import ToolCall, parse_arguments
from .anthropic_blocks import REFUSAL_NOTE, text_field, usage_of
from .base import Provider, StreamDecoder

__all__ = ["AnthropicStream"]

# Event types of a well-formed stream (anything else with an "error" object is an error).
_MESSAGE_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta",
                             "content_block_stop", "message_delta", "message_stop", "ping"})


# One whole SSE event carrying a plain text delta, as the API sends it
# (compact JSON, or with spaces after separators as some servers write it):
# ``[event: content_block_delta\n]data: {"type": "content_block_delta",
# "index": N, "delta": {"type": "text_delta", "text": "..."}}\n\n``, its text
# free of escapes, quotes and control characters — so its raw bytes, decoded,
# are exactly what json.loads would give. Anything else (other keys, another
# order, escapes, an index of 10 digits or more, CR line ends, id: fields)
# takes the general path.
_W = rb"[ \t]*"
_FAST_TEXT_DELTA = re.compile(
    rb"(?:event: content_block_delta\n)?data: " + _W
    + rb"\{" + _W + rb'"type"' + _W + rb":" + _W + rb'"content_block_delta"' + _W + rb"," + _W
    + rb'"index"' + _W + rb":" + _W + rb"(0|[1-9][0-9]{0,8})" + _W + rb"," + _W
    + rb'"delta"' + _W + rb":" + _W + rb"\{" + _W + rb'"type"' + _W + rb":" + _W + rb'"text_delta"' + _W + rb"," + _W
    + rb'"text"' + _W + rb":" + _W + rb'"([^"\\\x00-\x1f]+)"' + _W + rb"\}" + _W + rb"\}" + _W + rb"\n\n")


@dataclass
class _Open:
    """A content block being received."""

    type: str
    parts: list[str] = field(default_factory=list)  # text, thinking or JSON fragments
    id: str = ""
    name: str = ""
    signature: Optional[str] = None
    start_input: Any = None  # tool_use input given in full at the start (some servers)
    tool_index: int = -1  # ordinal among this answer's tool calls


class AnthropicStream(StreamDecoder):
    """One stream's decoder. ``ToolCallDelta.index`` / ``ToolCallDone.index``
    count tool calls (0, 1, ...), so they index ``tool_calls``; they are not
    the content-block index."""

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self._provider = provider
        self._open: dict[int, _Open] = {}
        self._closed: dict[int, ContentBlock] = {}
        self._raw_tools: dict[int, dict[str, Any]] = {}
        self._text: list[str] = []

    def feed(self, event: SSEEvent) -> Optional[str]:
        kind = event.event
        if kind == "ping":
            return None
        if kind == "error":
            raise self._provider.error_from_event(self._error_body(event))
        data = self.load(event)
        if not isinstance(data, dict):
            return None
        named = data.get("type")
        if kind == "message" and isinstance(named, str):  # no event: line: the type is in the data
            kind = named
        if kind == "error" or (kind not in _MESSAGE_EVENTS and isinstance(data.get("error"), (dict, str))):
            raise self._provider.error_from_event(data)
        handler = getattr(self, "_on_" + kind, None) if kind in _MESSAGE_EVENTS else None
        return handler(data) if handler is not None else None

    def feed_text_chunk(self, chunk: bytes) -> Optional[list[str]]:
        """Whole plain text-delta events to already open text blocks, with
        no JSON decoding (see ``_FAST_TEXT_DELTA``); None otherwise."""
        match = _FAST_TEXT_DELTA.match(chunk)
        if match is None:
            return None
        opened = self._open.get(int(match[1]))
        if opened is None or opened.type != "text":
            return None
        if match.end() == len(chunk):  # the usual case: one event a chunk
            text = match[2].decode("utf-8", "replace")
            opened.parts.append(text)
            self._text.append(text)
            return [text]
        matches = [(opened, match)]
        end = match.end()
        while end < len(chunk):  # several events: all must qualify, or none is taken
            match = _FAST_TEXT_DELTA.match(chunk, end)
            if match is None:
                return None
            opened = self._open.get(int(match[1]))
            if opened is None or opened.type != "text":
                return None
            matches.append((opened, match))
            end = match.end()
        texts = []
        for opened, match in matches:
            text = match[2].decode("utf-8", "replace")
            opened.parts.append(text)
            self._text.append(text)
            texts.append(text)
        return texts

    def _error_body(self, event: SSEEvent) -> Any:
        try:
            return json.loads(event.data)
        except (ValueError, RecursionError):
            return {"error": {"message": event.data.strip()[:200] or "error event in stream"}}

    # --- events ---------------------------------------------------------
    def _on_message_start(self, data: dict[str, Any]) -> None:
        message = data.get("message") or {}
        self.model = text_field(message.get("model")) or ""
        self.message_id = message.get("id") if isinstance(message.get("id"), str) else None
        usage_of(message.get("usage"), self.usage)

    def _on_content_block_start(self, data: dict[str, Any]) -> Optional[str]:
        index = _index(data)
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "redacted_thinking":
            self._closed[index] = ThinkingBlock(redacted=str(block.get("data") or ""))
            self._sync_blocks()
            return None
        if kind not in ("text", "thinking", "tool_use"):
            return None  # server tools, citations...: kept out of the typed view
        opened = _Open(type=kind)
        self._open[index] = opened
        if kind == "tool_use":
            opened.id, opened.name = str(block.get("id") or ""), str(block.get("name") or "")
            opened.start_input = block.get("input")
            opened.tool_index = len(self._raw_tools)
            self._raw_tools[index] = dict(block)
            self.events.append(ToolCallDelta(opened.tool_index, id=opened.id, name=opened.name))
            return None
        initial = block.get(kind)
        if isinstance(initial, str) and initial:
            return self._add_text(opened, initial)
        return None

    def _on_content_block_delta(self, data: dict[str, Any]) -> Optional[str]:
        index = _index(data)
        delta = data.get("delta") or {}
        kind = delta.get("type")
        opened = self._open.get(index)
        if kind == "text_delta":
            text = text_field(delta.get("text")) or ""
            if opened is None:  # a delta without its start: still answer text
                opened = self._open[index] = _Open(type="text")
            return self._add_text(opened, text) if text else None
        if opened is None:
            return None
        if kind == "input_json_delta":
            fragment = text_field(delta.get("partial_json")) or ""
            if fragment:
                opened.parts.append(fragment)
                self.events.append(ToolCallDelta(opened.tool_index, arguments=fragment))
        elif kind == "thinking_delta":
            thought = text_field(delta.get("thinking")) or ""
            if thought:
                self._add_text(opened, thought)
        elif kind == "signature_delta":
            opened.signature = (opened.signature or "") + (text_field(delta.get("signature")) or "")
        return None

    def _on_content_block_stop(self, data: dict[str, Any]) -> None:
        self._close(_index(data))

    def _on_message_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta") or {}
        if delta.get("stop_reason"):
            self.stop_reason = text_field(delta["stop_reason"])
            if self.stop_reason == "refusal":
                self.refusal = "".join(self._text) or REFUSAL_NOTE
        if delta.get("stop_sequence"):
            self.extra["stop_sequence"] = delta["stop_sequence"]
        usage_of(data.get("usage"), self.usage)

    def _on_message_stop(self, data: dict[str, Any]) -> None:
        for index in sorted(self._open):  # blocks a server never stopped
            self._close(index)
        if self._raw_tools:
            self.extra["tool_use"] = [self._raw_tools[i] for i in sorted(self._raw_tools)]
        self.done = True

    # --- helpers --------------------------------------------------------
    def _add_text(self, opened: _Open, text: str) -> Optional[str]:
        opened.parts.append(text)
        if opened.type == "thinking":
            self.events.append(ThinkingDelta(text))
            self.thinking = (self.thinking or "") + text
            return None
        self._text.append(text)
        self.events.append(TextDelta(text))
        return text

    def _close(self, index: int) -> None:
        opened = self._open.pop(index, None)
        if opened is None:
            return
        text = "".join(opened.parts)
        if opened.type == "text":
            if text:
                self._closed[index] = TextBlock(text)
        elif opened.type == "thinking":
            self._closed[index] = ThinkingBlock(thinking=text, signature=opened.signature)
            self.thinking = self.thinking or ""
        else:
            self._close_tool(index, opened, text)
        self._sync_blocks()

    def _close_tool(self, index: int, opened: _Open, text: str) -> None:
        if text:
            arguments = parse_arguments(text)
        else:
            arguments = dict(opened.start_input) if isinstance(opened.start_input, dict) else {}
        call = ToolCall(id=opened.id, name=opened.name, arguments=arguments)
        self.tool_calls.append(call)
        self.events.append(ToolCallDone(opened.tool_index, call))
        raw = self._raw_tools[index]
        raw["input"] = arguments
        if opened.id and opened.name:
            self._closed[index] = ToolUseBlock(opened.id, opened.name, arguments)

    def _sync_blocks(self) -> None:
        self.blocks[:] = [self._closed[i] for i in sorted(self._closed)]


def _index(data: dict[str, Any]) -> int:
    index = data.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError("a content block index is not an integer")
    return index
