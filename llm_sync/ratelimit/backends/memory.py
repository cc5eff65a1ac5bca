"""Bucket state in this process's memory: the default backend."""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional, Sequence

from ..state import Observation, Quote, ScopeSnapshot, ScopeState
from .base import RateLimitBackend

__all__ = ["MemoryBackend"]


class MemoryBackend(RateLimitBackend):
    """Every scope's state in a dict, for one process.

    Threading contract: one owner (the process), one lock. Every method
    holds ``_lock`` for its whole body, which is arithmetic only, so each
    operation is atomic across all scopes; any thread may call any method.
    A forked child must call :meth:`after_fork` (the parent's lock may have
    been held at the fork). Time comes from ``clock`` (injectable).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
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
                self._scopes[scope] = ScopeState(limits, burst_seconds, self.clock())

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

    def adjust(self, scope: str, delta: Mapping[str, float]) -> None:
        with self._lock:
            self._state(scope).adjust(delta, self.clock())

    def sync(self, scope: str, observations: Mapping[str, Observation]) -> None:
        with self._lock:
            self._state(scope).sync(observations, self.clock())

    def pause(self, scope: str, seconds: float) -> None:
        with self._lock:
            self._state(scope).pause(seconds, self.clock())

    def snapshot(self, scope: str) -> ScopeSnapshot:
        with self._lock:
            return self._state(scope).snapshot(self.clock())

    def after_fork(self) -> None:
        self._lock = threading.Lock()
