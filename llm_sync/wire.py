"""Three things http.client does not do for us on the wire.

* **Interim responses.** http.client skips ``100 Continue`` but returns any
  other ``1xx`` (``103 Early Hints``) as *the* response, with an empty body;
  urllib3 then pools the connection with the real answer still unread, and
  the next request on it reads that answer as its own. Connections made
  here read past every interim response to the final one.
* **Deadlines while bytes trickle in.** A socket timeout bounds each
  ``recv``, not a body: a server sending a byte a second is never "slow".
  A :class:`DeadlineWatch` shuts its call's socket when the call's deadline
  passes, so the reader wakes wherever it is blocked (head, body, the
  middle of one HTTP chunk) and the caller can report the deadline.
* **One write a request.** urllib3 writes a request's head and its body
  apart: two syscalls and two packets where one does (:class:`_OneWrite`).

Threading contract: the watchdog thread owns the schedule of watches; one
lock guards it, the watches' state and the shutting of their sockets (a
``shutdown()`` is a non-blocking syscall), so a watch closed by its call
can never shut a socket afterwards — by then the connection may be back in
the pool, serving the next call.
"""

from __future__ import annotations

import email.parser
import heapq
import http.client
import itertools
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Optional

from requests.adapters import HTTPAdapter
from urllib3.util import SKIP_HEADER

__all__ = ["DeadlineWatch", "FinalResponseAdapter", "MAX_INTERIM_RESPONSES", "TooManyInterimResponses",
           "current_watch", "final_response_pool", "may_carry_secret"]

MAX_INTERIM_RESPONSES = 16
"""More interim responses than this before the answer: a hostile server
(each one costs a read, and the deadline is checked only per response)."""


class TooManyInterimResponses(http.client.HTTPException):
    """The server sent more than MAX_INTERIM_RESPONSES interim responses."""


# A head http.client's email parser reads as plain "name: value" pairs: every
# line a header name (printable ASCII, no colon, no space) and a value with
# none of the characters that parser also breaks lines at, then the blank
# line. Anything else (folded lines, "From " lines, a missing blank line, a
# multipart or message/* type, whose empty body that parser would parse)
# goes to that parser itself.
_PLAIN_HEAD = re.compile(r"(?:[\041-\071\073-\176]+:[^\r\n\x0b\x0c\x1c-\x1e\x85]*\r?\n)*\r?\n\Z")
_PARSED_TYPES = re.compile(r"multipart|message/", re.IGNORECASE)


# http.client's private line reader (3.10 to 3.13 alike), if it has one.
_read_headers: Optional[Callable[[Any], list[bytes]]] = getattr(http.client, "_read_headers", None)


def parse_head(fp: Any) -> http.client.HTTPMessage:
    """``http.client.parse_headers(fp)``: the same HTTPMessage, without the
    email parser's cost (~20 µs a response) for a plain head."""
    if _read_headers is None:  # an http.client without the helper: its own parser
        return http.client.parse_headers(fp)
    text = b"".join(_read_headers(fp)).decode("iso-8859-1")
    if not _PLAIN_HEAD.match(text) or _PARSED_TYPES.search(text):
        return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)
    message = http.client.HTTPMessage()
    fields = message._headers  # type: ignore[attr-defined]
    for line in text.splitlines()[:-1]:
        name, _, value = line.partition(":")
        fields.append((name, value.lstrip(" \t")))
    message.set_payload("")
    return message


class _FinalResponse(http.client.HTTPResponse):
    """An http.client response that reads past every interim ``1xx``
    response (except ``101 Switching Protocols``, never requested here),
    and reads a plain head without the email parser (:func:`parse_head`).

    ``begin`` is http.client's own (the same in Python 3.10 to 3.13) but
    for that parser."""

    def begin(self) -> None:
        if getattr(self, "headers", None) is not None:  # already begun
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_head(self.fp)
        if self.debuglevel > 0:
            for hdr, val in self.headers.items():
                print("header:", hdr + ":", val)
        tr_enc = self.headers.get("transfer-encoding")
        if tr_enc and tr_enc.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        else:
            self.length = None
        if (status == http.client.NO_CONTENT or status == http.client.NOT_MODIFIED
                or 100 <= status < 200 or self._method == "HEAD"):  # type: ignore[attr-defined]
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _read_status(self) -> tuple[str, int, str]:
        for _ in range(MAX_INTERIM_RESPONSES + 1):
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            http.client.parse_headers(self.fp)  # the interim head: dropped
        raise TooManyInterimResponses(f"more than {MAX_INTERIM_RESPONSES} interim responses")


