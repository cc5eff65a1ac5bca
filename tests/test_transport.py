"""The transport: the one translation of requests/urllib3 failures, KeyAuth,
build_session, is_loopback and interrupt."""

from __future__ import annotations

import copy
import http.client
import pickle
import socket
import ssl
import threading
import traceback
from typing import Any, Callable, Iterator, Optional

import pytest
import requests
import responses
import urllib3
from urllib3.exceptions import MaxRetryError

from llm_sync.errors import (
    LLMConfigError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    LLMTransportError,
    LLMValidationError,
)
from llm_sync.middleware.retry import is_retryable
from llm_sync.transport import (
    BODY_READ_ERRORS,
    SEND_ERRORS,
    USER_AGENT,
    HTTPRequest,
    KeyAuth,
    build_session,
    interrupt,
    is_loopback,
    read_error,
    send,
    translate_connection_error,
    translate_transport_error,
)

URL = "https://api.example.test/v1/messages"
HOST = "api.example.test"
KEY = "sk-ant-api03-TOPSECRET-abcdefghijklmnop"
AUTH_HEADERS = {"x-api-key": KEY}
TIMEOUT = (3.0, 60.0)


def wrapped(reason: BaseException, outer: type[requests.RequestException] = requests.exceptions.ConnectionError
            ) -> requests.RequestException:
    """What requests raises for a failure urllib3 gave up on: the reason in
    a MaxRetryError in a requests exception."""
    return outer(MaxRetryError(None, URL, reason=reason))  # type: ignore[arg-type]


def translate(exc: BaseException, phase: str = "send", headers: Optional[dict[str, Any]] = None) -> LLMError:
    return translate_transport_error(exc, URL, phase=phase, timeout=TIMEOUT, headers=headers)  # type: ignore[arg-type]


def new_connection_error() -> urllib3.exceptions.NewConnectionError:
    return urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection")  # type: ignore[arg-type]


# --- the mapping, with the exceptions requests and urllib3 raise ------------------------------


CONNECT_TIMEOUTS = [
    pytest.param(wrapped(urllib3.exceptions.ConnectTimeoutError(None, "timed out"),
                         requests.exceptions.ConnectTimeout), id="requests-ConnectTimeout"),
    pytest.param(urllib3.exceptions.ConnectTimeoutError(None, "timed out"), id="urllib3-ConnectTimeoutError"),
]


@pytest.mark.parametrize("exc", CONNECT_TIMEOUTS)
def test_connect_timeout_is_a_timeout_that_sent_nothing(exc):
    error = translate(exc)
    assert type(error) is LLMTimeoutError
    assert error.sent is False and error.kind == "connect"
    assert error.message == f"connect to {HOST} timed out after 3.0s"
    assert is_retryable(error)


READ_TIMEOUTS = [
    pytest.param(requests.exceptions.ReadTimeout(urllib3.exceptions.ReadTimeoutError(None, URL, "read timed out")),
                 id="requests-ReadTimeout"),
    pytest.param(urllib3.exceptions.ReadTimeoutError(None, URL, "read timed out"), id="urllib3-ReadTimeoutError"),
    pytest.param(requests.exceptions.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, URL, "x")),
                 id="iter_content-wrapped"),
    pytest.param(socket.timeout("timed out"), id="socket.timeout"),
]


@pytest.mark.parametrize("exc", READ_TIMEOUTS)
def test_read_timeout_while_waiting_for_the_answer(exc):
    error = translate(exc)
    assert type(error) is LLMTimeoutError
    assert error.sent is True
    assert error.message == f"no response from {HOST} within the read timeout (60.0s)"
    assert error.deadline_passed is False and error.kind == "read" and is_retryable(error)


@pytest.mark.parametrize("exc", READ_TIMEOUTS)
def test_read_timeout_while_reading_a_body(exc):
    error = read_error(exc, URL)
    assert type(error) is LLMTimeoutError
    assert error.sent is True and error.kind == "read"
    assert error.message == f"read timed out while receiving from {HOST}"


def test_timeout_message_without_a_timeout():
    assert translate_transport_error(CONNECT_TIMEOUTS[0].values[0], URL).message == f"connect to {HOST} timed out"
    error = translate_transport_error(requests.exceptions.ReadTimeout(), URL, timeout=(1.0, None))
    assert error.message == f"no response from {HOST} within the read timeout"


