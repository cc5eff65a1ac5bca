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
from typing import Any, Callable, NamedTuple, Optional, Sequence

from ..budget import DEFAULT_MAX_PAUSE
from ..config import RateLimitConfig
from ..cancel import cancelled
from ..errors import LLMClosedError, LLMRateLimitError, LLMValidationError
from .backends import MemoryBackend, RateLimitBackend
from .backends.base import Admission
from .key import PROBE_IN_FLIGHT, TRANSIT_MARGIN, Cost, KeyLimiter, Reservation, Scope
from .headers import ResetCache
from .scopes import Scopes
from .settlement import Settlement
from .state import NO_WAIT, Quote

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


class ProviderLimiter(Settlement):
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
        self._reset_cache = ResetCache()  # header reset values parsed, under the lock
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
        # Names this limiter's first-in-line caller to a shared backend: one
        # name for the process, so a claim a caller left behind (deadline,
        # Ctrl-C) is its successor's, never a stranger's that blocks it.
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
                if cancelled():  # its batch was interrupted (Ctrl-C): no thread left waiting
                    raise LLMClosedError("the call was cancelled while waiting for rate-limit capacity")
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
                plans = [_Plan(key, scope, key.amounts(cost, scope.id), scope.probe_full, scope.in_flight, key.last_chosen)
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
                                               claimant="" if ticket is None else self._claimant)
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
                                   source=admission.source, aliased=admission.aliased), 0
            granted.scope.hold(granted.amounts, sign=-1.0)
            self._changed()
        self.backend.settle(granted.scope.id, {d: -a for d, a in granted.amounts.items()}, None, admission.source,
                            aliased=admission.aliased)
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
