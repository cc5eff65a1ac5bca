"""What a Session has on the wire, so that ``close()`` can cut it.

A call stalled in a read (the server sent nothing yet, or stopped half-way
through a body) would otherwise keep its thread until the read timeout.
:func:`track` makes a Session's urllib3 pools remember the connections
they have lent out (a connection is lent from the moment a request starts
until its response has been read or closed); :func:`abort` shuts those
sockets down — the blocked reader wakes at once with a connection error —
and refuses every later request on that Session. A lent connection still
connecting when the abort comes (no socket to shut yet) checks the abort
as soon as it has connected, and fails before sending. A connection lent
to a thread inside a :class:`~llm_sync.cancel.CancelScope` is also
recorded there, so cancelling the scope cuts it the same way.

Threading contract: :func:`abort` may be called from any thread while
another uses the Session; each tracker's ``_lock`` guards its set of lent
connections and its aborted flag, and is never held across I/O (a socket
``shutdown`` does not block). Connections made through a proxy are not
tracked: behind a proxy a stalled call still ends at its read timeout.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Optional, cast

from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ClosedPoolError

from .cancel import current_scope
from .wire import shut_socket

__all__ = ["track", "abort"]

_ATTRIBUTE = "_llm_sync_in_flight"
_POOL = "_llm_sync_pool"  # on a tracked connection: a weak reference to its pool
_SCOPE = "_llm_sync_scope"  # on a lent connection: the CancelScope of the thread it was lent to
_CLOSED = "the llm_sync pool was closed"
_CANCELLED = "the call was cancelled"


class _InFlight:
    """The connections one Session has lent out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lent: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._aborted = False

    def lend(self, pool: HTTPConnectionPool, conn: Any) -> None:
        scope = current_scope()
        if scope is not None and not scope.adopt(conn):
            conn.close()
            raise ClosedPoolError(pool, _CANCELLED)
        setattr(conn, _SCOPE, scope)
        with self._lock:
            if not self._aborted:
                self._lent.add(conn)
                return
        conn.close()
        raise ClosedPoolError(pool, _CLOSED)

    def connected(self, conn: Any) -> None:
        """Called right after ``conn`` connects (its ``sock`` set): refuse
        it if an abort came while it was connecting. An abort shuts the
        sockets of lent connections, but one still connecting had none to
        shut; without this it would send and wait out its read timeout.
        The flag is read under the lock after ``sock`` was set, and abort
        sets the flag under the lock before reading ``sock``: one of the
        two sees the other."""
        with self._lock:
            aborted = self._aborted
        scope = getattr(conn, _SCOPE, None)
        if aborted or (scope is not None and scope.cancelled):
            shut_socket(getattr(conn, "sock", None))
            conn.close()
            ref = getattr(conn, _POOL, None)
            # Always set and alive while its pool makes a request; the pool
            # is only named in the message (urllib3 unpickles it as None).
            raise ClosedPoolError(cast(HTTPConnectionPool, ref() if ref is not None else None), _CLOSED)

    def give_back(self, conn: Any) -> None:
        scope = getattr(conn, _SCOPE, None)
        if scope is not None:  # before it can serve another call: never cut it after this
            scope.discard(conn)
            setattr(conn, _SCOPE, None)
        with self._lock:
            self._lent.discard(conn)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            lent = list(self._lent)
            self._lent.clear()
        for conn in lent:
            shut_socket(getattr(conn, "sock", None))


def _tracking_connection(base: type[Any], tracker: _InFlight) -> type[Any]:
    """``base`` (a urllib3 connection class) checking ``tracker`` as soon as
    it has connected: an abort during the connect fails the request there
    (as a ClosedPoolError: nothing was sent) instead of sending it."""

    def connect(self: Any) -> None:
        base.connect(self)
        tracker.connected(self)

    return type(f"Tracked{base.__name__}", (base,), {"connect": connect})


def _tracking_class(base: type[HTTPConnectionPool], tracker: _InFlight) -> type[HTTPConnectionPool]:
    """``base`` with its lending recorded in ``tracker`` (one per Session)."""

    def _get_conn(self: HTTPConnectionPool, timeout: Optional[float] = None) -> Any:
        conn = base._get_conn(self, timeout)
        setattr(conn, _POOL, weakref.ref(self))
        tracker.lend(self, conn)
        return conn

    def _put_conn(self: HTTPConnectionPool, conn: Any) -> None:
        if conn is not None:
            tracker.give_back(conn)
        base._put_conn(self, conn)

    members = {"_get_conn": _get_conn, "_put_conn": _put_conn,
               "ConnectionCls": _tracking_connection(base.ConnectionCls, tracker)}
    return type(f"Tracked{base.__name__}", (base,), members)


def track(session: Any) -> None:
    """Record what ``session`` lends out, from now on. Anything that is not
    a ``requests.Session`` with urllib3 adapters (a test double) is left
    alone. Idempotent."""
    if getattr(session, _ATTRIBUTE, None) is not None:
        return
    tracker = _InFlight()
    adapters = {id(adapter): adapter for adapter in getattr(session, "adapters", {}).values()}
    for adapter in adapters.values():  # one adapter is often mounted for http:// and https://
        manager = getattr(adapter, "poolmanager", None)
        classes = getattr(manager, "pool_classes_by_scheme", None)
        if not isinstance(classes, dict):
            continue
        # A copy: urllib3 shares its default table between all managers.
        manager.pool_classes_by_scheme = {  # type: ignore[union-attr]
            scheme: _tracking_class(cls, tracker) for scheme, cls in classes.items()
        }
    try:
        setattr(session, _ATTRIBUTE, tracker)
    except AttributeError:  # pragma: no cover - a session with __slots__
        pass


def abort(session: Any) -> None:
    """Cut every request ``session`` has on the wire and refuse new ones
    (they fail as a connection error that never reached the server). Safe
    from any thread; a Session never tracked is left alone."""
    tracker = getattr(session, _ATTRIBUTE, None)
    if isinstance(tracker, _InFlight):
        tracker.abort()
