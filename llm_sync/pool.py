"""KeyPool: up to ``max_size`` leases of key-bound Sessions for a provider.

A lease pairs a ``requests.Session`` (taken from a ``queue.Queue``, so one
thread uses it at a time and its kept-alive connections are reused) with
the key that has the most headroom at that moment. Sessions carry no key,
so any session can serve any key; several leases may share a key.

Threading contract: every method may be called from any thread. The pool
owns its bookkeeping (waiting count, closed flag, key choice) under
``_lock``; the queue guards the free sessions. Neither is held across
network I/O: the I/O happens after ``acquire`` returns.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Any, Callable, Optional

import requests

from .errors import LLMError, LLMPoolExhaustedError
from .keys import KeyClient
from .transport import build_session

__all__ = ["KeyPool", "Lease"]


class _Slot:
    """One Session and when it was last returned."""

    __slots__ = ("session", "last_used")

    def __init__(self, session: requests.Session, last_used: float) -> None:
        self.session = session
        self.last_used = last_used


class Lease:
    """A Session bound to one key for one call. ``release()`` is idempotent
    and thread-safe; a context manager releases on exit."""

    __slots__ = ("_pool", "_slot", "key", "_released", "_lock")

    def __init__(self, pool: "KeyPool", slot: _Slot, key: KeyClient) -> None:
        self._pool = pool
        self._slot = slot
        self.key = key
        self._released = False
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        return self._slot.session

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._pool._release(self._slot, self.key)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Lease {self.key.client_id}{' released' if self._released else ''}>"


class KeyPool:
    def __init__(
        self,
        name: str,
        keys: list[KeyClient],
        max_size: int,
        acquire_timeout: float,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        session_factory: Callable[[], requests.Session] = build_session,
    ) -> None:
        if not keys:
            raise LLMError(f"{name}: a pool needs at least one key")
        self.name = name
        self.clients = list(keys)
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = False
        self._sequence = itertools.count()
        self._last_chosen = {key.client_id: -1 for key in keys}
        self._free: "queue.Queue[Optional[_Slot]]" = queue.Queue()
        now = clock()
        self._all_slots = [_Slot(session_factory(), now) for _ in range(max_size)]
        for slot in self._all_slots:
            self._free.put(slot)

    @property
    def _clients(self) -> list[KeyClient]:
        """Kept for the seed's examples (``pool._clients``)."""
        return self.clients

    # --- leasing --------------------------------------------------------
    def acquire(self, timeout: Optional[float] = None) -> Lease:
        """Wait up to ``timeout`` (default ``acquire_timeout``) for a free
        Session, bind it to the key with most headroom, and return the lease."""
        wait = self.acquire_timeout if timeout is None else max(0.0, min(timeout, self.acquire_timeout))
        with self._lock:
            if self._closed:
                raise LLMError(f"the {self.name} pool is closed")
            self._waiting += 1
        try:
            slot = self._free.get(timeout=wait)
        except queue.Empty:
            raise LLMPoolExhaustedError(
                f"no {self.name} client became free within {wait:.1f}s "
                f"({self.max_size} calls in flight, {self._waiting} waiting)"
            ) from None
        finally:
            with self._lock:
                self._waiting -= 1
        if slot is None:  # close() woke us: pass the news on to the next waiter
            self._free.put(None)
            raise LLMError(f"the {self.name} pool is closed")
        if self.idle_timeout and self._clock() - slot.last_used > self.idle_timeout:
            slot.session.close()  # drop connections the server has likely timed out
        return Lease(self, slot, self._choose_key())

    def lease(self, timeout: Optional[float] = None) -> Lease:
        return self.acquire(timeout)

    def _choose_key(self) -> KeyClient:
        """The key with the fewest leases; ties go to the least recently
        chosen, so equal keys are used in turn."""
        with self._lock:
            key = min(self.clients, key=lambda k: (k.in_use, self._last_chosen[k.client_id]))
            self._last_chosen[key.client_id] = next(self._sequence)
            key.bind()
        return key

    def _release(self, slot: _Slot, key: KeyClient) -> None:
        key.unbind()
        slot.last_used = self._clock()
        with self._lock:
            closed = self._closed
        if closed:
            slot.session.close()
        else:
            self._free.put(slot)

    # --- status and lifecycle ------------------------------------------
    @property
    def available(self) -> int:
        return self._free.qsize()

    @property
    def waiting(self) -> int:
        return self._waiting

    def status(self) -> dict[str, Any]:
        available = self._free.qsize()
        return {
            "provider": self.name,
            "total_clients": self.max_size,
            "available_clients": available,
            "in_flight": self.max_size - available,
            "queue_size": self._waiting,
            "keys": len(self.clients),
            "closed": self._closed,
            "client_statuses": [key.status() for key in self.clients],
        }

    def close(self) -> None:
        """Close idle Sessions now and leased ones as they come back;
        wake every waiter with a clear error. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while True:
            try:
                slot = self._free.get_nowait()
            except queue.Empty:
                break
            if slot is not None:
                slot.session.close()
        self._free.put(None)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<KeyPool {self.name} {self.available}/{self.max_size} idle, {self._waiting} waiting{state}>"
