"""Bucket state in this process's memory: the default backend, and the
local fallback of a shared one."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from ..state import NO_WAIT, Observation, Quote, ScopeSnapshot, ScopeState
from .base import Admission, RateLimitBackend, rank_best

__all__ = ["MemoryBackend"]


class MemoryBackend(RateLimitBackend):
    """Every scope's state in a dict, for one process.

    Threading contract: one owner (the process), one lock. Every method
    holds ``_lock`` for its whole body, which is arithmetic only, so each
    operation is atomic across all scopes; any thread may call any method.
    A forked child must call :meth:`after_fork` (the parent's lock may have
    been held at the fork). Time comes from ``clock`` (injectable).

    ``share``: the fraction of every limit this process may use, configured
    or learned (a fallback for limits normally shared with other
    processes); the server's ``remaining`` is scaled alike.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, share: float = 1.0) -> None:
        self.clock = clock
        self.share = share
        self._lock = threading.Lock()
        self._scopes: dict[str, ScopeState] = {}

    def __repr__(self) -> str:
        return f"<MemoryBackend {len(self._scopes)} scopes>"

    def _state(self, scope: str) -> ScopeState:
        try:
            return self._scopes[scope]
        except KeyError:
            raise KeyError(f"rate-limit scope {scope!r} was never declared") from None

    def declare(self, scope: str, limits: Mapping[str, float], burst_seconds: Optional[float]) -> None:
        with self._lock:
            if scope not in self._scopes:
                scaled = {d: v * self.share for d, v in limits.items()}
                self._scopes[scope] = ScopeState(scaled, burst_seconds, self.clock())

    def quote(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        with self._lock:
            return self._state(scope).quote(amounts, self.clock(), margin)

    def quote_many(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float) -> list[Quote]:
        with self._lock:
            now = self.clock()
            return [self._state(scope).quote(amounts, now, margin) for scope, amounts in requests]

    def acquire(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        with self._lock:
            return self._state(scope).try_take(amounts, self.clock(), margin)

    def admit(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float, *,
              take: bool, eligible: Optional[Sequence[bool]] = None, claimant: str = "") -> Admission:
        with self._lock:
            now = self.clock()
            quotes = [self._state(scope).quote(amounts, now, margin) for scope, amounts in requests]
            best = rank_best(quotes, eligible if eligible is not None else [True] * len(quotes))
            if not take or best is None or quotes[best].wait > NO_WAIT:
                return Admission(quotes, best, source=self)
            scope, amounts = requests[best]
            quotes[best] = self._state(scope).try_take(amounts, now, margin)
            return Admission(quotes, best, quotes[best].granted, source=self)

    def adjust(self, scope: str, delta: Mapping[str, float]) -> None:
        self.settle(scope, delta, None)

    def sync(self, scope: str, observations: Mapping[str, Observation]) -> None:
        self.settle(scope, None, observations)

    def settle(self, scope: str, delta: Optional[Mapping[str, float]],
               observations: Optional[Mapping[str, Observation]], source: Any = None, *,
               aliased: bool = False) -> None:
        with self._lock:
            state, now = self._state(scope), self.clock()
            if delta:
                state.adjust(delta, now)
            if observations:
                state.sync(self._scaled(observations), now)

    def _scaled(self, observations: Mapping[str, Observation]) -> Mapping[str, Observation]:
        """What the server says, in this process's share of each limit."""
        if self.share == 1.0:
            return observations
        return {
            d: dataclasses.replace(
                seen,
                limit=None if seen.limit is None else seen.limit * self.share,
                remaining=None if seen.remaining is None else seen.remaining * self.share,
            )
            for d, seen in observations.items()
        }

    def seed(self, scope: str, source: str, allowance: Mapping[str, float]) -> None:
        with self._lock:
            state, old, now = self._state(scope), self._state(source), self.clock()
            for dimension, bucket in state.buckets.items():
                known = old.buckets.get(dimension)
                if known is not None:
                    bucket.lower_to(known.available(now) + allowance.get(dimension, 0.0), now)

    def pause(self, scope: str, seconds: float) -> None:
        with self._lock:
            self._state(scope).pause(seconds, self.clock())

    def snapshot(self, scope: str) -> ScopeSnapshot:
        with self._lock:
            return self._state(scope).snapshot(self.clock())

    def snapshot_many(self, scopes: Sequence[str]) -> list[ScopeSnapshot]:
        with self._lock:
            now = self.clock()
            return [self._state(scope).snapshot(now) for scope in scopes]

    def after_fork(self) -> None:
        self._lock = threading.Lock()
