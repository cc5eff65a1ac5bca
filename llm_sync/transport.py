"""HTTP plumbing: how Sessions are built and the one place where
``requests``/``urllib3`` exceptions become llm_sync errors.

Keys never live on a Session: each request carries a :class:`KeyAuth`, so
one kept-alive Session (and its connections) can serve any key of the
provider, and nothing key-bearing outlives the request. Redirects are never
followed, so a key can never be carried to another host. Interim ``1xx``
responses are read past, never taken for the answer, and a call's deadline
holds while its bytes trickle in (both: :mod:`llm_sync.wire`). Requests go
through the Session's adapter directly, without ``Session.request``'s
per-call overhead (:mod:`llm_sync.direct`).
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import ssl
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional
from urllib.parse import urlsplit

import requests
import urllib3

from .direct import send_direct
from .errors import (
    LLMConfigError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    LLMTransportError,
    LLMValidationError,
)
from .wire import MAX_INTERIM_RESPONSES, DeadlineWatch, FinalResponseAdapter, TooManyInterimResponses, shut_socket

__all__ = [
    "KeyAuth",
    "HTTPRequest",
    "build_session",
    "send",
    "translate_transport_error",
    "read_error",
    "deadline_error",
    "interrupt",
    "is_loopback",
    "BODY_READ_ERRORS",
    "SEND_ERRORS",
    "USER_AGENT",
]

try:
    from importlib.metadata import version as _version

    USER_AGENT = f"llm-sync/{_version('llm_sync')}"
except Exception:  # pragma: no cover - running from a source tree
    USER_AGENT = "llm-sync/dev"


class KeyAuth(requests.auth.AuthBase):
    """Adds one key's auth header to a request. Its repr never shows the key.

    Passing an explicit auth object also stops requests from consulting
    ``~/.netrc``, which would otherwise overwrite the Authorization header.
    """

    __slots__ = ("_headers", "client_id")

    def __init__(self, headers: Mapping[str, str], client_id: str) -> None:
        self._headers = dict(headers)
        self.client_id = client_id

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(self._headers)
        return request

    def __repr__(self) -> str:
        return f"<KeyAuth {self.client_id}>"

    def __reduce__(self) -> Any:
        raise TypeError("KeyAuth holds a secret and cannot be pickled")


@dataclass
class HTTPRequest:
    """What a provider asks the transport to send (no key in it)."""

    method: str
    url: str
    json: Any
    headers: dict[str, str]
    stream: bool = False


def build_session(connections_per_host: int = 2, trust_env: bool = True) -> requests.Session:
    """A Session for one lease: no redirects, no adapter-level retries (the
    retry middleware decides), and a connection pool large enough that
    urllib3 never warns "connection pool is full" (one thread uses a lease
    at a time, so it needs one connection per host, two for headroom).

    ``trust_env=False`` ignores ``HTTP(S)_PROXY`` and friends: used for
    loopback servers, so a local simulator or vLLM is never sent via a proxy.
    """
    session = requests.Session()
    session.trust_env = trust_env
    session.headers["User-Agent"] = USER_AGENT
    adapter = FinalResponseAdapter(
        pool_connections=4,
        pool_maxsize=connections_per_host,
        max_retries=0,
        pool_block=False,
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def send(
    session: requests.Session,
    request: HTTPRequest,
    auth: KeyAuth,
    timeout: tuple[float, Optional[float]],
    watch: Optional[DeadlineWatch] = None,
) -> requests.Response:
    """Send one request; any transport failure is raised as the error
    :func:`translate_transport_error` makes of it, ``from`` the original —
    except where the original's text may echo a header value (a key): then
    it is dropped. ``watch`` (the call's deadline) may cut the wait for the
    response head short: then the error is :func:`deadline_error`'s."""
    echoed: Optional[LLMError] = None
    try:
        with (watch or _NO_WATCH).sending():
            return send_direct(session, request.method, request.url, request.json, request.headers, auth,
                               timeout, request.stream)
    except SEND_ERRORS as exc:
        headers = {**session.headers, **request.headers, **auth._headers}
        error = translate_transport_error(exc, request.url, timeout=timeout, headers=headers)
        if watch is not None and isinstance(error, LLMTransportError) and (
                watch.fired or (isinstance(error, LLMTimeoutError) and watch.expired())):
            error = deadline_error(request.url, "waiting for the response from", sent=error.sent)
        if not _is_header_error(exc):
            raise error from exc
        echoed = error
    raise echoed from None  # outside the except clause: not even kept as __context__


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine: ``localhost``, 127.0.0.0/8, ``::1``."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: "127.0.0.1.example.com" is not loopback
        return False


def interrupt(http: requests.Response) -> None:
    """Shut the socket of a response another thread may be blocked reading,
    so that reader wakes now instead of at its read timeout."""
    raw = http.raw
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is not None:
        shut_socket(sock)  # under TLS too, without unwrapping it under the reader
        return
    try:
        raw.shutdown()  # urllib3 >= 2.3
    except Exception:
        pass


BODY_READ_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)
"""What reading a response body may raise: pass it to :func:`read_error`."""