NEVER_CONNECTED = [
    pytest.param(wrapped(new_connection_error()), "NewConnectionError", id="NewConnectionError"),
    pytest.param(wrapped(urllib3.exceptions.NameResolutionError(HOST, None, socket.gaierror(-2, "unknown"))),
                 "NameResolutionError", id="NameResolutionError"),
    pytest.param(ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError", id="refused"),
    pytest.param(wrapped(urllib3.exceptions.ProxyError("cannot connect to proxy", new_connection_error()),
                         requests.exceptions.ProxyError), "ProxyError", id="ProxyError"),
    pytest.param(requests.exceptions.ConnectionError(urllib3.exceptions.ClosedPoolError(None, "closed")),
                 "ClosedPoolError", id="ClosedPoolError"),
]


@pytest.mark.parametrize("exc, reason", NEVER_CONNECTED)
def test_failure_to_connect_sent_nothing(exc, reason):
    error = translate(exc)
    assert type(error) is LLMConnectionError
    assert error.sent is False
    assert error.message == f"could not connect to {HOST}: {reason}"
    assert is_retryable(error)


def test_new_connection_error_is_not_a_timeout():
    """urllib3 2 makes NewConnectionError a ConnectTimeoutError subclass."""
    assert type(translate(new_connection_error())) is LLMConnectionError


TLS_ERRORS = [
    pytest.param(wrapped(urllib3.exceptions.SSLError(ssl.SSLError(1, "CERTIFICATE_VERIFY_FAILED")),
                         requests.exceptions.SSLError), id="requests-SSLError"),
    pytest.param(urllib3.exceptions.SSLError("bad record"), id="urllib3-SSLError"),
    pytest.param(ssl.SSLError(1, "WRONG_VERSION_NUMBER"), id="ssl-SSLError"),
]


@pytest.mark.parametrize("exc", TLS_ERRORS)
def test_tls_failure_while_connecting_sent_nothing(exc):
    error = translate(exc)
    assert type(error) is LLMConnectionError
    assert error.sent is False
    assert error.message == f"TLS error talking to {HOST}"


@pytest.mark.parametrize("exc", TLS_ERRORS)
def test_tls_failure_while_reading_a_body_was_sent(exc):
    error = read_error(exc, URL)
    assert type(error) is LLMConnectionError and error.sent is True


BODY_CUT = [
    pytest.param(requests.exceptions.ChunkedEncodingError(urllib3.exceptions.ProtocolError(
        "Connection broken: IncompleteRead", urllib3.exceptions.IncompleteRead(3, 2))), "IncompleteRead",
        id="ChunkedEncodingError"),
    pytest.param(urllib3.exceptions.ProtocolError("Connection broken", ConnectionResetError(104, "reset")),
                 "ConnectionResetError", id="ProtocolError"),
    pytest.param(urllib3.exceptions.IncompleteRead(3, 97), "IncompleteRead", id="urllib3-IncompleteRead"),
    pytest.param(http.client.IncompleteRead(b"abc", 97), "IncompleteRead", id="http.client-IncompleteRead"),
    pytest.param(requests.exceptions.ContentDecodingError(urllib3.exceptions.DecodeError("bad gzip")),
                 "DecodeError", id="ContentDecodingError"),
    pytest.param(ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError", id="reset"),
    pytest.param(OSError(9, "Bad file descriptor"), "OSError", id="OSError"),
]


@pytest.mark.parametrize("exc, reason", BODY_CUT)
def test_body_cut_short_while_reading(exc, reason):
    error = read_error(exc, URL)
    assert type(error) is LLMConnectionError
    assert error.sent is True
    assert error.message == f"connection lost while receiving from {HOST}: {reason}"
    assert is_retryable(error)


@pytest.mark.parametrize("exc, reason", BODY_CUT)
def test_body_cut_short_while_sending(exc, reason):
    """``stream=False`` reads the body inside ``send``: the same failures."""
    error = translate(exc)
    assert type(error) is LLMConnectionError
    assert error.sent is True
    assert error.message == f"connection lost talking to {HOST}: {reason}"


def test_connection_aborted_after_sending_was_sent():
    exc = requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError(
        "Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection")))
    error = translate(exc)
    assert type(error) is LLMConnectionError and error.sent is True
    assert error.message.endswith("RemoteDisconnected")


