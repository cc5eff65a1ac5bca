"""Settling reservations: what each call cost, what the server's headers
say, a key learning its organisation, and a 429's pause.

:class:`Settlement` is the half of :class:`~llm_sync.ratelimit.limiter.
ProviderLimiter` that ends reservations; the limiter (the only subclass)
adds the line of waiting callers. Threading contract: the limiter's. Every
method takes ``_cond`` for local bookkeeping only and calls the backend
with it released; each ends by waking the line (``_changed``).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Mapping, Optional

from ..tokens import plausible_count
from .backends import RateLimitBackend
from .headers import ResetCache, parse_organization, parse_rate_limit_headers
from .key import KeyLimiter, Reservation, Scope
from .scopes import Scopes
from .state import Observation

__all__ = ["Settlement"]

logger = logging.getLogger("llm_sync.ratelimit")


class Settlement:
    """The settlement half of ProviderLimiter (see the module docstring).
    The attributes below are the limiter's, set in its ``__init__``."""

    _cond: threading.Condition
    _version: int
    _warnings: list[str]
    _to_seed: list[tuple[Scope, Scope]]
    _prefix: str
    _reset_cache: ResetCache
    backend: RateLimitBackend
    scopes: Scopes
    clock: Any
    wall_clock: Any
    max_pause: float

    def _declare(self, scope: Scope) -> None:
        """Create a scope's buckets in the backend once. Without the lock;
        declaring twice (two threads at once) is harmless."""
        if not scope.declared:
            self.backend.declare(scope.id, scope.configured, scope.burst_seconds)
            scope.declared = True

    def scope_for(self, key: KeyLimiter, model: Optional[str] = None) -> Scope:
        """``key``'s scope for ``model`` (default: the default model's),
        declared in the backend."""
        with self._cond:
            scope = self.scopes.resolve(key, model)
        self._declare(scope)
        return scope

    def _changed(self) -> None:
        """Capacity may have come free: wake the line. Under the lock."""
        self._version += 1
        self._cond.notify_all()

    # --- settlement -----------------------------------------------------
    def mark_sent(self, reservation: Reservation) -> None:
        """The call is going out now. Idempotent."""
        with self._cond:
            if reservation.sent_at is not None or reservation.done:
                return
            scope = reservation.scope
            for dimension, amount in reservation.amounts.items():
                scope.unsent[dimension] -= amount
            reservation.sent_at = self.clock()
            scope.in_flight += 1

    def settle(self, reservation: Reservation, input_tokens: Optional[int], output_tokens: Optional[int],
               headers: Optional[Mapping[str, str]] = None, *, prompt_tokens: Optional[int] = None) -> None:
        """Correct the charges to the actual usage; sync from headers.
        ``prompt_tokens``: the whole prompt's size, when it differs from
        the charged input (cache reads a provider does not count): the
        input estimate is calibrated against it."""
        with self._cond:
            if not self._claim(reservation):
                return
            key = reservation.key
            actual = dict(reservation.amounts)
            input_tokens, output_tokens = self._plausible_usage(key, input_tokens, output_tokens)
            if input_tokens is not None:
                actual["input_tokens"] = float(input_tokens)
                prompt = plausible_count(prompt_tokens) if prompt_tokens is not None else input_tokens
                key.calibrate(reservation.estimate, input_tokens if prompt is None else prompt)
            if output_tokens is not None:
                actual["output_tokens"] = float(output_tokens)
            charged_output = actual["output_tokens"] if key.refunds_output else reservation.amounts["output_tokens"]
            actual["tokens"] = actual["input_tokens"] + charged_output
            delta = {d: actual[d] - reservation.amounts[d] for d in actual}
            # The server counted max_tokens of output when it admitted the
            # call; its headers may predate the refund we just applied.
            pending = {"output_tokens": reservation.amounts["output_tokens"] - actual["output_tokens"]}
            observations, ends_probing = self._finish(reservation, headers, pending)
        self._apply(reservation, delta, observations, ends_probing)

    def _plausible_usage(self, key: KeyLimiter, input_tokens: Optional[int],
                         output_tokens: Optional[int]) -> tuple[Optional[int], Optional[int]]:
        """Usage figures that are token counts; any other (10**15, negative,
        a float, a string) is None: the reservation's estimate stands.
        Under the lock."""
        kept = (None if input_tokens is None else plausible_count(input_tokens),
                None if output_tokens is None else plausible_count(output_tokens))
        if kept != (input_tokens, output_tokens):
            self._warn_once(key, "usage", f"{key.client_id}: ignored a usage figure that is no plausible token "
                                          "count; the call's estimate is charged instead")
        return kept

    def _warn_once(self, key: KeyLimiter, topic: str, message: str) -> None:
        """Queue ``message`` unless ``key`` already warned about ``topic``.
        Under the lock; :meth:`_log_warnings` logs it after."""
        if topic not in key.warned:
            key.warned.add(topic)
            self._warnings.append(message)

    def _log_warnings(self) -> None:
        """Log queued warnings. Without the lock (a handler may do I/O)."""
        with self._cond:
            warnings, self._warnings = self._warnings, []
        for message in warnings:
            logger.warning(message)

    def observe(self, reservation: Reservation, headers: Mapping[str, str]) -> None:
        """A stream's headers, read when it opens: its key has answered, and
        the buckets can be synced now rather than when the stream ends
        (with a shared backend, only a scope's first answer: afterwards the
        settlement's sync is enough, one round trip less a stream)."""
        with self._cond:
            if reservation.done:
                return
            if self.backend.shared and reservation.scope.answered:
                return  # a round trip saved: the stream's settlement syncs from the same headers
            observations, _ = self._observations(reservation, headers, in_flight=reservation.amounts)
        self._apply(reservation, None, observations, True, ended=False)

    def refund(self, reservation: Reservation, headers: Optional[Mapping[str, str]] = None, *,
               keep_request: bool = False, answered: bool = True, wake: bool = True) -> None:
        """Give the charges back: the server never saw the call, or refused
        it without counting its tokens (``keep_request``: it did count it).
        ``wake=False``: leave the line asleep, for a 429 whose pause comes
        next (a waiter must not slip onto the key in between); the caller
        then owes a :meth:`wake`."""
        with self._cond:
            if not self._claim(reservation):
                return
            back = {d: -amount for d, amount in reservation.amounts.items()}
            if keep_request:
                back.pop("requests")
            if reservation.sent_at is None:
                for dimension, amount in reservation.amounts.items():
                    reservation.scope.unsent[dimension] -= amount
            observations, ends_probing = self._finish(reservation, headers, answered=answered)
        self._apply(reservation, back, observations, ends_probing, wake=wake)

    def wake(self) -> None:
        """Wake the line: capacity may have come free."""
        with self._cond:
            self._changed()

    def release(self, reservation: Reservation, headers: Optional[Mapping[str, str]] = None) -> None:
        """The call ended without usage figures: keep the charges as made."""
        with self._cond:
            if not self._claim(reservation):
                return
            observations, ends_probing = self._finish(reservation, headers)
        self._apply(reservation, None, observations, ends_probing)

    @staticmethod
    def _claim(reservation: Reservation) -> bool:
        """Settle, refund and release each end a reservation once: the
        first claims it. Under the lock."""
        if reservation.done:
            return False
        reservation.done = True
        return True

    def _finish(self, reservation: Reservation, headers: Optional[Mapping[str, str]],
                pending_refund: Optional[Mapping[str, float]] = None,
                answered: bool = True) -> tuple[dict[str, Observation], bool]:
        """Common local end of a reservation, under the lock: what to sync,
        and whether the scope has now answered (``answered=False``: the call
        never reached the server, so the scope is still unknown)."""
        scope = reservation.scope
        for dimension, amount in reservation.amounts.items():
            scope.outstanding[dimension] -= amount
        sent = reservation.sent_at is not None
        if sent:
            scope.in_flight -= 1
        observations, reported = self._observations(reservation, headers, pending_refund) if headers else ({}, False)
        # Rate-limit headers end probing (the key is known now); so does a
        # call the server answered, with headers or without.
        return observations, reported or (sent and answered)

    def _observations(self, reservation: Reservation, headers: Mapping[str, str],
                      pending_refund: Optional[Mapping[str, float]] = None,
                      in_flight: Optional[Mapping[str, float]] = None) -> tuple[dict[str, Observation], bool]:
        """What the headers say, ready for the backend; and whether they
        described any limit at all (an answer, even if nothing to sync)."""
        moved = self._learn_organization(reservation, headers)
        rejected: list[str] = []
        reported = parse_rate_limit_headers(headers, self.wall_clock(), rejected, self._reset_cache)
        if rejected:
            key = reservation.key
            self._warn_once(key, "headers", f"{key.client_id}: ignored rate-limit headers outside plausible "
                                            f"bounds ({', '.join(rejected)}); the key keeps its current limits")
        since = self.clock() - reservation.sent_at if reservation.sent_at is not None else 0.0
        if moved:
            # The headers describe the organisation's buckets: the new scope
            # learns from them too (the call was never charged there, so no
            # local counts), and _apply charges it the call.
            new, fresh = moved
            reservation.moved = (new, new.observations(reported, since, pending_refund), fresh)
        return reservation.scope.observations(reported, since, pending_refund, in_flight), bool(reported)

    def _learn_organization(self, reservation: Reservation,
                            headers: Mapping[str, str]) -> Optional[tuple[Scope, bool]]:
        """An ungrouped key whose answer names its organisation draws on
        that organisation's scopes (``endpoint:org:ID``) from now on, so
        keys of one organisation share one limit without being declared a
        group. A configured group always stands. Reservations already made
        keep (and settle on) the scope they carry. The scope moved to learns
        from this answer's headers (they describe the organisation's
        buckets) and counts as answered; made now, it starts at the levels
        of the key's own scope, else it is charged this call. Under the
        lock. The id names a scope only: it is never logged nor put in an
        error. Returns the reservation's model class under the new owner,
        and whether that scope is new; None when the key did not move."""
        key = reservation.key
        if key.grouped:
            return None
        organization = parse_organization(headers)
        if organization is None:
            return None
        owner = f"{self._prefix}:org:{organization}"
        if owner == key.owner:
            return None
        old_owner, key.owner = key.owner, owner
        moved = self.scopes.moved(reservation.scope, owner)
        # The key's other model classes in use move too: each new scope is
        # seeded from the old one's levels (calls still out included) when
        # _apply runs, so no class starts full at its organisation's scope.
        for scope in self.scopes:
            if scope.owner == old_owner and scope is not reservation.scope and scope.declared:
                self._to_seed.append((self.scopes.moved(scope, owner)[0], scope))
        # Scopes resolve from key.owner; the one cached on the key is its
        # default model's.
        key.home = self.scopes.resolve(key, self.scopes.default_model)
        return moved

    def _apply(self, reservation: Reservation, delta: Optional[Mapping[str, float]],
               observations: Mapping[str, Observation], ends_probing: bool, *, ended: bool = True,
               wake: bool = True) -> None:
        """The backend half of a settlement, without the lock; then wake
        the line. A scope the key moved to (its organisation's) is charged
        what the call cost when it ``ended``; a stream's opening headers
        (not ended: it settles on its own scope) only sync it."""
        scope = reservation.scope
        self._declare(reservation.key.home)  # new when the key learned its organisation
        with self._cond:
            moved, reservation.moved = reservation.moved, None
            to_seed, self._to_seed = self._to_seed, []
        try:
            if (delta and any(delta.values())) or observations:
                self.backend.settle(scope.id, delta, observations, reservation.source,
                                    aliased=reservation.aliased)
            if moved is not None:
                new, new_observations, fresh = moved
                self._declare(new)
                if fresh:
                    # The key's own buckets so far are the best guess of
                    # its organisation's: the new scope owes at least what
                    # they owe (with a shared backend, other processes'
                    # calls on the key included), rather than starting full.
                    # A stream still open settles on its own scope: its
                    # charge is not owed there.
                    self.backend.seed(new.id, scope.id, {} if ended else reservation.amounts)
                charge: Optional[dict[str, float]] = None
                # Admitted through the old scope's alias, the call was
                # charged (and is corrected) there already.
                if not fresh and ended and not reservation.aliased:
                    charge = {d: amount + (delta or {}).get(d, 0.0) for d, amount in reservation.amounts.items()}
                if (charge and any(charge.values())) or new_observations:
                    self.backend.settle(new.id, charge, new_observations)  # one step: charge, then sync
            for new_scope, old_scope in to_seed:
                self._declare(new_scope)
                self.backend.seed(new_scope.id, old_scope.id, {})
        finally:
            with self._cond:
                if ends_probing:
                    scope.answered = True
                    if moved is not None:  # that organisation has answered, with its figures
                        moved[0].answered = True
                if wake:
                    self._changed()
            if self._warnings:
                self._log_warnings()

    def pause(self, key: KeyLimiter, seconds: float, model: Optional[str] = None) -> None:
        """Hold ``key``'s scope for ``model`` (default: the default model's;
        for a grouped key, the whole group's) for ``seconds`` after a
        rate-limit 429, cut to ``max_pause`` (NaN: no pause). Other model
        classes are untouched: a 429 for one model says nothing about
        another. Then the scope is probed again (PROBE_IN_FLIGHT calls
        until one is answered): what the server wanted is unknown, and a
        hint cut short must not release the whole line onto it at once."""
        seconds = 0.0 if math.isnan(seconds) else min(max(0.0, seconds), self.max_pause)
        scope = self.scope_for(key, model)
        try:
            self.backend.pause(scope.id, seconds)
        finally:
            with self._cond:
                if seconds > 0:
                    scope.answered = False
                self._changed()