SEND_ERRORS = BODY_READ_ERRORS + (ValueError,)
"""What sending may raise (a ValueError: the request could not be built)."""

Phase = Literal["send", "read"]
_NO_WATCH = DeadlineWatch(None)

# Client mistakes: the request can never be sent as built. Raised at once,
# never retried.
_BAD_URL = (
    requests.exceptions.InvalidURL,  # also InvalidProxyURL
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
    urllib3.exceptions.LocationValueError,  # also LocationParseError
)
_BAD_HEADER = (
    requests.exceptions.InvalidHeader,
    urllib3.exceptions.InvalidHeader,
    UnicodeEncodeError,  # http.client encodes header values as latin-1
)
_NEVER_CONNECTED = (
    urllib3.exceptions.NewConnectionError,  # also NameResolutionError
    ConnectionRefusedError,
    requests.exceptions.ProxyError,
    urllib3.exceptions.ProxyError,
    urllib3.exceptions.ClosedPoolError,
)
_READ_TIMEOUTS = (
    requests.exceptions.ReadTimeout,
    urllib3.exceptions.ReadTimeoutError,
    TimeoutError,  # socket.timeout
)
_TLS_ERRORS = (requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError)
_BODY_CUT = (
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.IncompleteRead,
    http.client.IncompleteRead,
)


def translate_transport_error(
    exc: BaseException,
    url: str,
    *,
    phase: Phase = "send",
    timeout: Optional[tuple[float, Optional[float]]] = None,
    headers: Optional[Mapping[str, Any]] = None,
) -> LLMError:
    """The one translation of a ``requests``/``urllib3``/socket exception
    into an llm_sync error (the caller raises it ``from exc``).

    ``phase`` is ``"send"`` while sending and awaiting the response head,
    ``"read"`` while reading a body: by then the request has certainly
    reached the server (``sent`` is True). ``timeout`` is only quoted in
    messages; ``headers`` (auth headers included) let a header error name
    the header — never its value.

    * a bad URL → :class:`LLMConfigError`; a header that cannot be sent, a
      body that cannot be encoded → :class:`LLMValidationError` (client
      mistakes: raised at once, never retried);
    * connect timeout → :class:`LLMTimeoutError` with ``sent=False``;
      read timeout → :class:`LLMTimeoutError`;
    * refused, unresolvable, proxy or TLS failure while connecting →
      :class:`LLMConnectionError` with ``sent=False`` (safe to retry,
      nothing was charged);
    * anything else (reset, truncated or undecodable body) →
      :class:`LLMConnectionError` with ``sent=True``.
    """
    chain = _chain(exc)
    host = _host(url)

    def seen(*types: type[BaseException]) -> bool:
        return any(isinstance(link, types) for link in chain)

    if phase == "read":  # the server answered: whatever fails now, it got the request
        if seen(*_READ_TIMEOUTS):
            return LLMTimeoutError(f"read timed out while receiving from {host}", kind="read")
        return LLMConnectionError(f"connection lost while receiving from {host}: {_reason(chain)}")
    if seen(*_BAD_URL):
        reason = _first(chain, _BAD_URL) or exc
        return LLMConfigError(f"the URL {_safe_url(url)} cannot be requested ({type(reason).__name__})")
    if _is_header_error(exc):
        return LLMValidationError(_header_problem(headers or {}))
    if seen(requests.exceptions.InvalidJSONError):
        return LLMValidationError(f"the request body for {host} cannot be encoded as JSON")
    if isinstance(exc, ValueError) and not isinstance(exc, requests.exceptions.RequestException):
        return LLMValidationError(f"the request to {host} cannot be sent ({type(exc).__name__})")
    connect, read = timeout if timeout is not None else (None, None)
    if seen(requests.exceptions.ConnectTimeout) or (
            seen(urllib3.exceptions.ConnectTimeoutError) and not seen(*_NEVER_CONNECTED)):
        after = f" after {connect}s" if connect is not None else ""
        return LLMTimeoutError(f"connect to {host} timed out{after}", sent=False, kind="connect")
    if seen(*_READ_TIMEOUTS):
        within = f" ({read}s)" if read is not None else ""
        return LLMTimeoutError(f"no response from {host} within the read timeout{within}", kind="read")
    if seen(TooManyInterimResponses):
        return LLMConnectionError(f"{host} sent more than {MAX_INTERIM_RESPONSES} interim (1xx) responses")
    if seen(*_TLS_ERRORS):
        return LLMConnectionError(f"TLS error talking to {host}", sent=False)
    if seen(*_NEVER_CONNECTED):
        reason = _first(chain, _NEVER_CONNECTED) or exc
        return LLMConnectionError(f"could not connect to {host}: {type(reason).__name__}", sent=False)
    if seen(*_BODY_CUT, requests.exceptions.ConnectionError) or any(
            isinstance(link, (OSError, urllib3.exceptions.HTTPError))
            and not isinstance(link, requests.exceptions.RequestException)  # all OSErrors too
            for link in chain):
        return LLMConnectionError(f"connection lost talking to {host}: {_reason(chain)}")
    return LLMConnectionError(f"request to {host} failed: {_reason(chain)}")


