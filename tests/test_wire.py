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
