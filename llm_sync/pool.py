"""KeyPool: up to ``max_size`` leases of key-bound Sessions for a provider.

A lease pairs a ``requests.Session`` (one thread uses it at a time; the
most recently returned, warmest one is lent first) with the key the rate
limiter chose for the call. Sessions carry no key, so any session can
serve any key; several leases may share a key.

Callers that find no free Session wait in line and are served first come,
first served: a returned Session is handed straight to the longest waiter,
never raced for.

``close()`` is bounded: it cuts what leased Sessions have on the wire (see
:mod:`llm_sync.inflight`), makes open streams raise
:class:`~llm_sync.errors.LLMClosedError` to their readers, and wakes every
waiter with it.

Threading contract: every method may be called from any thread. The pool
owns its bookkeeping (the line of waiters, free and leased Sessions, live
streams, the closed flag) under ``_lock``, which is never held across
network I/O: the I/O happens after ``acquire`` returns. After ``fork()`` a
pool rebuilds its locks and Sessions on first use in the child rather than
share the parent's sockets; ``close()`` in a child that never used it
touches neither the parent's sockets nor its locks.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

import requests

from . import inflight
from .cancel import cancelled
from .errors import LLMClosedError, LLMError, LLMPoolExhaustedError, LLMTimeoutError
from .keys import PooledKey
from .ratelimit.limiter import ProviderLimiter
from .transport import build_session

if TYPE_CHECKING:
    from .streaming import Stream

__all__ = ["KeyPool", "Lease"]

_log = logging.getLogger("llm_sync")

# A waiter re-checks for streams closed by the garbage collector this often.
_GRAVEYARD_POLL = 0.25


class _Slot:
    """One Session and when it was last returned."""

    __slots__ = ("session", "last_used")

    def __init__(self, session: requests.Session, last_used: float) -> None:
        self.session = session
        self.last_used = last_used


class _Waiter:
    """One caller in line: the Session handed to it, or the news of close."""

    __slots__ = ("event", "slot", "closed")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.slot: Optional[_Slot] = None
        self.closed = False


class Lease:
    """A Session bound to one key for one call. ``release()`` is idempotent
    and thread-safe; a context manager releases on exit."""

    __slots__ = ("_pool", "_slot", "key", "_released", "_lock")

    def __init__(self, pool: "KeyPool", slot: _Slot, key: PooledKey) -> None:
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

    def defer_close(self, stream: "Stream") -> None:
        """Called by a stream's finaliser when closing inline is unsafe."""
        self._pool._graveyard.append(stream)

    def track(self, stream: "Stream") -> None:
        """Let close() cut ``stream``; cut it now if close() already ran."""
        self._pool._track(stream)

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
        keys: list[PooledKey],
        max_size: int,
        acquire_timeout: float,
        idle_timeout: float,
        limiter: Optional[ProviderLimiter] = None,
        clock: Callable[[], float] = time.monotonic,
        session_factory: Callable[[], requests.Session] = build_session,
    ) -> None:
        if not keys:
            raise LLMError(f"{name}: a pool needs at least one key")
        self.name = name
        self.keys = list(keys)
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.idle_timeout = idle_timeout
        self.limiter = limiter or ProviderLimiter([(k.client_id, None) for k in keys], refunds_output=True,
                                                  clock=clock)
        self._clock = clock
        self._session_factory = session_factory
        self._closed = False
        self._fork_locks: dict[int, threading.Lock] = {}
        self._setup()

    def _setup(self) -> None:
        """Locks, queue and Sessions: at start, and again in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._line: "collections.deque[_Waiter]" = collections.deque()  # first come, first served
        self._sequence = itertools.count()
        self._last_chosen = {key.client_id: -1 for key in self.keys}
        self._free: list[_Slot] = []  # a stack: the warmest Session on top
        self._leased: set[_Slot] = set()
        self._graveyard: "collections.deque[Stream]" = collections.deque()
        self._streams: "weakref.WeakSet[Stream]" = weakref.WeakSet()
        now = self._clock()
        for _ in range(self.max_size):
            session = self._session_factory()
            inflight.track(session)
            self._free.append(_Slot(session, now))

    def _check_fork(self) -> None:
        """In a forked child, rebuild once, however many threads call at
        once. The guard is a lock per process id: ``dict.setdefault`` is
        atomic, so every thread of the child gets the same new lock, and a
        lock the parent held at fork time is never waited on."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._fork_locks.setdefault(pid, threading.Lock()):
            if self._pid == pid:
                return
            # The parent's sockets and any lock held at fork time stay behind.
            self._setup()
            for key in self.keys:
                key.after_fork()
            self.limiter.after_fork()

    def check_fork(self) -> None:
        """Rebuild after ``fork()`` if this is a child that has not yet
        (the pipeline calls it before touching the limiter)."""
        self._check_fork()

    def clock(self) -> float:
        """The pool's clock (monotonic; injectable for tests)."""
        return self._clock()

    @property
    def clients(self) -> list[PooledKey]:
        """The key-bound clients, as API.md names them (``self.keys``)."""
        return self.keys

    @property
    def _clients(self) -> list[PooledKey]:
        """Kept for the seed's examples (``pool._clients``)."""
        return self.keys

    # --- leasing --------------------------------------------------------
    def acquire(self, timeout: Optional[float] = None, key: Optional[PooledKey] = None) -> Lease:
        """Lease a Session bound to ``key`` (the rate limiter's choice), or
        to the key with the fewest leases. Waits up to ``timeout`` (default
        ``acquire_timeout``) for a free Session; a ``timeout`` shorter than
        ``acquire_timeout`` is the call's own deadline, and running out of
        it raises LLMTimeoutError rather than LLMPoolExhaustedError."""
        wait, by_caller = self.wait_limit(timeout)
        return self.lease(self._clock() + wait, by_caller, key)

    def wait_limit(self, timeout: Optional[float]) -> tuple[float, bool]:
        """(seconds a caller may wait, whether that is its own deadline)."""
        by_caller = timeout is not None and timeout < self.acquire_timeout
        return (max(0.0, timeout or 0.0) if by_caller else self.acquire_timeout), by_caller

    def lease(self, until: float, by_caller: bool, key: Optional[PooledKey] = None) -> Lease:
        """Lease a Session for ``key`` waiting until ``until`` (pool clock)."""
        if self._closed:  # before any rebuild: a pool closed in a forked child stays closed
            raise LLMClosedError(f"the {self.name} pool is closed")
        self._check_fork()
        self._bury()
        started = self._clock()
        slot = self._take_slot(max(0.0, until - started), by_caller)
        try:
            if self.idle_timeout and self._clock() - slot.last_used > self.idle_timeout:
                slot.session.close()  # drop connections the server has likely timed out
            if key is None:
                key = self._choose_key()
            else:
                key.bind()
        except BaseException:  # a Ctrl-C here must not lose the Session
            self._give_back(slot)
            raise
        return Lease(self, slot, key)

    def _take_slot(self, remaining: float, by_caller: bool) -> _Slot:
        """The warmest free Session if nobody is waiting; else wait in line
        until one is handed over (first come, first served)."""
        waiter = _Waiter()
        with self._lock:
            if self._closed:
                raise LLMClosedError(f"the {self.name} pool is closed")
            if self._free and not self._line:
                slot = self._free.pop()
                self._leased.add(slot)
                return slot
            self._line.append(waiter)
        try:
            self._wait_in_line(waiter, remaining, by_caller)
        except BaseException:
            # A timeout, a Ctrl-C or SystemExit in the wait: leave the line,
            # or pass on a Session handed over meanwhile, so none is lost.
            self._leave_line(waiter)
            raise
        if waiter.slot is None:
            raise LLMClosedError(f"the {self.name} pool is closed")
        return waiter.slot

    def _wait_in_line(self, waiter: _Waiter, remaining: float, by_caller: bool) -> None:
        """Wait until ``waiter`` is handed a Session or woken by close."""
        deadline = time.monotonic() + remaining
        while True:
            left = deadline - time.monotonic()
            if waiter.event.wait(max(0.0, min(left, _GRAVEYARD_POLL))):
                return
            if cancelled():  # its batch was interrupted (Ctrl-C): no thread left waiting
                raise LLMClosedError(f"the {self.name} call was cancelled while waiting for a client")
            if self._bury():  # a stream the collector closed may have freed a Session
                continue
            if left <= _GRAVEYARD_POLL:
                with self._lock:
                    if waiter.slot is None and not waiter.closed:
                        self._line.remove(waiter)
                        message = (f"no {self.name} client became free within {remaining:.1f}s "
                                   f"({self.max_size} calls in flight)")
                        if by_caller:  # the call's own deadline: nothing was sent
                            raise LLMTimeoutError(message, sent=False, deadline_passed=True, kind="deadline")
                        raise LLMPoolExhaustedError(message)
                return  # handed a Session (or closed) just now

    def _leave_line(self, waiter: _Waiter) -> None:
        """A waiter gives up: out of the line, and a Session it was handed
        goes on to the next waiter (or back to the free stack)."""
        with self._lock:
            slot, waiter.slot = waiter.slot, None
            if slot is None:
                try:
                    self._line.remove(waiter)
                except ValueError:
                    pass  # already out: timed out, or woken by close()
                return
            close = self._hand_on(slot)
        if close:
            slot.session.close()

    def _give_back(self, slot: _Slot) -> None:
        """Return a Session taken for a lease that was never made."""
        with self._lock:
            close = self._hand_on(slot)
        if close:
            slot.session.close()

    def _choose_key(self) -> PooledKey:
        """The key with the fewest leases; ties go to the least recently
        chosen, so equal keys are used in turn."""
        with self._lock:
            key = min(self.keys, key=lambda k: (k.in_use, self._last_chosen[k.client_id]))
            self._last_chosen[key.client_id] = next(self._sequence)
            key.bind()
        return key

    def _release(self, slot: _Slot, key: PooledKey) -> None:
        """Hand the Session to the longest waiter, else put it on top of
        the free stack; after close, close it."""
        key.unbind()
        slot.last_used = self._clock()
        if self._pid != os.getpid():
            return  # the parent's Session, in a forked child: not ours to touch
        with self._lock:  # under the lock, so close() cannot miss this slot
            if slot not in self._leased:
                return  # lent before a fork rebuilt the pool: the parent's
            close = self._hand_on(slot)
        if close:
            slot.session.close()

    def _hand_on(self, slot: _Slot) -> bool:
        """Under ``_lock``: give a leased Session to the longest waiter,
        else put it on top of the free stack. True if the pool is closed:
        the caller then closes the Session (outside the lock)."""
        if not self._closed:
            if self._line:
                waiter = self._line.popleft()
                waiter.slot = slot
                waiter.event.set()
                return False
            self._leased.discard(slot)
            self._free.append(slot)
            return False
        self._leased.discard(slot)
        return True

    def _track(self, stream: "Stream") -> None:
        """Under the lock, so close() never iterates a set that changes
        size, and never misses a stream: one tracked after close() took
        its snapshot is cut here, as close() would have."""
        with self._lock:
            if not self._closed:
                self._streams.add(stream)
                return
        self._quietly("cutting a stream", stream.abort, self._cut_reason())

    def _bury(self) -> bool:
        """Close streams the garbage collector handed over; True if any.
        Never raises: it runs on behalf of unrelated callers (a lease, a
        waiter, status, close), so a finisher's failure is only logged."""
        buried = False
        while self._graveyard:
            try:
                stream = self._graveyard.popleft()
            except IndexError:
                break
            try:
                stream.close()
            except Exception as exc:
                _log.warning("closing an abandoned %s stream raised %s", self.name, type(exc).__name__)
            buried = True
        return buried

    # --- status and lifecycle ------------------------------------------
    @property
    def available(self) -> int:
        return 0 if self._closed else len(self._free)

    @property
    def waiting(self) -> int:
        """Callers waiting for a Session or for rate-limit capacity."""
        return len(self._line) + self.limiter.waiting

    def status(self) -> dict[str, Any]:
        self._bury()
        available = self.available
        return {
            "provider": self.name,
            "total_clients": self.max_size,
            "available_clients": available,
            "in_flight": self.max_size - available,
            "queue_size": self.waiting,
            "keys": len(self.keys),
            "closed": self._closed,
            "client_statuses": [
                {**key.status(), "paused_for": self.limiter.paused_for(self.limiter.keys[key.index]),
                 "rate_limit_status": self.limiter.status(self.limiter.keys[key.index])}
                for key in self.keys
            ],
        }

    def close(self) -> None:
        """Bounded and idempotent: make open streams raise LLMClosedError to
        their readers, cut what leased Sessions have on the wire (their calls
        fail at once with LLMClosedError instead of waiting out a read
        timeout), close idle Sessions now and leased ones as they come back,
        wake every waiter (leases and rate-limit capacity) with LLMClosedError.

        In a forked child that never used the pool, everything here belongs
        to the parent (its sockets, and locks one of its threads may have
        held at fork time): the pool is only marked closed."""
        if self._pid != os.getpid():
            self._closed = True
            self.limiter.close()
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams)
            leased = list(self._leased)
            idle, self._free = self._free, []
            waiters = list(self._line)
            self._line.clear()
            for waiter in waiters:
                waiter.closed = True
                waiter.event.set()
        # Every step runs whatever an earlier one raised: a failure is
        # logged (by type only) and never stops the shutdown half-way.
        self._quietly("closing the rate limiter", self.limiter.close)
        for stream in streams:
            self._quietly("cutting a stream", stream.abort, self._cut_reason())
        for slot in leased:
            self._quietly("cutting a call in flight", inflight.abort, slot.session)
        self._bury()
        for slot in idle:
            self._quietly("closing an idle Session", slot.session.close)

    def _cut_reason(self) -> str:
        return f"the {self.name} pool was closed before the stream's end: the answer is incomplete"

    def _quietly(self, what: str, step: Callable[..., Any], *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:
            _log.warning("%s of the %s pool raised %s; close goes on", what, self.name, type(exc).__name__)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<KeyPool {self.name} {self.available}/{self.max_size} idle, {self.waiting} waiting{state}>"