def read_error(exc: BaseException, url: str, watch: Optional[DeadlineWatch] = None) -> LLMTransportError:
    """Translate a failure while reading a (streamed) body:
    :func:`translate_transport_error` with ``phase="read"`` — or, once the
    call's deadline (``watch``) has passed, :func:`deadline_error`: a
    socket the watch shut, or one cut to the time left, is the deadline's
    doing, not the server's."""
    if watch is not None and watch.expired():
        return deadline_error(url, "receiving from")
    error = translate_transport_error(exc, url, phase="read")
    assert isinstance(error, LLMTransportError)
    return error


def deadline_error(url: str, doing: str = "receiving from", *, sent: bool = True) -> LLMTimeoutError:
    """The call's own timeout passed while it was ``doing`` (something
    with the host of ``url``): no time is left to retry."""
    return LLMTimeoutError(f"the call's timeout passed while {doing} {_host(url)}", sent=sent,
                           deadline_passed=True, kind="deadline")


def translate_connection_error(exc: BaseException, url: str) -> LLMError:
    """Kept for callers of the old name: :func:`translate_transport_error`."""
    return translate_transport_error(exc, url)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: requests puts urllib3's error in
    ``args[0]``, MaxRetryError keeps it in ``reason``, urllib3's ProxyError
    in ``original_error``, ProtocolError the socket error in ``args[1]``."""
    chain: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo and len(chain) < 16:
        link = todo.pop(0)
        if not isinstance(link, BaseException) or any(link is seen for seen in chain):
            continue
        chain.append(link)
        todo.extend(arg for arg in link.args if isinstance(arg, BaseException))
        todo.extend(getattr(link, name, None) for name in ("reason", "original_error"))
    return chain


def _reason(chain: list[BaseException]) -> str:
    """The name of the innermost error: the one that says what happened
    (``ConnectionResetError``, ``IncompleteRead``), not a wrapper."""
    wrappers = (requests.exceptions.RequestException, urllib3.exceptions.MaxRetryError)
    inner = [link for link in chain if not isinstance(link, wrappers)]
    return type(inner[-1] if inner else chain[-1]).__name__


def _first(chain: list[BaseException], types: tuple[type[BaseException], ...]) -> Optional[BaseException]:
    return next((link for link in chain if isinstance(link, types)), None)


def _is_header_error(exc: BaseException) -> bool:
    """A header that cannot be sent. The original's text may quote the
    header's value (a key), so it must not travel with the translation."""
    chain = _chain(exc)
    if any(isinstance(link, _BAD_HEADER) for link in chain):
        return True
    # http.client: ValueError("Invalid header value b'...'") / ("Invalid header name ...")
    return any(type(link) is ValueError and "header" in str(link).lower() for link in chain)


# What requests and http.client accept: a name with no colon, line break or
# leading whitespace; a value with no leading whitespace and no line break,
# encodable as latin-1.
_HEADER_NAME = re.compile(r"[^:\s][^:\r\n]*")
_HEADER_VALUE = re.compile(r"\S[^\r\n]*|")


def _header_problem(headers: Mapping[str, Any]) -> str:
    """Which header cannot be sent, and why — by name, never by value."""
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name) or not name.isascii():
            return f"header name {str(name)[:40]!r} is not a valid HTTP header name"
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            return f"header {name!r} must be a string, not {type(value).__name__}"
        if not _HEADER_VALUE.fullmatch(value):
            return f"header {name!r} has leading whitespace or a line break in its value"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as exc:
            return f"header {name!r} has a character that cannot be sent in HTTP (at position {exc.start})"
    return "a header name or value cannot be sent in HTTP"


def _host(url: str) -> str:
    """host[:port] of ``url``, without any user:password@."""
    host = url.split("/", 3)[2] if "://" in url else url
    return host.rpartition("@")[2]


def _safe_url(url: str) -> str:
    """``url`` without user:password@, query or fragment, for a message."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return repr(url.split("?", 1)[0][:100])
    host, slash, path = rest.partition("/")
    path = path.split("?", 1)[0].split("#", 1)[0]
    return repr(f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"[:200])