class _OneWrite:
    """Sends a request's head and body in one write, not two: urllib3
    writes the head, then each body chunk, and each write is a syscall, a
    packet (TCP_NODELAY) and a wake-up of the server. Writes are gathered
    while ``request()`` runs and sent together when it returns — up to
    :data:`ONE_WRITE_LIMIT` bytes; a larger body goes out as it comes
    (after what was gathered). Nothing is reordered or dropped, and a
    failure to connect or send surfaces from ``request()`` as before.

    Also keeps, per connection, the header lines it has checked once (see
    :meth:`putheader`); a connection serves one request at a time, so its
    table needs no lock."""

    _gathered: Optional[list[bytes]] = None
    _gathered_size = 0
    _header_lines: Optional[dict[tuple[str, str], bytes]] = None

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._gathered, self._gathered_size = [], 0
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
            self._flush()
        finally:
            self._gathered = None

    def send(self, data: Any) -> None:
        gathered = self._gathered
        if gathered is not None and isinstance(data, bytes) \
                and self._gathered_size + len(data) <= ONE_WRITE_LIMIT:
            gathered.append(data)
            self._gathered_size += len(data)
            return
        self._flush()
        super().send(data)  # type: ignore[misc]

    def putheader(self, header: Any, *values: Any) -> None:
        """urllib3's ``putheader``, with each (name, value) line it has
        checked and written once kept (see :func:`_cacheable`): the next
        request writes the same bytes without checking them again. A miss,
        any other shape, and a connection not in the middle of a request go
        the whole way (its errors raised as before)."""
        if len(values) == 1 and type(header) is str and type(values[0]) is str:
            lines = self._header_lines
            if lines is None:
                lines = self._header_lines = {}
            key = (header, values[0])
            line = lines.get(key)
            if line is not None and getattr(self, "_HTTPConnection__state", None) == _REQUEST_STARTED:
                self._output(line)  # type: ignore[attr-defined]
                return
            super().putheader(header, *values)  # type: ignore[misc]
            if line is None and _cacheable(header, values[0]):
                if len(lines) >= _HEADER_LINES_LIMIT:
                    lines.clear()
                lines[key] = header.encode("ascii") + b": " + values[0].encode("latin-1")
            return
        super().putheader(header, *values)  # type: ignore[misc]

    def _flush(self) -> None:
        gathered = self._gathered
        if gathered:
            self._gathered, self._gathered_size = [], 0
            super().send(b"".join(gathered))  # type: ignore[misc]


ONE_WRITE_LIMIT = 256 * 1024
"""Requests up to this size (head and body) are sent in one write."""

_REQUEST_STARTED = getattr(http.client, "_CS_REQ_STARTED", object())
_HEADER_LINES_LIMIT = 256
# Words in a header name that may mean a credential (the key, a gateway's
# token, a cookie): such a header is never kept in a cache.
_SECRET_WORDS = ("auth", "key", "token", "cookie", "secret", "password", "signature", "session")


def may_carry_secret(name: str) -> bool:
    """Whether a header called ``name`` may carry a credential: checked and
    written afresh every time, never kept (here, nor in ``direct``)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _cacheable(header: str, value: str) -> bool:
    """Whether a header line checked once may be written again unchecked:
    not urllib3's SKIP_HEADER marker (which writes nothing), nothing that
    may carry a credential, and only ASCII names (http.client's own check
    runs first, so whatever is cached has passed it)."""
    return value != SKIP_HEADER and header.isascii() and not may_carry_secret(header)

_final_classes: dict[type, type] = {}
_classes_lock = threading.Lock()


def _final_connection_class(base: type) -> type:
    """``base`` (an urllib3 connection class) reading final responses only,
    and showing its socket to the calling thread's :class:`DeadlineWatch`."""
    with _classes_lock:
        cls = _final_classes.get(base)
        if cls is None:
            def getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
                watch = current_watch()
                if watch is not None and self.sock is not None:
                    watch.attach(self.sock)
                return super(cls, self).getresponse(*args, **kwargs)  # type: ignore[arg-type]

            cls = type(base.__name__, (_OneWrite, base),
                       {"response_class": _FinalResponse, "getresponse": getresponse})
            _final_classes[base] = cls
        return cls


def final_response_pool(pool: Any) -> Any:
    """Make an urllib3 connection pool's future connections ours (see the
    module docstring); returns ``pool``."""
    base = pool.ConnectionCls
    if base not in _final_classes.values():
        pool.ConnectionCls = _final_connection_class(base)
    return pool


_ADAPTER_CACHE_LIMIT = 256


def _pool_key(manager: Any, pool: Any) -> Any:
    """The key ``manager`` holds ``pool`` under, or None (not found, or a
    manager whose store is not urllib3's: then nothing is cached)."""
    container = getattr(manager.pools, "_container", None)
    if not isinstance(container, dict):
        return None
    try:
        entries = list(container.items())
    except RuntimeError:  # changed while read: ask again next time
        return None
    return next((key for key, held in reversed(entries) if held is pool), None)


class FinalResponseAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections read past interim responses and
    show their socket to the call's :class:`DeadlineWatch`.

    Without proxies, the connection pool for a (URL, verify, cert) and the
    request target of a URL are what the adapter found for them last
    (requests re-derives both on every send: URL parsing, pool-key
    building — ~20 µs a call). A cached pool is handed out only while its
    pool manager still holds it under its key (asked through the manager,
    which keeps its least-recently-used order as before): one evicted, or
    dropped by ``close()``, or from a manager since replaced, is asked for
    anew. Each cache is cleared when full. Read and replaced under the GIL:
    two threads missing at once both ask, and get the same pool."""

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                        cert: Any = None) -> Any:
        if proxies:
            return final_response_pool(super().get_connection_with_tls_context(request, verify, proxies, cert))
        pools = self.__dict__.setdefault("_llm_sync_pools", {})
        key = (request.url, verify, cert)
        manager = self.poolmanager
        found = pools.get(key)
        if found is not None and found[0] is manager and manager.pools.get(found[1]) is found[2]:
            return found[2]
        pool = final_response_pool(super().get_connection_with_tls_context(request, verify, proxies, cert))
        pool_key = _pool_key(manager, pool)
        if pool_key is not None:
            if len(pools) >= _ADAPTER_CACHE_LIMIT:
                pools.clear()
            pools[key] = (manager, pool_key, pool)
        return pool

    def request_url(self, request: Any, proxies: Any) -> str:
        if proxies:
            return super().request_url(request, proxies)
        targets = self.__dict__.setdefault("_llm_sync_targets", {})
        target: Optional[str] = targets.get(request.url)
        if target is None:
            target = super().request_url(request, proxies)
            if len(targets) >= _ADAPTER_CACHE_LIMIT:
                targets.clear()
            targets[request.url] = target
        return target

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:  # requests < 2.32.2
        return final_response_pool(super().get_connection(*args, **kwargs))


# --- deadlines ---------------------------------------------------------------

_local = threading.local()


def current_watch() -> Optional["DeadlineWatch"]:
    """The watch of the request this thread is sending, if any."""
    return getattr(_local, "watch", None)


class DeadlineWatch:
    """Shuts one call's socket when the call's deadline passes.

    Created (armed) with the call's deadline — None: never fires — and
    closed by the call once its response is read or abandoned; idempotent.
    ``with watch.sending():`` lets the connection that sends the request
    attach its socket. ``expired()`` tells a reader whose socket failed (or
    ended early) that the deadline, not the server, ended it.
    """

    __slots__ = ("deadline", "fired", "_sock", "_closed")

    def __init__(self, deadline: Optional[float]) -> None:
        self.deadline = deadline
        self.fired = False
        self._sock: Any = None  # a socket.socket, or a TLS wrapper of one
        self._closed = deadline is None
        if deadline is not None:
            _watchdog.add(self)

    def expired(self) -> bool:
        return self.fired or (self.deadline is not None and time.monotonic() >= self.deadline)

    def attach(self, sock: Any) -> None:
        """The socket to shut at the deadline (at once if it has passed)."""
        with _watchdog.lock:
            if self._closed:
                return
            self._sock = sock
            if self.fired:
                shut_socket(sock)

    def sending(self) -> "_Sending":
        return _Sending(self)

    def close(self) -> None:
        with _watchdog.lock:
            if self._closed:
                return
            self._closed = True
            self._sock = None
            _watchdog.live = max(0, _watchdog.live - 1)  # (a watch from before a fork)

    def _fire(self) -> None:
        """Called by the watchdog, under its lock."""
        if self._closed:
            return
        self.fired = True
        if self._sock is not None:
            shut_socket(self._sock)

    def __enter__(self) -> "DeadlineWatch":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "fired" if self.fired else "closed" if self._closed else "armed"
        return f"<DeadlineWatch {state}>"


class _Sending:
    __slots__ = ("_watch", "_outer")

    def __init__(self, watch: DeadlineWatch) -> None:
        self._watch = watch

    def __enter__(self) -> None:
        self._outer = current_watch()
        _local.watch = self._watch if self._watch.deadline is not None else None

    def __exit__(self, *exc_info: Any) -> None:
        _local.watch = self._outer


def shut_socket(sock: Any) -> None:
    """Shut ``sock`` for both directions; a TLS socket stays wrapped (its
    reader then sees an EOF, an OSError — not a ValueError for an unwrapped
    socket, as ``SSLSocket.shutdown`` would cause)."""
    if sock is None:
        return
    shutdown = socket.socket.shutdown if isinstance(sock, socket.socket) else type(sock).shutdown
    try:
        shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


class _Watchdog:
    """One daemon thread firing watches at their deadlines (started on
    first use; a forked child starts its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._heap: list[tuple[float, int, DeadlineWatch]] = []
        self._order = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self.live = 0

    def add(self, watch: DeadlineWatch) -> None:
        assert watch.deadline is not None
        with self.lock:
            self.live += 1
            if len(self._heap) > 64 and len(self._heap) > 2 * self.live:  # drop closed watches
                self._heap = [entry for entry in self._heap if not entry[2]._closed]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._heap[0][2] is watch:
                self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llm-sync-deadlines", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][2]._closed):
                    heapq.heappop(self._heap)[2]._fire()
                self._wake.wait(self._heap[0][0] - now if self._heap else None)


_watchdog = _Watchdog()


def _after_fork_in_child() -> None:
    global _watchdog, _classes_lock
    _watchdog = _Watchdog()  # the parent's thread and lock do not exist here
    _classes_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
