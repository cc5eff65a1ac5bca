"""The per-process line of callers waiting for rate-limit capacity, and the
choice of key by headroom.

Threading contract: a :class:`ProviderLimiter` may be used from any thread.
Its lock (``_cond``) guards only local bookkeeping: the line of waiting
callers and each key's calls reserved and in flight. Bucket state lives in
a :class:`~llm_sync.ratelimit.backends.RateLimitBackend`, and every backend
call is made with the lock released (a backend may do I/O; the lock is
never held across it). Callers wait on the lock's condition, first come
first served. The clock, wall clock and the blocking wait are injectable;
the default backend shares the clock.

Buckets are kept per *scope*: a key, or the group of keys it belongs to
(one organisation's limit), times a model class (a ``rate_limits`` entry
with ``models`` patterns; a model no class matches is a class of its own,
as providers limit per model). A call is charged to its model's scope on
the key chosen; probing, in-flight counts, header syncs and 429 pauses are
per scope, so one model's state never holds up another's, and keys of a
group never admit the group's limit twice.

Life of a call: ``reserve`` (wait in line; the key whose scope for the
call's model admits it soonest is charged 1 request + estimated input +
``max_tokens`` output) →
``mark_sent`` → ``settle`` with the actual usage and the response headers
(or ``refund`` when the request never reached the server or was refused).

Numbers a server sends are checked before they steer a key: rate-limit
headers outside plausible bounds (see ``headers``) and usage figures that
are no token count are ignored, each logged once per key (a WARNING on
``llm_sync.ratelimit`` naming the key's id and the dimension, never a
header's text); a pause is cut to ``max_pause``, after which the key is
probed again.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

from ..budget import DEFAULT_MAX_PAUSE
from ..config import RateLimitConfig
from ..errors import LLMClosedError, LLMRateLimitError, LLMValidationError
from ..tokens import plausible_count
from .backends import MemoryBackend, RateLimitBackend
from .backends.base import Admission
from .headers import parse_organization, parse_rate_limit_headers
from .key import PROBE_IN_FLIGHT, TRANSIT_MARGIN, Cost, KeyLimiter, Reservation, Scope
from .scopes import Scopes
from .state import NO_WAIT, Observation, Quote

__all__ = ["Cost", "Reservation", "KeyLimiter", "Scope", "ProviderLimiter", "PROBE_IN_FLIGHT", "TRANSIT_MARGIN"]

logger = logging.getLogger("llm_sync.ratelimit")

# With more keys than this, an attempt to admit a call looks at this many
# (in turn) first, and at every key only when none of those fits now.
KEY_WINDOW = 4

Clock = Callable[[], float]
Wait = Callable[[threading.Condition, Optional[float]], Any]


class _Plan(NamedTuple):
    """One candidate key as the line saw it, under the lock."""

    key: KeyLimiter
    scope: Scope
    amounts: dict[str, float]
    probe_full: bool
    in_flight: int
    last_chosen: int


# The status figures of one scope that are None while it has no buckets.
_FIGURES = ("requests_remaining", "input_tokens_remaining", "output_tokens_remaining", "tokens_remaining",
            "reset_at", "burst_capacity", "paused_for", "calibration")


def _hint(wait: float) -> Optional[float]:
    """A retry_after worth giving: finite and positive, else None."""
    return round(wait, 3) if 0 < wait < math.inf else None


class ProviderLimiter:
    """Every key of one provider: the line, the key choice, the bookkeeping.

    ``keys``: (client id, limits for models no class matches) per key.
    ``groups``: each key's group or None (keys of a group share their
    buckets; a group's id is ``name:group``). ``model_classes``: the
    ``rate_limits`` entries with ``models``, first match wins.
    ``default_model``: the model a call without one is charged to, and
    whose figures ``status`` shows at its top level. ``key_ids``: each
    key's name for its own buckets (default: its client id); a shared
    backend needs one that every process holding the key derives alike."""

    def __init__(self, keys: list[tuple[str, Optional[RateLimitConfig]]], *, refunds_output: bool,
                 clock: Clock = time.monotonic, wall_clock: Clock = time.time, wait: Optional[Wait] = None,
                 transit_margin: float = TRANSIT_MARGIN, backend: Optional[RateLimitBackend] = None,
                 max_pause: float = DEFAULT_MAX_PAUSE, groups: Sequence[Optional[str]] = (),
                 model_classes: Sequence[RateLimitConfig] = (), default_model: str = "",
                 name: str = "", key_ids: Sequence[str] = ()) -> None:
        self.transit_margin = transit_margin
        self.max_pause = max_pause
        self.clock = clock
        self.wall_clock = wall_clock
        self.backend = backend if backend is not None else MemoryBackend(clock)
        self.scopes = Scopes(model_classes, default_model, refunds_output=refunds_output)
        self._prefix = name or "group"
        self._cond = threading.Condition(threading.Lock())
        self.keys = []
        for i, (cid, cfg) in enumerate(keys):
            group = groups[i] if i < len(groups) else None
            own = key_ids[i] if i < len(key_ids) else cid
            owner = f"{self._prefix}:{group}" if group else own
            key = KeyLimiter(i, cid, cfg, refunds_output=refunds_output, owner=owner, grouped=bool(group))
            key.home = self.scopes.resolve(key, default_model)
            self.keys.append(key)
        for key in self.keys:
            self._declare(key.home)
        self._sequence = 0
        self._cursor = -1  # where the next window of keys starts (see _window)
        # Scopes a key's move to its organisation made, with the scope each
        # is seeded from: filled under the lock, seeded by _apply after it.
        self._to_seed: list[tuple[Scope, Scope]] = []
        self._line: list[int] = []  # tickets of callers waiting, first come first
        self._pinned = 0  # callers waiting for one particular key
        self._next_ticket = 0
        # Bumped (under the lock) whenever capacity may have come free: a
        # caller that looked at the backend without the lock waits only if
        # nothing changed meanwhile, so no wake-up is lost.
        self._version = 0
        # How a waiter blocks: Condition.wait by default; fake clocks in
        # tests advance time here instead.
        self._wait: Wait = wait or (lambda cond, timeout: cond.wait(timeout))
        # Warnings decided under the lock, logged after it is released.
        self._warnings: list[str] = []
        self._closed = False
        self._pid = os.getpid()
        # Names this limiter's first-in-line caller to a shared backend.
        self._claimant = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"<ProviderLimiter {len(self.keys)} keys, {self.waiting} waiting>"

    def close(self) -> None:
        """Wake every caller waiting for capacity: each raises LLMClosedError,
        and so does every later ``reserve``. Idempotent. In a forked child
        that never used this limiter its lock is the parent's (maybe held
        at fork time): the limiter is only marked closed."""
        if self._pid != os.getpid():
            self._closed = True
            return
        with self._cond:
            self._closed = True
            self._changed()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, nobody waiting, nothing in flight."""
        self._pid = os.getpid()
        self._claimant = uuid.uuid4().hex
        self._cond = threading.Condition(threading.Lock())
        self._line.clear()
        self._pinned = 0
        for scope in self.scopes:
            scope.forget_calls()
        self.backend.after_fork()

    # --- scopes ---------------------------------------------------------
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

    @property
    def waiting(self) -> int:
        """Callers waiting for rate-limit capacity."""
        return len(self._line) + self._pinned

    # --- admission ------------------------------------------------------
    def reserve(self, cost: Cost, deadline: Optional[float], only: Optional[KeyLimiter] = None) -> Reservation:
        """Wait in line until some key can admit ``cost``, then charge it.

        Callers are served strictly first come, first served: only the head
        of the line is admitted, on the key that fits it soonest, and it
        re-evaluates whenever a bucket changes (a settlement, a refund, a
        header sync) or its computed wait runs out. A caller bound to one
        key (``only``: a retry on the key it is on) waits for that key
        alone, outside the line: it must not hold up calls that could use
        other keys. Raises LLMValidationError when no key could ever admit
        the call, and LLMRateLimitError (with ``retry_after``) when it
        would not be admitted before ``deadline``.
        """
        candidates = self.keys if only is None else [only]
        with self._cond:
            self._check_open()
            ticket: Optional[int] = None
            if only is None:
                ticket = self._next_ticket
                self._next_ticket += 1
                self._line.append(ticket)
            else:
                self._pinned += 1
        try:
            return self._admit(cost, deadline, candidates, ticket)
        finally:
            with self._cond:
                if ticket is None:
                    self._pinned -= 1
                else:
                    self._line.remove(ticket)
                self._changed()

    def _window(self, candidates: list[KeyLimiter], whole: bool) -> list[KeyLimiter]:
        """The keys one attempt looks at: all of them, or (with more than
        KEY_WINDOW keys, while capacity is plentiful) KEY_WINDOW keys from a
        cursor that moves on by one each attempt, so every key takes its
        turn and a call costs the same with 4 keys or 400. Under the lock."""
        if whole or len(candidates) <= KEY_WINDOW:
            return candidates
        start = self._cursor = (self._cursor + 1) % len(candidates)
        window = candidates[start:start + KEY_WINDOW]
        return window + candidates[:KEY_WINDOW - len(window)]

    def _admit(self, cost: Cost, deadline: Optional[float], candidates: list[KeyLimiter],
               ticket: Optional[int]) -> Reservation:
        whole = False  # once no key of a window fits, every key is looked at
        while True:
            with self._cond:
                self._check_open()
                now, version = self.clock(), self._version
                first = ticket is None or self._line[0] == ticket
                if not first and self.backend.shared:
                    # A round trip would only tell whether the call can fit
                    # before its deadline: with a shared backend a caller
                    # behind the head waits for its turn (or its deadline)
                    # without asking, so a call costs two round trips.
                    if deadline is not None and deadline <= now:
                        raise LLMRateLimitError.local_limit("rate limit: the deadline passed while waiting in line")
                    self._wait(self._cond, None if deadline is None else deadline - now)
                    continue
                window = self._window(candidates, whole)
                plans = [_Plan(key, scope, key.amounts(cost), scope.probe_full, scope.in_flight, key.last_chosen)
                         for key in window for scope in (self.scopes.resolve(key, cost.model),)]
                # The backend breaks ties in list order: fewest calls in
                # flight first, then the key chosen longest ago.
                plans.sort(key=lambda plan: (plan.in_flight, plan.last_chosen))
                eligible = [not plan.probe_full for plan in plans]
                # The head of the line may be granted any eligible key: each
                # counts the call as unsent from before the backend takes
                # it, so no probe slot and no header sync misses it.
                held = [plan for plan, ok in zip(plans, eligible) if ok] if first else []
                for plan in held:
                    plan.scope.hold(plan.amounts)
            try:
                for plan in plans:  # without the lock: the backend may do I/O
                    self._declare(plan.scope)
                admission = self.backend.admit([(plan.scope.id, plan.amounts) for plan in plans],
                                               self.transit_margin, take=first, eligible=eligible,
                                               claimant="" if ticket is None else f"{self._claimant}:{ticket}")
            except BaseException:
                self._unhold(held, None)
                raise
            granted = plans[admission.best] if admission.granted and admission.best is not None else None
            reservation, woke = self._unhold(held, granted, cost, admission)
            if reservation is not None:
                return reservation
            version += woke  # our own wake-up is no news to us
            if granted is not None:
                continue  # its key joined its organisation's scope meanwhile: choose again
            best = admission.best
            wait = math.inf if best is None else admission.quotes[best].wait
            if len(window) < len(candidates) and wait > NO_WAIT:
                whole = True  # no key in the window fits now: look at them all
                continue
            self._refuse_oversize(plans, admission.quotes)
            remaining = math.inf if deadline is None else deadline - now
            if ticket is None and (wait > remaining or remaining <= 0):
                raise LLMRateLimitError.local_limit(
                    f"rate limit: {candidates[0].client_id} cannot admit this call before its deadline",
                    retry_after=_hint(wait))
            if best is not None and wait > remaining:
                raise LLMRateLimitError.local_limit(
                    f"rate limit: no key can admit this call before its deadline "
                    f"(soonest: {plans[best].key.client_id} in {wait:.2f}s)",
                    retry_after=round(wait, 3),
                )
            if remaining <= 0:
                raise LLMRateLimitError.local_limit("rate limit: the deadline passed while waiting in line",
                                                    retry_after=_hint(wait))
            timeout = min(remaining, wait) if first and best is not None else remaining
            with self._cond:
                if self._version == version and not self._closed:
                    self._wait(self._cond, None if math.isinf(timeout) else timeout)

    def _unhold(self, held: Sequence[_Plan], granted: Optional[_Plan], cost: Optional[Cost] = None,
                admission: Optional[Admission] = None) -> tuple[Optional[Reservation], int]:
        """Undo the holds of every plan but the one granted; make that one's
        reservation. None when nothing was granted, or when the granted key
        joined its organisation's scope while the backend charged the old
        one: that charge is given back (outside the lock). Also how many
        times this woke the line (a probe slot held is free again)."""
        with self._cond:
            for plan in held:
                if plan is not granted:
                    plan.scope.hold(plan.amounts, sign=-1.0)
            if granted is None or cost is None or admission is None:
                if any(plan.scope.probing for plan in held):
                    self._changed()
                    return None, 1
                return None, 0
            if not self._moved_away(granted.key, granted.scope, cost):
                self._sequence += 1
                granted.key.last_chosen = self._sequence
                return Reservation(granted.key, self, granted.amounts, cost.input_tokens, granted.scope,
                                   source=admission.source), 0
            granted.scope.hold(granted.amounts, sign=-1.0)
            self._changed()
        self.backend.settle(granted.scope.id, {d: -a for d, a in granted.amounts.items()}, None, admission.source)
        return None, 1

    def _check_open(self) -> None:
        if self._closed:
            raise LLMClosedError("the rate limiter is closed: its manager was closed")

    @staticmethod
    def _refuse_oversize(plans: Sequence[_Plan], quotes: Sequence[Quote]) -> None:
        """LLMValidationError when no key could ever admit the call."""
        reasons = [f"{plan.key.client_id}: {quote.oversize}" for plan, quote in zip(plans, quotes) if quote.oversize]
        if reasons and len(reasons) == len(plans):
            raise LLMValidationError(
                "the request is larger than a whole rate-limit bucket and can never be sent: " + "; ".join(reasons)
            )

    def _moved_away(self, key: KeyLimiter, scope: Scope, cost: Cost) -> bool:
        """Whether ``key`` no longer resolves to ``scope`` for this call (it
        learned its organisation meanwhile). Under the lock."""
        return self.scopes.resolve(key, cost.model) is not scope

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
        reported = parse_rate_limit_headers(headers, self.wall_clock(), rejected)
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
                self.backend.settle(scope.id, delta, observations, reservation.source)
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
                else:
                    charge = {d: amount + (delta or {}).get(d, 0.0) for d, amount in reservation.amounts.items()}
                    if ended and any(charge.values()):
                        self.backend.adjust(new.id, charge)
                if new_observations:
                    self.backend.sync(new.id, new_observations)
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

    # --- status ---------------------------------------------------------
    def paused_for(self, key: KeyLimiter, model: Optional[str] = None) -> float:
        """Seconds the key's scope for ``model`` (default: the default
        model's) stays paused after a 429 (0 when serving)."""
        return round(self.backend.snapshot(self.scope_for(key, model).id).paused_for, 3)

    def status(self, key: KeyLimiter) -> Optional[dict[str, Any]]:
        """The default model's figures for ``key`` (None: no buckets yet),
        plus ``models``: model class (or model) → that scope's figures, for
        every scope of the key (its group's, for a grouped key) in use."""
        with self._cond:
            scopes = [scope for scope in self.scopes if scope.declared and scope.owner == key.owner]
        snapshots = list(zip(scopes, self.backend.snapshot_many([scope.id for scope in scopes])))
        wall_now = self.wall_clock()
        with self._cond:
            models: dict[str, dict[str, Any]] = {}
            for scope, snapshot in snapshots:
                figures = key.status(snapshot, wall_now)
                if figures is not None:
                    models[self.scopes.label(scope)] = figures
            home_snapshot = next((snapshot for scope, snapshot in snapshots if scope is key.home), None)
            home = key.status(home_snapshot, wall_now) if home_snapshot is not None else None
        if home is None and not models:
            return None
        # The default model's buckets are unknown yet: its figures are None.
        base = home if home is not None else {**dict.fromkeys(_FIGURES), "learned": [], "limits": {}}
        return {**base, "models": models}
