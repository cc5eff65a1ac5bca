"""A shared backend with a policy for when it fails: ``on_backend_error``.

``fail_open``: on the first error, log one warning and carry on with local
buckets holding ``local_share`` of every limit (this process's fair part of
a limit other processes also spend); every ``rejoin_after`` seconds one
caller pings the shared backend, and once it answers everything goes back
to it (one INFO line). ``fail_closed``: the error becomes an
``LLMRateLimitError`` for the call that met it; nothing is sent unlimited.

No charge is lost or counted twice across a switch: every admission names
the store that took it (its ``source``) and is corrected there only. A
correction whose store is down is dropped: the estimate charged stands,
which errs on the side of fewer calls.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Literal, Mapping, Optional, Sequence

from ...errors import LLMRateLimitError
from ..state import Observation, Quote, ScopeSnapshot
from .base import Admission, BackendError, RateLimitBackend
from .memory import MemoryBackend
from .redis_store import RedisBackend

__all__ = ["FailoverBackend", "DEFAULT_REJOIN_AFTER"]

logger = logging.getLogger("llm_sync.ratelimit")

# How often a process on its local fallback tries the shared backend again.
DEFAULT_REJOIN_AFTER = 2.0

OnError = Literal["fail_open", "fail_closed"]


class FailoverBackend(RateLimitBackend):
    """The shared backend while it serves; the error policy when it fails.

    Threading contract: ``_lock`` guards the mode (shared or local), the
    fallback store, the declared scopes and the counters; no I/O happens
    under it. At most one caller at a time tries to rejoin (``_probing``).
    ``clock``: when to try again (monotonic; injectable for tests).
    """

    shared = True

    def __init__(self, primary: RedisBackend, *, on_error: OnError = "fail_open", local_share: float = 1.0,
                 rejoin_after: float = DEFAULT_REJOIN_AFTER, clock: Callable[[], float] = time.monotonic,
                 local_clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.on_error = on_error
        self.local_share = local_share
        self.rejoin_after = rejoin_after
        self.clock = clock
        self._local_clock = local_clock
        self._lock = threading.Lock()
        self._specs: dict[str, tuple[Mapping[str, float], Optional[float]]] = {}
        self._local: Optional[MemoryBackend] = None  # set while failed open
        # The local store, kept across outages: a Redis that flaps between
        # failing and answering must not hand out a fresh full burst each time.
        self._fallback: Optional[MemoryBackend] = None
        self._pid = os.getpid()
        self._retry_at = 0.0
        self._probing = False
        self._healthy = True  # the shared backend's last operation succeeded
        self.errors = 0
        self.fallbacks = 0
        self.last_error: Optional[str] = None

    def __repr__(self) -> str:
        return f"<FailoverBackend {self.on_error} {'local' if self._local else 'shared'} {self.primary!r}>"

    @property
    def mode(self) -> str:
        return "local" if self._local is not None else "shared"

    # --- switching ---------------------------------------------------------
    def _failed(self, exc: BackendError) -> None:
        """Note an error of the shared backend; fail open or closed."""
        switched = False
        with self._lock:
            self.errors += 1
            self.last_error = str(exc)
            self._healthy = False
            if self.on_error == "fail_open":
                if self._local is None:
                    switched = True
                    self.fallbacks += 1
                    if self._fallback is None:
                        self._fallback = MemoryBackend(self._local_clock, share=self.local_share)
                    for scope, (limits, burst) in self._specs.items():
                        self._fallback.declare(scope, limits, burst)  # new scopes only
                    self._local = self._fallback
                self._retry_at = self.clock() + self.rejoin_after
        if switched:  # one warning an outage, logged without the lock
            logger.warning("rate-limit backend unreachable (%s): limiting locally with %.3g of each limit "
                           "until it is back", exc, self.local_share)
        if self.on_error == "fail_closed":
            raise LLMRateLimitError.local_limit(
                f"rate limit: the shared rate-limit backend is unreachable ({exc}) and on_backend_error is "
                "fail_closed", retry_after=self.rejoin_after) from exc

    def _store(self) -> RateLimitBackend:
        """Where operations go now; tries to rejoin when it is time (one
        caller at a time, with a ping)."""
        with self._lock:
            local = self._local
            if local is None:
                return self.primary
            if self._probing or self.clock() < self._retry_at:
                return local
            self._probing = True
        back = False
        try:
            self.primary.ping()
            back = True
        except BackendError:
            pass
        finally:  # an interrupted ping must not stop every later try
            with self._lock:
                self._probing = False
                if back:
                    self._local = None
                    self._healthy = True
                else:
                    self._retry_at = self.clock() + self.rejoin_after
        if not back:
            return local
        logger.info("rate-limit backend reachable again: limits are shared again")
        return self.primary

    def _call(self, operation: Callable[[RateLimitBackend], Any]) -> Any:
        store = self._store()
        if store is not self.primary:
            return operation(store)
        try:
            result = operation(store)
        except BackendError as exc:
            self._failed(exc)  # fail_closed raises here
            # An admission whose reply was lost (a timeout) may have been
            # taken on Redis as well: that charge is never corrected there;
            # it refills. The call is admitted on the local store now.
            return operation(self._local or self._fallback or self.primary)
        if not self._healthy:
            with self._lock:
                self._healthy = True
        return result

    # --- the interface -------------------------------------------------------
    def declare(self, scope: str, limits: Mapping[str, float], burst_seconds: Optional[float]) -> None:
        with self._lock:
            self._specs.setdefault(scope, (dict(limits), burst_seconds))
            local = self._local
        self.primary.declare(scope, limits, burst_seconds)  # no round trip
        if local is not None:
            local.declare(scope, limits, burst_seconds)

    def admit(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float, *,
              take: bool, eligible: Optional[Sequence[bool]] = None, claimant: str = "") -> Admission:
        result: Admission = self._call(
            lambda store: store.admit(requests, margin, take=take, eligible=eligible, claimant=claimant))
        return result

    def quote(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        result: Quote = self._call(lambda store: store.quote(scope, amounts, margin))
        return result

    def quote_many(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float) -> list[Quote]:
        result: list[Quote] = self._call(lambda store: store.quote_many(requests, margin))
        return result

    def acquire(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        result: Quote = self._call(lambda store: store.acquire(scope, amounts, margin))
        return result

    def settle(self, scope: str, delta: Optional[Mapping[str, float]],
               observations: Optional[Mapping[str, Observation]], source: Any = None, *,
               aliased: bool = False) -> None:
        """Correct the charge where it was made (``source``); without one
        (a sync of headers alone), wherever operations go now. A store that
        fails meanwhile drops the correction: never an error for a call
        that has already ended."""
        target = source if isinstance(source, RateLimitBackend) else None
        try:
            if target is None:
                self._call(lambda store: store.settle(scope, delta, observations))
            else:
                target.settle(scope, delta, observations, aliased=aliased)
        except (BackendError, LLMRateLimitError) as exc:
            with self._lock:
                self.errors += 1
                self.last_error = str(exc)
            logger.debug("rate-limit correction dropped: %s", exc)

    def adjust(self, scope: str, delta: Mapping[str, float]) -> None:
        self.settle(scope, delta, None)

    def sync(self, scope: str, observations: Mapping[str, Observation]) -> None:
        self.settle(scope, None, observations)

    def seed(self, scope: str, source: str, allowance: Mapping[str, float]) -> None:
        try:
            self._call(lambda store: store.seed(scope, source, allowance))
        except LLMRateLimitError:
            pass  # fail_closed: no call is admitted meanwhile anyway

    def pause(self, scope: str, seconds: float) -> None:
        try:
            self._call(lambda store: store.pause(scope, seconds))
        except LLMRateLimitError:
            pass  # fail_closed: the next call meets the error; a pause is no call

    def snapshot(self, scope: str) -> ScopeSnapshot:
        return self.snapshot_many([scope])[0]

    def snapshot_many(self, scopes: Sequence[str]) -> list[ScopeSnapshot]:
        """Status never fails: failed closed, the scopes show no buckets
        (``health()`` says why)."""
        try:
            result: list[ScopeSnapshot] = self._call(lambda store: store.snapshot_many(scopes))
        except LLMRateLimitError:
            return [ScopeSnapshot({}, 0.0) for _ in scopes]
        return result

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.primary.health(),
                "healthy": self._local is None and self._healthy,
                "mode": self.mode,
                "on_backend_error": self.on_error,
                "local_share": self.local_share,
                "errors": self.errors,
                "fallbacks": self.fallbacks,
                "last_error": self.last_error,
            }

    def after_fork(self) -> None:
        """Once per child (every endpoint's limiter shares this backend and
        calls it): a second call would swap locks other threads hold."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._probing = False
        self.primary.after_fork()
        if self._fallback is not None:
            self._fallback.after_fork()

    def close(self) -> None:
        self.primary.close()