def test_any_other_requests_error_is_a_connection_error():
    error = translate(requests.exceptions.RequestException("odd"))
    assert type(error) is LLMConnectionError and error.sent is True
    assert error.message == f"request to {HOST} failed: RequestException"


BAD_URLS = [
    pytest.param(requests.exceptions.InvalidURL("Invalid URL 'http://': No host supplied"), "InvalidURL",
                 id="InvalidURL"),
    pytest.param(requests.exceptions.MissingSchema("no scheme"), "MissingSchema", id="MissingSchema"),
    pytest.param(requests.exceptions.InvalidSchema("No connection adapters"), "InvalidSchema", id="InvalidSchema"),
    pytest.param(requests.exceptions.URLRequired(), "URLRequired", id="URLRequired"),
    pytest.param(requests.exceptions.InvalidProxyURL("bad proxy"), "InvalidProxyURL", id="InvalidProxyURL"),
    pytest.param(urllib3.exceptions.LocationParseError("http://[::1"), "LocationParseError", id="LocationParseError"),
]


@pytest.mark.parametrize("exc, reason", BAD_URLS)
def test_bad_url_is_a_config_error_never_retried(exc, reason):
    error = translate(exc)
    assert type(error) is LLMConfigError
    assert error.message == f"the URL {URL!r} cannot be requested ({reason})"
    assert not is_retryable(error)


def test_bad_url_message_drops_credentials_and_query():
    url = "https://user:hunter2@api.example.test/v1?token=abc#frag"
    error = translate_transport_error(requests.exceptions.InvalidURL("x"), url)
    assert "hunter2" not in error.message and "abc" not in error.message
    assert "'https://api.example.test/v1'" in error.message
    assert translate_transport_error(requests.exceptions.ReadTimeout(), url).message.startswith(
        "no response from api.example.test ")


HEADERS = {"content-type": "application/json", "x-api-key": KEY}


@pytest.mark.parametrize("headers, exc, problem", [
    ({**HEADERS, "x-api-key": KEY + "\u2019"},
     UnicodeEncodeError("latin-1", KEY + "\u2019", len(KEY), len(KEY) + 1, "ordinal not in range(256)"),
     f"header 'x-api-key' has a character that cannot be sent in HTTP (at position {len(KEY)})"),
    ({**HEADERS, "x-api-key": KEY + "\n"}, ValueError(f"Invalid header value {(KEY + chr(10)).encode()!r}"),
     "header 'x-api-key' has leading whitespace or a line break in its value"),
    ({**HEADERS, "x-api-key": " " + KEY},
     requests.exceptions.InvalidHeader(f"Invalid leading whitespace in header value: {' ' + KEY!r}"),
     "header 'x-api-key' has leading whitespace or a line break in its value"),
    ({**HEADERS, "x-api-key": 12345},
     requests.exceptions.InvalidHeader("Header part (12345) from ('x-api-key', 12345) must be of type str"),
     "header 'x-api-key' must be a string, not int"),
    ({**HEADERS, "bad:name": KEY}, ValueError("Invalid header name b'bad:name'"),
     "header name 'bad:name' is not a valid HTTP header name"),
    ({**HEADERS, "x-api-keÿ": KEY}, UnicodeEncodeError("ascii", "x-api-keÿ", 8, 9, "ordinal not in range(128)"),
     "header name 'x-api-keÿ' is not a valid HTTP header name"),
    (HEADERS, urllib3.exceptions.InvalidHeader("?"), "a header name or value cannot be sent in HTTP"),
])
def test_header_that_cannot_be_sent_is_named_never_shown(headers, exc, problem):
    error = translate(exc, headers=headers)
    assert type(error) is LLMValidationError
    assert error.message == problem
    assert KEY not in str(error) and "TOPSECRET" not in repr(error)
    assert not is_retryable(error)


def test_body_that_is_not_json_is_a_validation_error():
    error = translate(requests.exceptions.InvalidJSONError("Out of range float values are not JSON compliant"))
    assert type(error) is LLMValidationError
    assert error.message == f"the request body for {HOST} cannot be encoded as JSON"


