"""CancelScope: cancel cuts what the scope's threads have lent out, refuses
their next connection, and never touches one already given back."""

from __future__ import annotations

import socket
import threading

from llm_sync.cancel import CancelScope, cancelled, current_scope


class _Conn:
    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()

    def cut(self) -> bool:
        """Whether our end was shut (a read returns EOF at once)."""
        self.sock.settimeout(0.5)
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


def test_cancel_shuts_what_is_lent_and_spares_what_was_given_back() -> None:
    scope = CancelScope()
    lent, returned = _Conn(), _Conn()
    try:
        assert scope.adopt(lent) and scope.adopt(returned)
        scope.discard(returned)
        scope.cancel()
        assert lent.cut()
        returned.peer.sendall(b"x")
        assert returned.sock.recv(1) == b"x"  # still serving whoever has it now
        assert not scope.adopt(_Conn())  # refused after cancel
        scope.cancel()  # idempotent
        assert repr(scope) == "<CancelScope cancelled, 0 lent>"
    finally:
        lent.close()
        returned.close()


def test_the_scope_is_per_thread_and_nests() -> None:
    outer, inner = CancelScope(), CancelScope()
    seen: list[object] = []
    with outer.entered():
        with inner.entered():
            assert current_scope() is inner
            thread = threading.Thread(target=lambda: seen.append(current_scope()))
            thread.start()
            thread.join()
        assert current_scope() is outer
        outer.cancel()
        assert cancelled()
    assert current_scope() is None and not cancelled()
    assert seen == [None]  # another thread is not in the scope
