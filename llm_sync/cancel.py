"""CancelScope: stop what a group of threads has on the wire, and their next sends.

``complete_batch`` runs its items on threads of its own inside one scope.
When the caller is interrupted (Ctrl-C), cancelling the scope shuts every
connection those threads have lent out — a blocked reader wakes at once —
and refuses any later send from them before it is sent; the pipeline then
reports the call as closed, which is never retried. Unlike
:meth:`KeyPool.close`, nothing else is touched: the pool's Sessions keep
serving other calls.

Threading contract: a thread joins a scope with ``with scope.entered():``
(a thread-local; scopes nest); :meth:`CancelScope.cancel` may be called
from any thread. ``_lock`` guards the scope's connections and its flag and
is never held across I/O (a socket ``shutdown`` does not block).
"""

from __future__ import annotations

import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from .wire import shut_socket

__all__ = ["CancelScope", "current_scope", "cancelled", "nap"]

_local = threading.local()


class CancelScope:
    """The connections of the threads that entered it, cut on ``cancel()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lent: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._cancelled = False
        self._stopped = threading.Event()  # set with _cancelled: ends naps

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @contextmanager
    def entered(self) -> Iterator["CancelScope"]:
        """Make this the calling thread's scope for the ``with`` block."""
        outer = current_scope()
        _local.scope = self
        try:
            yield self
        finally:
            _local.scope = outer

    def adopt(self, conn: Any) -> bool:
        """Record a connection lent to one of the scope's threads; False
        (the caller refuses to send) once the scope is cancelled."""
        with self._lock:
            if self._cancelled:
                return False
            self._lent.add(conn)
            return True

    def discard(self, conn: Any) -> None:
        """The connection was given back: it may now serve anyone, never cut it."""
        with self._lock:
            self._lent.discard(conn)

    def cancel(self) -> None:
        """Idempotent: shut every connection lent out, refuse the next."""
        with self._lock:
            self._cancelled = True
            lent = list(self._lent)
            self._lent.clear()
        self._stopped.set()
        for conn in lent:
            shut_socket(getattr(conn, "sock", None))

    def __repr__(self) -> str:
        return f"<CancelScope {'cancelled' if self._cancelled else 'live'}, {len(self._lent)} lent>"


def current_scope() -> Optional[CancelScope]:
    """The calling thread's scope, if it entered one."""
    return getattr(_local, "scope", None)


def cancelled() -> bool:
    """Whether the calling thread's scope was cancelled."""
    scope = current_scope()
    return scope is not None and scope.cancelled


# How often a nap inside a scope also looks at the other event that may end
# it (Python waits on one event at a time).
_NAP_SLICE = 0.05


def nap(seconds: float, closing: threading.Event) -> None:
    """Sleep ``seconds`` (a retry's backoff), ended early by ``closing`` (the
    manager closing) or by the calling thread's scope being cancelled, so a
    Ctrl-C'd batch leaves no thread asleep in a backoff."""
    scope = current_scope()
    if scope is None:
        closing.wait(seconds)
        return
    end = time.monotonic() + seconds
    while not closing.is_set():
        left = end - time.monotonic()
        if left <= 0 or scope._stopped.wait(min(left, _NAP_SLICE)):
            return
