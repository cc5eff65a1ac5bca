"""The DeadlineWatch: it shuts its call's socket at the deadline, never
after the call has closed it (the connection may serve the next call by
then), and at once when the socket shows up after the deadline."""

from __future__ import annotations

import socket
import threading
import time

from llm_sync.wire import DeadlineWatch, current_watch


def _blocked_reader(sock: socket.socket) -> tuple[threading.Thread, list[bytes]]:
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(sock.recv(100)), daemon=True)
    thread.start()
    return thread, got


def test_a_watch_wakes_a_reader_blocked_on_its_socket_at_the_deadline():
    ours, server = socket.socketpair()
    try:
        watch = DeadlineWatch(time.monotonic() + 0.2)
        watch.attach(ours)
        started = time.monotonic()
        thread, got = _blocked_reader(ours)
        thread.join(5)
        assert got == [b""] and watch.fired and watch.expired()
        assert 0.15 < time.monotonic() - started < 3
        watch.close()
        assert repr(watch) == "<DeadlineWatch fired>"
    finally:
        ours.close()
        server.close()


def test_a_closed_watch_never_shuts_its_socket():
    """Watches fire in deadline order, so once a later one has fired the
    earlier (closed) one's deadline has certainly been dealt with."""
    kept, kept_peer = socket.socketpair()
    later, later_peer = socket.socketpair()
    try:
        closed = DeadlineWatch(time.monotonic() + 0.05)
        closed.attach(kept)
        closed.close()
        marker = DeadlineWatch(time.monotonic() + 0.1)
        marker.attach(later)
        thread, got = _blocked_reader(later)
        thread.join(5)
        assert got == [b""] and marker.fired
        assert not closed.fired
        kept_peer.sendall(b"still open")
        assert kept.recv(100) == b"still open"
        marker.close()
    finally:
        for sock in (kept, kept_peer, later, later_peer):
            sock.close()


def test_a_socket_attached_after_the_deadline_is_shut_at_once():
    ours, server = socket.socketpair()
    try:
        watch = DeadlineWatch(time.monotonic() - 1)  # already past: fires at the watchdog's next turn
        deadline = time.monotonic() + 5
        while not watch.fired and time.monotonic() < deadline:
            time.sleep(0.01)
        watch.attach(ours)
        assert ours.recv(100) == b""
        watch.close()
    finally:
        ours.close()
        server.close()


def test_without_a_deadline_a_watch_is_inert():
    watch = DeadlineWatch(None)
    assert not watch.expired() and repr(watch) == "<DeadlineWatch closed>"
    with watch.sending():
        assert current_watch() is None
    armed = DeadlineWatch(time.monotonic() + 60)
    with armed.sending():
        assert current_watch() is armed
        with watch.sending():
            assert current_watch() is None
        assert current_watch() is armed
    assert current_watch() is None
    armed.close()


# --- one write a request ------------------------------------------------------------------------
import pytest  # noqa: E402
import urllib3  # noqa: E402

from llm_sync import wire  # noqa: E402


class _Recording(urllib3.connection.HTTPConnection):
    """A connection whose writes are recorded, not sent."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.writes: list[bytes] = []

    def send(self, data) -> None:  # type: ignore[no-untyped-def]
        self.writes.append(bytes(data))


def _ours() -> _Recording:
    return wire._final_connection_class(_Recording)("127.0.0.1", 9)  # type: ignore[no-any-return]


@pytest.mark.parametrize("body", [b'{"a": 1}', b"", None])
def test_a_request_goes_out_in_one_write(body):
    conn = _ours()
    headers = {"Content-Length": str(len(body))} if body is not None else {}
    conn.request("POST" if body is not None else "GET", "/v1/messages", body=body, headers=headers)
    assert len(conn.writes) == 1
    assert conn.writes[0].startswith(b"POST /v1/messages HTTP/1.1\r\n" if body is not None else b"GET /v1/")
    assert conn.writes[0].endswith(b"\r\n\r\n" + (body or b""))


def test_a_chunked_body_is_gathered_in_order():
    conn = _ours()
    conn.request("POST", "/x", body=iter([b"ab", b"", b"cd"]), chunked=True)
    [write] = conn.writes
    assert write.endswith(b"\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")


def test_a_large_body_is_sent_after_the_head_as_it_comes():
    conn = _ours()
    body = b"x" * (wire.ONE_WRITE_LIMIT + 1)
    conn.request("POST", "/x", body=body, headers={"Content-Length": str(len(body))})
    assert len(conn.writes) == 2 and conn.writes[0].endswith(b"\r\n\r\n") and conn.writes[1] == body


def test_nothing_is_left_gathered_when_a_request_fails_to_build():
    conn = _ours()
    with pytest.raises(ValueError):
        conn.request("POST", "/x", body=b"{}", headers={"x-bad": "a\r\nb"})
    assert conn.writes == [] and conn._gathered is None
