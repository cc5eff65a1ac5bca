"""HTTP plumbing: how Sessions are built and the one place where
``requests``/``urllib3`` exceptions become llm_sync errors.

Keys never live on a Session: each request carries a :class:`KeyAuth`, so
one kept-alive Session (and its connections) can serve any key of the
provider, and nothing key-bearing outlives the request. Redirects are never
followed, so a key can never be carried to another host.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .errors import LLMConnectionError, LLMTimeoutError, LLMTransportError

__all__ = ["KeyAuth", "HTTPRequest", "build_session", "send", "interrupt", "is_loopback", "USER_AGENT"]

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
    adapter = HTTPAdapter(
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
) -> requests.Response:
    """Send one request; translate transport failures to llm_sync errors.

    ``LLMConnectionError.sent`` is False only where the request provably
    never reached the server (connect failures): safe to retry, and any
    rate-limit reservation can be refunded in full.
    """
    try:
        return session.request(
            request.method,
            request.url,
            json=request.json,
            headers=request.headers,
            auth=auth,
            timeout=timeout,
            stream=request.stream,
            allow_redirects=False,
        )
    except requests.exceptions.ConnectTimeout as exc:
        raise LLMTimeoutError(f"connect timed out after {timeout[0]}s", sent=False) from exc
    except requests.exceptions.ReadTimeout as exc:
        raise LLMTimeoutError(f"no response within the read timeout ({timeout[1]}s)") from exc
    except requests.exceptions.SSLError as exc:
        raise LLMConnectionError(f"TLS error talking to {_host(request.url)}", sent=False) from exc
    except requests.exceptions.ConnectionError as exc:
        raise translate_connection_error(exc, request.url) from exc
    except requests.exceptions.RequestException as exc:
        raise LLMConnectionError(f"request to {_host(request.url)} failed: {type(exc).__name__}") from exc


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def interrupt(http: requests.Response) -> None:
    """Shut the socket of a response another thread may be blocked reading,
    so that reader wakes now instead of at its read timeout."""
    raw = http.raw
    try:
        raw.shutdown()  # urllib3 >= 2.3
        return
    except Exception:
        pass
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def translate_connection_error(exc: BaseException, url: str) -> LLMConnectionError:
    """ConnectionError while connecting (never sent) vs after sending."""
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)
    sent = not isinstance(reason, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError))
    kind = "could not connect to" if not sent else "connection lost talking to"
    return LLMConnectionError(f"{kind} {_host(url)}: {type(reason).__name__}", sent=sent)


def read_error(exc: BaseException, url: str) -> LLMTransportError:
    """Translate a failure while reading a (streamed) body."""
    if isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return LLMTimeoutError(f"read timed out while receiving from {_host(url)}")
    return LLMConnectionError(f"connection lost while receiving from {_host(url)}: {type(exc).__name__}")


BODY_READ_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)


def _host(url: str) -> str:
    return url.split("/", 3)[2] if "://" in url else url
