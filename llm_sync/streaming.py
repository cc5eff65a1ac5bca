"""The Stream object: text chunks (or typed events) out of an open SSE response.

Two views of one stream, and a stream is read through one of them: iterate
the Stream for text chunks, or iterate ``stream.events()`` for typed events
(:mod:`llm_sync.events`: text, thinking, refusal and tool-call deltas) as
they arrive. Both come from the same decoder; ``events()`` yields every
event, TextDelta included, and the text it yielded is in ``.text`` all the
same. Starting one view after the other has started raises LLMError (the
first view already dropped, or took, what the second would need).

Threading contract: a Stream is consumed by one thread at a time. Its
``close()`` may be called from any thread and is idempotent: it wakes a
reader blocked on the socket, closes the HTTP response and returns the pool
lease at once. A stream ends exactly once — read to the end, failed, or
closed early — and its finishers (middleware, counters, the rate limiter)
run exactly once, at that moment.

A stream the caller closes early (``close()``, from any thread, or a
``break``) ends quietly for its reader: the caller chose to stop. A stream
cut because its pool or manager was closed never looks complete: its
reader, now or later, gets :class:`~llm_sync.errors.LLMClosedError`.

Garbage collection also closes an abandoned stream. When the collector
runs inside llm_sync's own locked sections (a reference cycle collected
mid-call), closing there could deadlock on a non-reentrant lock, so such a
stream is handed to its lease to be closed by the pool's next operation.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, MutableMapping, Optional, Protocol, Union

import requests

from .errors import (
    LLMClosedError,
    LLMConnectionError,
    LLMError,
    LLMProviderError,
    LLMStreamError,
    LLMTimeoutError,
    redact,
)
from .events import StreamEvent, TextDelta
from .models import LLMResponse
from .providers.base import SHAPE_ERRORS, Provider, StreamDecoder
from .sse import SSEParser
from .transport import BODY_READ_ERRORS, deadline_error, interrupt, read_error
from .wire import DeadlineWatch

__all__ = ["Stream", "StreamFinisher", "iter_body"]

_log = logging.getLogger("llm_sync")

# Called once when the stream ends: (response, None) on success, or
# (None, error) on failure or early close (``error.cancelled`` is True then).
# Middleware registers these; the innermost registers first and runs first,
# mirroring process_response's order.
StreamFinisher = Callable[[Optional[LLMResponse], Optional[LLMError]], Optional[LLMResponse]]

# Bugs in a server's JSON shape surface as these while decoding a chunk
# (also JSON nested too deep, numbers too large to convert).
_SHAPE_ERRORS = SHAPE_ERRORS


class StreamOwner(Protocol):
    """What a Stream needs from its pool lease."""

    def release(self) -> None: ...

    def defer_close(self, stream: "Stream") -> None: ...


class _CollectorState(threading.local):
    active = False


_collector = _CollectorState()


def _track_collector(phase: str, info: dict[str, Any]) -> None:
    _collector.active = phase == "start"


gc.callbacks.append(_track_collector)


class Stream:
    """Iterates text chunks; once exhausted, ``.response`` is the full
    :class:`LLMResponse`. Also a context manager.

    ``next()`` then a ``for`` loop over the rest works; a second pass after
    the stream has ended raises instead of silently yielding nothing.
    """

    def __init__(
        self,
        http: requests.Response,
        provider: Provider,
        client_id: Optional[str],
        started: float,
        owner: Optional[StreamOwner] = None,
        deadline: Optional[float] = None,
        watch: Optional[DeadlineWatch] = None,
    ) -> None:
        self._http = http
        self._provider = provider
        self._decoder: StreamDecoder = provider.stream_decoder()
        self._client_id = client_id
        self._started = started
        self._owner = owner
        self._deadline = deadline
        self._watch = watch  # shuts the socket at the deadline, also mid-chunk; closed with the stream
        self._finishers: list[StreamFinisher] = []
        self._parser = SSEParser()
        # The decoder's fast path for chunks of plain text deltas, if it has one.
        fast = self._decoder.feed_text_chunk
        self._fast: Optional[Callable[[bytes], Optional[list[str]]]] = (
            None if getattr(fast, "__func__", None) is StreamDecoder.feed_text_chunk else fast)
        # Decoded events not yet handed out: text (a str, from the fast path)
        # or events; text iteration skips all but text and TextDelta.
        self._queue: deque[Union[str, StreamEvent]] = deque()
        self._view: Optional[str] = None  # "text" or "events", once reading began
        self._body: Optional[Iterator[bytes]] = None
        self._parts: list[str] = []
        self._response: Optional[LLMResponse] = None
        self._error: Optional[LLMError] = None
        self._iterating = False
        self._lock = threading.Lock()  # guards _ended, _closed and _cut
        self._ended = False  # succeeded, failed or closed early: finishers ran
        self._outcome: Optional[list[Any]] = None  # [response, error] once ended
        self._closed = False
        # Closed before its end: "" by the caller, else why the pool cut it.
        self._cut: Optional[str] = None
        self.context: MutableMapping[str, Any] = {}

    # --- public -------------------------------------------------------
    @property
    def text(self) -> str:
        """The text yielded so far (as chunks, or as TextDelta events)."""
        return "".join(self._parts)

    @property
    def response(self) -> LLMResponse:
        if self._response is None:
            raise LLMError("the stream's response is available once it has been read to the end")
        return self._response

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def headers(self) -> dict[str, str]:
        """The response headers (lower-case names), known once it opened;
        any that echoes the key is masked."""
        return self._provider.plain_headers(self._http)

    def add_finisher(self, finisher: StreamFinisher) -> None:
        """Run ``finisher`` when the stream ends — at once if it already has
        (a short stream can end while it is being primed)."""
        if self._outcome is None:
            self._finishers.append(finisher)
            return
        response, error = self._outcome
        result = finisher(response, error)
        if response is not None and result is not None:
            self._response = self._outcome[0] = result

    def prime(self) -> None:
        """Read until the first event is ready (or the end): text, or
        thinking or a tool call, which ``events()`` callers want as they
        arrive. A failure before any is raised here — inside the middleware
        chain, where it is retried like any other — rather than to the
        caller's loop. After that, a failure reaches the caller after what
        came before it."""
        while not self._queue and not self._ended:
            self._read()
        if self._error is not None and not self._queue:
            error, self._error = self._error, None
            raise error

    def attach(self, owner: StreamOwner) -> None:
        """Hand the stream its lease, once it has started well."""
        self._owner = owner
        if self._closed:
            owner.release()

    def __iter__(self) -> "Stream":
        self._claim("text")
        # Read to its end, or closed by the caller (whatever it had read
        # ahead is dropped): a second pass would silently yield nothing.
        if self._iterating and self._ended and self._error is None and (
                self._cut == "" or (self._cut is None and not self._queue)):
            raise LLMError("a stream can be iterated only once")
        return self

    def __next__(self) -> str:
        # _next_event, inlined for text and without making TextDelta events.
        if self._view != "text":
            self._claim("text")
        self._iterating = True
        queue = self._queue
        while True:
            if self._cut is not None:
                self._raise_if_cut()  # StopIteration, or LLMClosedError
            if queue:
                item = queue.popleft()
                if item.__class__ is str:
                    text: str = item
                elif isinstance(item, TextDelta):
                    text = item.text
                else:
                    continue
                self._parts.append(text)
                return text
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._ended:
                raise StopIteration
            try:  # _read
                self._pump()
            except Exception:
                if self._cut is None:
                    raise

    def events(self) -> Iterator[StreamEvent]:
        """Typed events as they arrive (:mod:`llm_sync.events`), TextDelta
        included; ``.text`` and, at the end, ``.response`` fill as for text
        iteration. Callable once, and not after text iteration began.
        Breaking out of the loop closes the stream (as ``close()``)."""
        if self._view == "events":
            raise LLMError("events() can be called once per stream")
        self._claim("events")
        return self._events()

    def _events(self) -> Iterator[StreamEvent]:
        finished = False
        try:
            while True:
                event = self._next_event()
                if event is None:
                    finished = True
                    return
                yield event
        finally:
            if not finished:  # abandoned (break, GC) or failed: let go of the connection now
                self.close()

    def _claim(self, view: str) -> None:
        """Reading begins through ``view``; the other view is refused from now on."""
        if self._view is None:
            self._view = view
        elif self._view != view:
            raise LLMError("this stream is read with events(): its text is in .text"
                           if self._view == "events" else
                           "this stream is read as text chunks: events() must be called before reading starts")

    def _next_event(self) -> Optional[StreamEvent]:
        """The next decoded event (its text kept in ``.text``), None at the
        end; raises the stream's error after everything before it."""
        while True:
            try:
                self._raise_if_cut()
            except StopIteration:
                return None
            if self._queue:
                event = self._queue.popleft()
                if isinstance(event, str):
                    self._parts.append(event)
                    return TextDelta(event)
                if isinstance(event, TextDelta):
                    self._parts.append(event.text)
                return event
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._ended:
                return None
            self._read()

    def _pending_text(self) -> str:
        """Text decoded but not handed out yet."""
        return "".join(event if isinstance(event, str) else event.text
                       for event in self._queue if isinstance(event, (str, TextDelta)))

    def _raise_if_cut(self) -> None:
        """Closed before its end: quietly by the caller, or by a shutdown
        whose reader must not take the text so far as the answer."""
        cut = self._cut
        if cut == "":
            raise StopIteration
        if cut is not None:
            raise LLMClosedError(cut)

    def _read(self) -> None:
        """One ``_pump``. A close from another thread can pull the response
        out from under a read in progress (urllib3 then raises whatever it
        trips over); once closed, that is the close, not a failure."""
        try:
            self._pump()
        except Exception:
            if self._cut is None:
                raise

    def read(self) -> str:
        """Consume the rest of the stream; return the whole text."""
        for _ in self:
            pass
        return self.text

    def close(self) -> None:
        """Stop reading, close the connection, return the lease. Idempotent;
        safe from any thread, also while another thread is reading (its
        loop then ends quietly: the caller chose to stop)."""
        self._close("")

    def abort(self, reason: str) -> None:
        """Close because the pool is shutting down: a reader, now or later,
        raises LLMClosedError(``reason``) instead of seeing a quiet end.
        No-op once the stream has ended. Never raises: a finisher that fails
        (a middleware's bug) is logged, by type only, so that shutdown goes
        on; the lease is returned regardless."""
        try:
            self._close(reason)
        except Exception as exc:
            _log.warning("a finisher of a stream cut by shutdown raised %s; shutdown goes on",
                         type(exc).__name__)

    def _close(self, shutdown: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cancelled = not self._ended
            self._ended = True
            if cancelled:
                self._cut = shutdown
        if self._watch is not None:
            self._watch.close()
        try:
            if cancelled:
                try:
                    interrupt(self._http)  # wake a reader blocked in recv()
                except Exception:  # pragma: no cover - best effort: close() follows
                    pass
            self._http.close()
        finally:
            try:
                if cancelled:
                    self._run_finishers(None, LLMStreamError(
                        "the stream was closed before its end", partial_text=self.text, cancelled=True))
            finally:
                if self._owner is not None:
                    self._owner.release()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        if _collector.active and self._owner is not None:
            self._owner.defer_close(self)  # see the module docstring
            return
        try:
            self.close()
        except Exception:  # pragma: no cover - a finaliser must not raise
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Stream {self._provider.endpoint} {self._client_id} {state}, {len(self.text)} chars>"

    # --- internals ----------------------------------------------------
    def _pump(self) -> None:
        """Read one network chunk; queue its text; finish at the end."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._fail(LLMTimeoutError("the call's timeout passed while the stream was being read",
                                       deadline_passed=True, kind="deadline"))
            return
        if self._body is None:
            self._body = iter_body(self._http)
        try:
            chunk = next(self._body, None)
        except BODY_READ_ERRORS as exc:
            self._fail(read_error(exc, self._http.url, self._watch))
            return
        if self._watch is not None and self._watch.fired:  # what was read may be cut short
            self._fail(deadline_error(self._http.url))
            return
        if chunk is not None and self._fast is not None and self._parser.idle:
            texts = self._fast(chunk)
            if texts is not None:
                self._queue += texts
                return
        events = self._parser.feed(chunk) if chunk is not None else self._parser.close()
        try:
            for event in events:
                start = len(self._decoder.events)
                text = self._decoder.feed(event)
                self._queue += _typed(self._decoder.events[start:], text)
        except LLMError as error:
            self._fail(error)
            return
        except _SHAPE_ERRORS as exc:
            self._fail(LLMProviderError(
                f"the stream sent a chunk of an unexpected shape ({type(exc).__name__})",
                status_code=502, error_type="invalid_response", provider=self._provider.endpoint))
            return
        if chunk is None:
            if self._decoder.done:
                self._succeed()
            else:
                self._fail(LLMConnectionError("the stream ended before its end marker: the answer is incomplete"))

    def _end(self) -> bool:
        """Claim the single end of this stream; False if already ended."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    def _succeed(self) -> None:
        if not self._end():
            return
        response: Optional[LLMResponse] = self._provider.stream_response(
            self._decoder, self.text + self._pending_text(), self._http, self._started, self._client_id
        )
        try:
            response = self._run_finishers(response, None)
        finally:
            self._response = response
            self.close()

    def _fail(self, error: LLMError) -> None:
        """Record the failure: the caller still gets the text already
        received, then the error (carrying all of it as ``partial_text``)."""
        if not self._end():
            return  # closed from another thread meanwhile: that was the end
        secrets = self._provider.sent_secrets(self._http)
        if secrets and any(secret in error.message for secret in secrets):
            error = type(error)(redact(error.message, secrets), **error._attrs)
        received = self.text + self._pending_text()
        if received and not getattr(error, "partial_text", None):
            if type(error) is LLMConnectionError:
                error = LLMStreamError(error.message, partial_text=received)
            else:
                error.partial_text = received
                error._attrs["partial_text"] = received
        self._error = error
        try:
            self._run_finishers(None, error)
        finally:
            self.close()

    def _run_finishers(self, response: Optional[LLMResponse], error: Optional[LLMError]) -> Optional[LLMResponse]:
        """Every finisher runs, even if one raises (the first failure is
        raised after all ran): the limiter and counters must always settle."""
        failure: Optional[BaseException] = None
        for finisher in self._finishers:
            try:
                result = finisher(response, error)
            except Exception as exc:
                failure = failure or exc
                continue
            if response is not None and result is not None:
                response = result
        self._outcome = [response, error]
        if failure is not None:
            raise failure
        return response


def _typed(new: list[StreamEvent], text: Optional[str]) -> list[StreamEvent]:
    """The events one SSE event produced, with exactly one TextDelta
    holding the text ``feed`` returned (a decoder that appends none gets
    one), so both views always carry the same text."""
    if len(new) == 1 and type(new[0]) is TextDelta and text and new[0].text == text:
        return new  # the common case: one text delta, as fed
    out: list[StreamEvent] = []
    for event in new:
        if isinstance(event, TextDelta):
            if text and not any(isinstance(e, TextDelta) for e in out):
                out.append(event if event.text == text else TextDelta(text))
            continue
        out.append(event)
    if text and not any(isinstance(e, TextDelta) for e in out):
        out.append(TextDelta(text))
    return out


def iter_body(http: requests.Response) -> Iterator[bytes]:
    """Body bytes as they arrive: per HTTP chunk when chunked, else
    whatever the socket has (``read1``), so SSE is never held back."""
    raw = http.raw
    if getattr(raw, "chunked", False) or not hasattr(raw, "read1"):
        if getattr(raw, "chunked", False) and hasattr(raw, "read_chunked") and raw.supports_chunked_reads():
            # What iter_content(None) ends in, less two generator layers a
            # chunk; urllib3's errors stay unwrapped (read_error reads both).
            yield from raw.read_chunked(None, decode_content=True)
            http._content_consumed = True  # type: ignore[attr-defined]  # as iter_content leaves it
            return
        yield from http.iter_content(chunk_size=None)
        return
    while True:
        data = raw.read1(65536, decode_content=True)
        if not data:
            return
        yield data