def test_other_value_error_while_sending_is_a_validation_error():
    error = translate(ValueError(f"something about {KEY}"))
    assert type(error) is LLMValidationError
    assert error.message == f"the request to {HOST} cannot be sent (ValueError)"


ALL_CASES = [p.values[0] for p in (*CONNECT_TIMEOUTS, *READ_TIMEOUTS, *NEVER_CONNECTED, *TLS_ERRORS, *BODY_CUT,
                                   *BAD_URLS)]


@pytest.mark.parametrize("phase", ["send", "read"])
def test_every_translation_is_typed_picklable_and_keyless(phase):
    for exc in ALL_CASES:
        error = translate(exc, phase=phase, headers=HEADERS)
        assert isinstance(error, LLMError) and type(error) is not LLMError, exc
        if phase == "read":
            assert isinstance(error, LLMTransportError) and error.sent is True, exc
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error) and clone.message == error.message
        assert KEY not in repr(error)


def test_read_phase_never_blames_the_request():
    """Once the server answered, a ValueError-like failure is still the body's."""
    for exc in (*[p.values[0] for p in BAD_URLS], UnicodeEncodeError("latin-1", "é", 0, 1, "x")):
        assert isinstance(read_error(exc, URL), LLMConnectionError)


def test_old_names_keep_working():
    assert requests.exceptions.RequestException in BODY_READ_ERRORS
    assert OSError in BODY_READ_ERRORS and urllib3.exceptions.HTTPError in BODY_READ_ERRORS
    assert set(BODY_READ_ERRORS) < set(SEND_ERRORS) and ValueError in SEND_ERRORS
    error = translate_connection_error(wrapped(new_connection_error()), URL)
    assert type(error) is LLMConnectionError and error.sent is False
    error = translate_connection_error(requests.exceptions.ConnectionError(ConnectionResetError()), URL)
    assert error.sent is True


# --- send(), end to end with responses -----------------------------------------------------------


def do_send(request: Optional[HTTPRequest] = None, auth_headers: Optional[dict[str, str]] = None,
            session: Optional[requests.Session] = None) -> requests.Response:
    return send(session or build_session(), request or HTTPRequest("POST", URL, {"a": 1}, {}),
                KeyAuth(AUTH_HEADERS if auth_headers is None else auth_headers, "anthropic-0"), TIMEOUT)


@pytest.mark.parametrize("exc, cls, sent", [
    (CONNECT_TIMEOUTS[0].values[0], LLMTimeoutError, False),
    (READ_TIMEOUTS[0].values[0], LLMTimeoutError, True),
    (NEVER_CONNECTED[0].values[0], LLMConnectionError, False),
    (TLS_ERRORS[0].values[0], LLMConnectionError, False),
    (BODY_CUT[0].values[0], LLMConnectionError, True),
    (requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("aborted", ConnectionResetError())),
     LLMConnectionError, True),
])
def test_send_raises_the_translation_from_the_original(mock, exc, cls, sent):
    mock.add(responses.POST, URL, body=exc)
    with pytest.raises(cls) as info:
        do_send()
    assert info.value.sent is sent
    assert info.value.__cause__ is exc


@pytest.mark.parametrize("bad, exc", [
    (KEY + "\n", ValueError(f"Invalid header value {(KEY + chr(10)).encode()!r}")),
    (KEY + "\u2019", UnicodeEncodeError("latin-1", KEY + "\u2019", len(KEY), len(KEY) + 1, "not in range(256)")),
])
def test_send_drops_an_original_that_quotes_a_header(mock, bad, exc):
    """http.client quotes the value it refused: that value is the key."""
    mock.add(responses.POST, URL, body=exc)
    with pytest.raises(LLMValidationError) as info:
        do_send(auth_headers={"x-api-key": bad})
    error = info.value
    assert error.message.startswith("header 'x-api-key' has")
    assert error.__cause__ is None and error.__context__ is None
    assert "TOPSECRET" not in "".join(traceback.format_exception(error))


def test_send_refuses_a_bad_request_header_by_name(mock):
    mock.add(responses.POST, URL, json={})
    with pytest.raises(LLMValidationError, match="header 'x-extra' has leading whitespace or a line break"):
        do_send(HTTPRequest("POST", URL, {}, {"x-extra": f"{KEY}\r\nx-injected: 1"}))
    assert len(mock.calls) == 0


