"""The rate-limit backend interface: bucket state per scope id.

A backend holds the :class:`~llm_sync.ratelimit.state.ScopeState` of every
scope (a string naming a key or group and a model class, such as
``anthropic-0|claude-3-5-haiku`` or ``anthropic:acme|claude-opus-*``) and applies operations to it. The limiter above it keeps only what
is local to its process: the line of waiting callers, calls in flight,
the estimate's calibration.

Contract for implementations:

- Every method is atomic for its scope (a Redis backend: one Lua script
  per call, keyed by the scope), and safe to call from any thread.
- Time is the backend's own: memory uses an injected clock, Redis its
  server's ``TIME``. Arguments and results are amounts and durations only.
- Methods are short and never block waiting for capacity; the limiter does
  the waiting. The limiter never calls a backend while holding its lock,
  so a backend may do I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping, Optional, Sequence

from ..state import Observation, Quote, ScopeSnapshot

__all__ = ["RateLimitBackend"]


class RateLimitBackend(ABC):
    """Bucket state per scope id; see the module docstring for the contract."""

    @abstractmethod
    def declare(self, scope: str, limits: Mapping[str, float], burst_seconds: Optional[float]) -> None:
        """Create ``scope`` with configured per-minute ``limits`` by
        dimension (none: everything learned from headers). Idempotent: an
        existing scope is left as it is, so every process sharing a backend
        must declare the same limits."""

    @abstractmethod
    def quote(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        """When ``scope`` could admit ``amounts`` with ``margin`` seconds of
        refill to spare. Changes nothing."""

    def quote_many(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float) -> list[Quote]:
        """:meth:`quote` for several scopes (one round trip where a backend
        can)."""
        return [self.quote(scope, amounts, margin) for scope, amounts in requests]

    @abstractmethod
    def acquire(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        """Take ``amounts`` from ``scope`` if they fit now (``granted``);
        otherwise take nothing and say how long to wait."""

    @abstractmethod
    def adjust(self, scope: str, delta: Mapping[str, float]) -> None:
        """Correct charges: positive amounts are charged (into debt if need
        be), negative ones given back (never above capacity)."""

    @abstractmethod
    def sync(self, scope: str, observations: Mapping[str, Observation]) -> None:
        """Apply what the server's headers say (see ``ScopeState.sync``)."""

    @abstractmethod
    def pause(self, scope: str, seconds: float) -> None:
        """Admit nothing on ``scope`` for ``seconds``; never shortens a pause."""

    @abstractmethod
    def snapshot(self, scope: str) -> ScopeSnapshot:
        """The scope's buckets and pause as of now, for status and tests."""

    def after_fork(self) -> None:
        """In a forked child: drop locks and connections of the parent."""

    def close(self) -> None:
        """Release connections. Idempotent."""
