"""inflight.abort against a real socket: a request whose connection was
lent but not yet connected when the abort came must fail as soon as it
connects, not send and wait out its read timeout."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator

import pytest
import requests
import urllib3.connection
from urllib3.exceptions import ClosedPoolError

from llm_sync import inflight
from llm_sync.transport import translate_transport_error

READ_TIMEOUT = 20.0  # what the request would wait without the fix
PROMPT = 5.0  # well under it: the request must end within this


@pytest.fixture
def silent_server() -> Iterator[str]:
    """127.0.0.1: accepts connections, never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)  # so the accept loop sees ``stop``
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/messages"
    stop.set()
    thread.join(5)
    listener.close()
    for conn in accepted:  # ends a request still waiting (without the fix)
        conn.close()


def test_abort_while_connecting_fails_the_request_once_connected(silent_server: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    connecting, gate = threading.Event(), threading.Event()
    original = urllib3.connection.HTTPConnection.connect

    def gated_connect(self: Any) -> None:
        connecting.set()  # lent by the pool, no socket yet
        assert gate.wait(10)
        original(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", gated_connect)
    session = requests.Session()
    inflight.track(session)
    outcome: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            session.post(silent_server, data=b"{}", timeout=(5.0, READ_TIMEOUT))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    try:
        assert connecting.wait(5)
        inflight.abort(session)  # nothing to shut: the connection has no socket yet
        released = time.monotonic()
        gate.set()
        thread.join(PROMPT)
        assert not thread.is_alive(), "the aborted request went on to send and wait for an answer"
        assert time.monotonic() - released < PROMPT
    finally:
        gate.set()
        session.close()
    error = outcome["error"]
    assert isinstance(error, requests.ConnectionError)
    assert isinstance(error.args[0], ClosedPoolError)  # as for a request started after the abort
    translated = translate_transport_error(error, silent_server)
    assert translated.sent is False  # nothing reached the server


def test_a_request_after_abort_is_refused(silent_server: str) -> None:
    session = requests.Session()
    inflight.track(session)
    inflight.abort(session)
    with pytest.raises(requests.ConnectionError) as caught:
        session.post(silent_server, data=b"{}", timeout=(5.0, READ_TIMEOUT))
    assert isinstance(caught.value.args[0], ClosedPoolError)
    session.close()


def test_a_tracked_session_still_talks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracked connection class connects and sends as before."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    session = requests.Session()
    inflight.track(session)
    try:
        reply = session.get(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=(5.0, 5.0))
        assert reply.text == "ok"
    finally:
        session.close()
        listener.close()
        thread.join(5)
