"""Wire faults: an answer that arrives, but not the way clients expect.

An interim ``1xx`` response (``103 Early Hints``) before the real one tests
that a client never takes it for the answer, nor leaves the real answer
unread on a connection it reuses.  A trickling body (a few bytes at a time)
tests that a client's deadline holds while bytes keep coming; a stall
half-way, that a silent server ends in a timeout.  The head of the answer
is always sent at once: only the body trickles.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

from .faults import Fault, FaultKind
from .protocols import ExchangeHandler

__all__ = ["MAX_STALL", "apply_wire_fault"]

MAX_STALL = 60.0
"""Seconds a stalled answer waits for the client to give up before the
simulator drops the connection itself."""

_REASONS = {100: "Continue", 102: "Processing", 103: "Early Hints"}


def apply_wire_fault(handler: ExchangeHandler, fault: Fault) -> Callable[[bytes], object] | None:
    """Send an interim response now, or return the writer a trickling body
    goes through (None: the body is written as usual)."""
    if fault.kind is FaultKind.INTERIM:
        _send_interim(handler, fault)
        return None
    if fault.kind is FaultKind.TRICKLE:
        return _Trickle(handler, fault).write
    raise AssertionError(f"not a wire fault: {fault.kind}")  # pragma: no cover


def _send_interim(handler: ExchangeHandler, fault: Fault) -> None:
    lines = [f"HTTP/1.1 {fault.status} {_REASONS.get(fault.status, 'Informational')}"]
    lines += [f"{name}: {value}" for name, value in fault.headers.items()]
    handler.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    handler.wfile.flush()


class _Trickle:
    """Writes a body ``chunk_size`` bytes every ``interval`` seconds; after
    ``stall_after`` body bytes, goes silent until the client hangs up."""

    def __init__(self, handler: ExchangeHandler, fault: Fault) -> None:
        self._handler = handler
        self._fault = fault
        self._sent = 0

    def write(self, data: bytes) -> None:
        fault, wfile = self._fault, self._handler.wfile
        while data:
            size = fault.chunk_size
            if fault.stall_after is not None:
                if self._sent >= fault.stall_after:
                    self._stall()
                size = min(size, fault.stall_after - self._sent)
            piece, data = data[:size], data[size:]
            wfile.write(piece)
            wfile.flush()
            self._sent += len(piece)
            if fault.interval and (data or fault.stall_after is None):
                time.sleep(fault.interval)

    def _stall(self) -> None:
        """Hold the connection, silent, until the client closes it (the
        socket turns readable) or MAX_STALL passes; then drop it."""
        connection = getattr(self._handler, "connection", None)
        if connection is not None:
            try:
                select.select([connection], [], [], MAX_STALL)
            except (OSError, ValueError):
                pass
        self._handler.close_connection = True
        raise ConnectionAbortedError("the simulator stalled this answer on purpose")