@pytest.mark.parametrize("url, cls", [
    ("http://", LLMConfigError),
    ("api.example.test/v1/messages", LLMConfigError),
    ("ftp://api.example.test/v1/messages", LLMConfigError),
])
def test_send_refuses_a_bad_url_as_config(mock, url, cls):
    with pytest.raises(cls):
        do_send(HTTPRequest("POST", url, {}, {}))


def test_send_refuses_a_body_that_is_not_json(mock):
    with pytest.raises(LLMValidationError, match="cannot be encoded as JSON"):
        do_send(HTTPRequest("POST", URL, {"x": float("nan")}, {}))


def test_send_passes_the_key_and_answers(mock):
    mock.add(responses.POST, URL, json={"ok": True})
    http = do_send(HTTPRequest("POST", URL, {"a": 1}, {"anthropic-version": "2023-06-01"}))
    assert http.json() == {"ok": True}
    sent = mock.calls[0].request.headers
    assert sent["x-api-key"] == KEY and sent["anthropic-version"] == "2023-06-01"
    assert sent["User-Agent"] == USER_AGENT


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_send_never_follows_a_redirect(mock, status):
    mock.add(responses.POST, URL, status=status, headers={"Location": "https://evil.test/steal"})
    mock.add(responses.POST, "https://evil.test/steal", json={"stolen": True})
    mock.add(responses.GET, "https://evil.test/steal", json={"stolen": True})
    http = do_send()
    assert http.status_code == status
    assert [call.request.url for call in mock.calls] == [URL]


# --- KeyAuth, build_session, is_loopback ---------------------------------------------------


def test_key_auth_adds_its_headers_and_never_shows_them():
    auth = KeyAuth({"authorization": f"Bearer {KEY}"}, "openai-2")
    prepared = requests.Request("POST", URL, auth=auth).prepare()
    assert prepared.headers["authorization"] == f"Bearer {KEY}"
    assert repr(auth) == "<KeyAuth openai-2>" and str(auth) == "<KeyAuth openai-2>"
    assert KEY not in repr(vars(type(auth)))


@pytest.mark.parametrize("dump", [pickle.dumps, copy.copy, copy.deepcopy])
def test_key_auth_refuses_to_be_pickled_or_copied(dump: Callable[[Any], Any]):
    with pytest.raises(TypeError, match="cannot be pickled"):
        dump(KeyAuth(AUTH_HEADERS, "anthropic-0"))


@pytest.mark.parametrize("trust_env", [True, False])
def test_build_session(trust_env):
    session = build_session(connections_per_host=3, trust_env=trust_env)
    assert session.trust_env is trust_env
    assert session.headers["User-Agent"] == USER_AGENT
    assert "authorization" not in session.headers and "x-api-key" not in session.headers
    for prefix in ("https://", "http://"):
        adapter = session.get_adapter(prefix + "api.example.test/")
        assert adapter.max_retries.total == 0 and adapter.max_retries.read is False
        assert adapter._pool_maxsize == 3 and adapter._pool_block is False
    assert session.auth is None
    session.close()


