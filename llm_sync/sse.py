"""Incremental Server-Sent Events parser (WHATWG "event stream interpretation").

Streaming LLM APIs deliver their output as ``text/event-stream``; sockets hand us
arbitrary byte chunks, so line endings and UTF-8 characters can be split anywhere.
This module turns such chunks into complete events without re-scanning old bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser", "iter_sse"]

# CRLF is listed first so a pair inside one chunk is one terminator, not two.
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event.

    ``id`` and ``retry`` carry stream *state* as of this event (the spec's
    "last event ID" and "reconnection time"), so they persist across events
    until the stream changes them; a lone ``retry:``/``id:`` block is not lost.
    """

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Incremental parser: feed raw bytes as they arrive from the socket, get complete events out."""

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes of the current, not yet terminated line
        self._skip_lf = False  # previous chunk ended in CR: a leading LF belongs to it
        self._first_line = True  # only the very first line may carry a BOM
        self._closed = False
        self._truncated = False
        # Per-event buffers (reset on every blank line).
        self._event_type = ""
        self._data: list[str] = []
        self._pending = False  # a field line was seen since the last blank line
        # Stream state (survives dispatch, as in the spec).
        self._last_id: str | None = None
        self._retry: int | None = None

    @property
    def idle(self) -> bool:
        """Between events: past the first line, nothing of a line or an
        event buffered. A chunk of whole events fed now is parsed from a
        clean slate, so a caller that recognises such a chunk may skip
        ``feed`` for it (only ``id:``/``retry:`` fields, which this state
        lacks, would change the parser; such a chunk must be fed)."""
        return not (self._buf or self._pending or self._skip_lf or self._first_line or self._closed)

    @property
    def truncated(self) -> bool:
        """True after close() if an unfinished event (or line) was discarded at EOF."""
        return self._truncated

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the events completed by it (possibly none).

        Chunks with LF line ends only (what the providers send) take a fast
        path: one ``split``, and ``data: ``/``event: ``/blank lines handled
        inline; anything else goes through :meth:`_process_line`. A chunk
        with a CR anywhere, or the stream's first line (a BOM), takes the
        general path (``_feed_general``). Both give the same events."""
        if self._closed:
            raise ValueError("feed() called after close()")
        if not chunk:
            return []
        if self._skip_lf or self._first_line or b"\r" in chunk:
            return self._feed_general(chunk)
        if self._buf:  # finish the pending line without re-reading it
            end = chunk.find(b"\n")
            if end < 0:
                self._buf += chunk
                return []
            self._buf += chunk[:end]
            lines = [bytes(self._buf)]
            self._buf.clear()
            lines.extend(chunk[end + 1:].split(b"\n"))
        else:
            lines = chunk.split(b"\n")
        tail = lines.pop()  # after the last LF: an unfinished line (or b"")
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if line.startswith(b"data: "):
                data.append(line[6:].decode("utf-8", errors="replace"))
                self._pending = True
            elif not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
                data = self._data  # a new list after each dispatch
            elif line.startswith(b"event: "):
                self._event_type = line[7:].decode("utf-8", errors="replace")
                self._pending = True
            else:
                self._process_line(line)  # never dispatches: the line is not blank
        if tail:
            self._buf += tail
        return events

    def _feed_general(self, chunk: bytes) -> list[SSEEvent]:
        """Any chunk: CR, LF or CRLF line ends, split anywhere."""
        start = 0
        if self._skip_lf:
            # CRLF split across chunks: the CR already ended the line.
            self._skip_lf = False
            if chunk[0] == 0x0A:
                start = 1
        events: list[SSEEvent] = []
        end = len(chunk)
        # Only the new bytes are scanned; the partial line in _buf is never re-read.
        for m in _EOL.finditer(chunk, start):
            if self._buf:
                self._buf += chunk[start : m.start()]
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = chunk[start : m.start()]
            start = m.end()
            if start == end and m.group() == b"\r":
                self._skip_lf = True
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        if start < end:
            self._buf += chunk[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """Signal end of input.

        Per spec an event not yet terminated by a blank line is discarded, so this
        always returns ``[]``; ``truncated`` records whether anything was dropped,
        which lets callers tell a cut connection from a clean end.
        """
        if not self._closed:
            self._closed = True
            self._truncated = bool(self._buf) or self._pending
            self._buf.clear()
            self._reset_event()
        return []

    def _reset_event(self) -> None:
        self._event_type = ""
        self._data = []
        self._pending = False

    def _process_line(self, raw: bytes) -> SSEEvent | None:
        """Apply one complete line; return an event if it was a dispatching blank line."""
        if self._first_line:
            self._first_line = False
            if raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
        if not raw:
            return self._dispatch()
        # Decoding per complete line is safe: CR/LF never occur inside UTF-8 sequences.
        line = raw.decode("utf-8", errors="replace")
        colon = line.find(":")
        if colon == 0:
            return None  # comment
        if colon < 0:
            name, value = line, ""
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value.startswith(" "):
                value = value[1:]
        self._pending = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        # Any other field name is ignored, as the spec requires.
        return None

    def _dispatch(self) -> SSEEvent | None:
        """Blank line: emit the buffered event if it has data lines, then reset."""
        if not self._data:
            self._reset_event()
            return None
        event = SSEEvent(
            event=self._event_type or "message",
            data="\n".join(self._data),
            id=self._last_id,
            retry=self._retry,
        )
        self._reset_event()
        return event


def iter_sse(chunks: Iterable[bytes]) -> Iterator[SSEEvent]:
    """Yield events from an iterable of byte chunks (e.g. ``response.iter_content()``)."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.close()
