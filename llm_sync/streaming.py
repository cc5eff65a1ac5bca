"""The Stream object: text chunks out of an open SSE response.

Threading contract: a Stream is consumed by one thread at a time. Its
``close()`` may be called from any thread (or by the garbage collector) and
is idempotent; it closes the HTTP response and returns the pool lease at
once, also after an early ``break`` or an exception.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Optional

import requests

from .errors import LLMConnectionError, LLMError, LLMStreamError, redact
from .models import LLMResponse
from .providers.base import Provider, StreamDecoder, iter_body
from .sse import SSEParser
from .transport import BODY_READ_ERRORS, read_error

__all__ = ["Stream", "StreamFinisher"]

# Called once when the stream ends: (response, None) on success, or
# (None, error) on failure. Middleware registers these; the innermost
# registers first and runs first, mirroring process_response's order.
StreamFinisher = Callable[[Optional[LLMResponse], Optional[LLMError]], Optional[LLMResponse]]


class Stream:
    """Iterates text chunks; once exhausted, ``.response`` is the full
    :class:`LLMResponse`. Also a context manager. Cannot be iterated twice."""

    def __init__(
        self,
        http: requests.Response,
        provider: Provider,
        client_id: Optional[str],
        started: float,
        on_close: Optional[Callable[[], None]] = None,
    ) -> None:
        self._http = http
        self._provider = provider
        self._decoder: StreamDecoder = provider.stream_decoder()
        self._client_id = client_id
        self._started = started
        self._on_close = on_close
        self._finishers: list[StreamFinisher] = []
        self._parser = SSEParser()
        self._pending: list[str] = []
        self._body: Optional[Iterator[bytes]] = None
        self._parts: list[str] = []
        self._response: Optional[LLMResponse] = None
        self._closed = False
        self._error: Optional[LLMError] = None
        self._iterating = False
        self._close_lock = threading.Lock()
        self.context: dict[str, Any] = {}

    # --- public -------------------------------------------------------
    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    @property
    def response(self) -> LLMResponse:
        if self._response is None:
            raise LLMError("the stream's response is available once it has been read to the end")
        return self._response

    @property
    def closed(self) -> bool:
        return self._closed

    def add_finisher(self, finisher: StreamFinisher) -> None:
        self._finishers.append(finisher)

    def __iter__(self) -> "Stream":
        # Only a second pass after reading began is refused: iter() may run
        # more than once on the iterator itself (str.join, iter(iter(s))).
        if self._iterating:
            raise LLMError("a stream can be iterated only once")
        return self

    def __next__(self) -> str:
        self._iterating = True
        while not self._pending:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._closed:
                raise StopIteration
            self._pump()
        chunk = self._pending.pop(0)
        self._parts.append(chunk)
        return chunk

    def read(self) -> str:
        """Consume the rest of the stream; return the whole text."""
        while True:
            try:
                next(self)
            except StopIteration:
                return self.text

    def close(self) -> None:
        """Stop reading, close the connection, return the lease. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._http.close()
        finally:
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # A safety net only: for-loops that break, and context managers,
        # close explicitly. Never raise from a finaliser.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # pragma: no cover
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Stream {self._provider.name.value} {self._client_id} {state}, {len(self.text)} chars>"

    # --- internals ----------------------------------------------------
    def _pump(self) -> None:
        """Read one network chunk; queue its text; finish at the end."""
        if self._body is None:
            self._body = iter_body(self._http)
        try:
            chunk = next(self._body, None)
        except BODY_READ_ERRORS as exc:
            self._fail(read_error(exc, self._http.url))
            return
        events = self._parser.feed(chunk) if chunk is not None else self._parser.close()
        try:
            for event in events:
                text = self._decoder.feed(event)
                if text:
                    self._pending.append(text)
        except LLMError as error:
            self._fail(error)
            return
        if chunk is None:
            if self._decoder.done:
                self._succeed()
            else:
                self._fail(LLMConnectionError("the stream ended before its end marker: the answer is incomplete"))

    def _succeed(self) -> None:
        response: Optional[LLMResponse] = self._provider.stream_response(
            self._decoder, self.text + "".join(self._pending), self._http, self._started, self._client_id
        )
        try:
            for finisher in self._finishers:
                response = finisher(response, None) or response
        finally:
            self.close()
        self._response = response

    def _fail(self, error: LLMError) -> None:
        """Record the failure: the caller still gets the text already
        received, then the error (carrying all of it as ``partial_text``)."""
        secrets = self._provider.sent_secrets(self._http)
        if secrets and any(secret in error.message for secret in secrets):
            error = type(error)(redact(error.message, secrets), **error._attrs)
        received = self.text + "".join(self._pending)
        if received and not getattr(error, "partial_text", None):
            if type(error) is LLMConnectionError:
                error = LLMStreamError(error.message, partial_text=received)
            else:
                error.partial_text = received
                error._attrs["partial_text"] = received
        self._error = error
        try:
            for finisher in self._finishers:
                finisher(None, error)
        finally:
            self.close()
