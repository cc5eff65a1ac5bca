"""The rate-limit backend interface: bucket state per scope id.

A backend holds the :class:`~llm_sync.ratelimit.state.ScopeState` of every
scope (a string naming a key or group and a model class, such as
``key:3f9a…|claude-3-5-haiku`` or ``anthropic:acme|claude-opus-*``) and
applies operations to it. The limiter above it keeps only what is local to
its process: the line of waiting callers, calls in flight, the estimate's
calibration.

Contract for implementations:

- Every method is atomic (a Redis backend: one Lua script per call), and
  safe to call from any thread. :meth:`admit` is atomic across all the
  scopes it names, :meth:`settle` applies its correction and its header
  sync as one step.
- Time is the backend's own: memory uses an injected clock, Redis its
  server's ``TIME``. Arguments and results are amounts and durations only.
- Methods are short and never block waiting for capacity; the limiter does
  the waiting. The limiter never calls a backend while holding its lock,
  so a backend may do I/O.
- A backend that cannot serve raises :class:`BackendError` (or a typed
  ``LLMError`` of its choosing, as a fail-closed backend does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from ..state import NO_WAIT, Observation, Quote, ScopeSnapshot

__all__ = ["RateLimitBackend", "Admission", "BackendError", "rank_best"]


class BackendError(Exception):
    """The backend could not apply an operation (its server is unreachable,
    say). Says nothing about whether a call fits."""


@dataclass(frozen=True)
class Admission:
    """What :meth:`RateLimitBackend.admit` found: a quote per request, which
    one fits soonest (``best``; None when none is eligible), whether it was
    taken (``granted``), and ``source``: an opaque token naming the store
    that took it, handed back to :meth:`RateLimitBackend.settle` so a
    charge is corrected where it was made."""

    quotes: list[Quote]
    best: Optional[int]
    granted: bool = False
    source: Any = None
    # The grant was also charged to the scope the chosen one forwards to
    # (a key another process moved to its organisation's scope).
    aliased: bool = False


def rank_best(quotes: Sequence[Quote], eligible: Sequence[bool]) -> Optional[int]:
    """The eligible, not oversize request that fits soonest; ties go to the
    most headroom left, then to the earlier request (the limiter orders
    requests by its own preference)."""
    best: Optional[tuple[tuple[float, float, int], int]] = None
    for index, quote in enumerate(quotes):
        if quote.oversize is not None or not eligible[index]:
            continue
        rank = (quote.wait, -quote.headroom, index)
        if best is None or rank < best[0]:
            best = (rank, index)
    return None if best is None else best[1]


class RateLimitBackend(ABC):
    """Bucket state per scope id; see the module docstring for the contract."""

    #: True when the state lives outside this process: every call is a
    #: round trip, so the limiter skips the ones it can do without.
    shared = False

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

    def admit(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float, *,
              take: bool, eligible: Optional[Sequence[bool]] = None, claimant: str = "") -> Admission:
        """Quote every request; when ``take``, also take the best one (see
        :func:`rank_best`) if it fits now. ``eligible``: which requests may
        be chosen (default: all). ``claimant``: names the caller first in
        its process's line, for a shared backend to keep processes fair
        (ignored here). Backends make this one atomic step; this default is
        two (the take may then find the capacity gone)."""
        quotes = self.quote_many(requests, margin)
        best = rank_best(quotes, eligible if eligible is not None else [True] * len(quotes))
        if not take or best is None or quotes[best].wait > NO_WAIT:
            return Admission(quotes, best)
        scope, amounts = requests[best]
        taken = self.acquire(scope, amounts, margin)
        quotes[best] = taken
        return Admission(quotes, best, taken.granted)

    @abstractmethod
    def adjust(self, scope: str, delta: Mapping[str, float]) -> None:
        """Correct charges: positive amounts are charged (into debt if need
        be), negative ones given back (never above capacity)."""

    @abstractmethod
    def sync(self, scope: str, observations: Mapping[str, Observation]) -> None:
        """Apply what the server's headers say (see ``ScopeState.sync``)."""

    def settle(self, scope: str, delta: Optional[Mapping[str, float]],
               observations: Optional[Mapping[str, Observation]], source: Any = None, *,
               aliased: bool = False) -> None:
        """:meth:`adjust` then :meth:`sync`, as one step where a backend can.
        ``source`` and ``aliased``: the admission's, naming where the
        charge was made (the correction goes to the same places)."""
        if delta and any(delta.values()):
            self.adjust(scope, delta)
        if observations:
            self.sync(scope, observations)

    @abstractmethod
    def seed(self, scope: str, source: str, allowance: Mapping[str, float]) -> None:
        """Leave ``scope`` no fuller than ``source`` plus ``allowance``,
        bucket by bucket: a key's organisation's scope, when the key moves
        there, owes at least what the key's own scope owes. A lower bound,
        so every process may apply it (each moves its keys on its own first
        answer) and no call is counted twice."""

    @abstractmethod
    def pause(self, scope: str, seconds: float) -> None:
        """Admit nothing on ``scope`` for ``seconds``; never shortens a pause."""

    @abstractmethod
    def snapshot(self, scope: str) -> ScopeSnapshot:
        """The scope's buckets and pause as of now, for status and tests."""

    def snapshot_many(self, scopes: Sequence[str]) -> list[ScopeSnapshot]:
        """:meth:`snapshot` for several scopes (one round trip where a
        backend can)."""
        return [self.snapshot(scope) for scope in scopes]

    def health(self) -> dict[str, Any]:
        """What status shows of the backend: its name and whether it serves."""
        return {"backend": "memory", "healthy": True}

    def after_fork(self) -> None:
        """In a forked child: drop locks and connections of the parent."""

    def close(self) -> None:
        """Release connections. Idempotent."""