def test_build_session_ignores_the_proxy_environment_when_told(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert build_session(trust_env=False).merge_environment_settings(URL, {}, None, None, None)["proxies"] == {}
    trusting = build_session(trust_env=True).merge_environment_settings(URL, {}, None, None, None)["proxies"]
    assert trusting.get("https") == "http://proxy.invalid:3128"


@pytest.mark.parametrize("url, loopback", [
    ("http://localhost:8000/v1", True),
    ("http://LOCALHOST/v1", True),
    ("http://127.0.0.1:8000/v1", True),
    ("http://127.1.2.3/v1", True),
    ("http://[::1]:8000/v1", True),
    ("https://api.openai.com/v1", False),
    ("http://10.0.0.1:8000/v1", False),
    ("http://0.0.0.0:8000/v1", False),
    ("http://127.0.0.1.example.com/v1", False),
    ("http://localhost.example.com/v1", False),
    ("not a url", False),
])
def test_is_loopback(url, loopback):
    assert is_loopback(url) is loopback


# --- interrupt ------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self, fail: bool = False) -> None:
        self.shut: list[int] = []
        self.fail = fail

    def shutdown(self, how: int) -> None:
        self.shut.append(how)
        if self.fail:
            raise OSError(107, "Transport endpoint is not connected")


class RawWithShutdown:
    def __init__(self) -> None:
        self.calls = 0

    def shutdown(self) -> None:
        self.calls += 1


class OldRaw:
    """urllib3 < 2.3: no shutdown(); the socket hangs off the connection."""

    def __init__(self, sock: Optional[FakeSocket]) -> None:
        self._connection = type("Conn", (), {"sock": sock})() if sock is not None else None


def response_with(raw: Any) -> requests.Response:
    http = requests.Response()
    http.raw = raw
    return http


def test_interrupt_uses_raw_shutdown():
    raw = RawWithShutdown()
    interrupt(response_with(raw))
    assert raw.calls == 1


def test_interrupt_falls_back_to_the_socket():
    sock = FakeSocket()
    interrupt(response_with(OldRaw(sock)))
    assert sock.shut == [socket.SHUT_RDWR]


def test_interrupt_swallows_a_socket_already_gone():
    sock = FakeSocket(fail=True)
    interrupt(response_with(OldRaw(sock)))
    assert sock.shut == [socket.SHUT_RDWR]


@pytest.mark.parametrize("raw", [OldRaw(None), None, object()])
def test_interrupt_without_a_socket_does_nothing(raw):
    interrupt(response_with(raw))


# --- over a real socket: what http.client and urllib3 really raise ------------------------------


@pytest.fixture
def loopback_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    servers: list[socket.socket] = []

    def start(handler: Callable[[socket.socket], None]) -> str:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        servers.append(server)

        def accept() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    handler(conn)

        threading.Thread(target=accept, daemon=True).start()
        return f"http://127.0.0.1:{server.getsockname()[1]}/v1/messages"

    yield start
    for server in servers:
        server.close()


def read_request(conn: socket.socket) -> None:
    """Read a whole request (head and body): closing with part of it unread
    would reset the connection, racing the client's read of the answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


def answer_ok(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")


def answer_truncated(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"a\"")
    # End our side cleanly (FIN, not RST): read whatever else the client
    # sent, so closing with unread data never resets the connection.
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(2.0)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def never_answer(conn: socket.socket) -> None:
    read_request(conn)
    threading.Event().wait(1.0)


def loopback_send(url: str, key: str = "k", stream: bool = False, timeout: tuple[float, float] = (2.0, 2.0)
                  ) -> requests.Response:
    return send(build_session(trust_env=False), HTTPRequest("POST", url, {}, {}, stream),
                KeyAuth({"x-api-key": key}, "anthropic-0"), timeout)


@pytest.mark.integration
@pytest.mark.parametrize("bad_key, problem", [
    (KEY + "\u2019", "has a character that cannot be sent in HTTP"),
    (KEY + "\n", "has leading whitespace or a line break in its value"),
])
def test_real_key_that_cannot_be_sent(loopback_server, bad_key, problem):
    url = loopback_server(answer_ok)
    with pytest.raises(LLMValidationError) as info:
        loopback_send(url, bad_key)
    assert info.value.message.startswith("header 'x-api-key' ") and problem in info.value.message
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert "TOPSECRET" not in "".join(traceback.format_exception(info.value))
    assert loopback_send(url).status_code == 200


@pytest.mark.integration
def test_real_refused_connection_sent_nothing():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(LLMConnectionError) as info:
        loopback_send(f"http://127.0.0.1:{port}/v1/messages")
    assert info.value.sent is False
    assert info.value.message == f"could not connect to 127.0.0.1:{port}: NewConnectionError"


@pytest.mark.integration
def test_real_read_timeout(loopback_server):
    url = loopback_server(never_answer)
    with pytest.raises(LLMTimeoutError) as info:
        loopback_send(url, timeout=(2.0, 0.1))
    assert info.value.sent is True


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_real_truncated_body(loopback_server, stream):
    url = loopback_server(answer_truncated)
    if not stream:
        with pytest.raises(LLMConnectionError) as info:
            loopback_send(url)
        error = info.value
    else:
        http = loopback_send(url, stream=True)
        with pytest.raises(BODY_READ_ERRORS) as raw:
            http.content
        error = read_error(raw.value, url)
        assert type(error) is LLMConnectionError
    assert error.sent is True
    assert error.message.endswith("IncompleteRead")
