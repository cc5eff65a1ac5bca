"""Per-key rate limits of one provider, and the choice of key by headroom.

Threading contract: a :class:`ProviderLimiter` owns every bucket of every
key of its provider and guards all of them with one lock (``_cond``). The
lock is held only for arithmetic; waiting callers block on the lock's
condition (which releases it), first come first served. The clock, wall
clock and the blocking wait are injectable.

Life of a call: ``reserve`` (wait in line; the key that admits it soonest
is charged 1 request + estimated input + ``max_tokens`` output) →
``mark_sent`` → ``settle`` with the actual usage and the response headers
(or ``refund`` when the request never reached the server or was refused).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Mapping, Optional

from ..config import RateLimitConfig
from ..errors import LLMRateLimitError, LLMValidationError
from .headers import DIMENSIONS, parse_rate_limit_headers
from .key import PROBE_IN_FLIGHT, TRANSIT_MARGIN, Cost, KeyLimiter, Reservation

__all__ = ["Cost", "Reservation", "KeyLimiter", "ProviderLimiter", "PROBE_IN_FLIGHT", "TRANSIT_MARGIN"]

# Waits shorter than this are float noise in the refill maths: admit now
# rather than spin on a clock too coarse to move by that much.
_NO_WAIT = 1e-6


def _claim(reservation: "Reservation") -> bool:
    """Settle, refund and release each end a reservation once: the first
    claims it. Called under the limiter's lock."""
    if reservation.done:
        return False
    reservation.done = True
    return True


def _hint(wait: float) -> Optional[float]:
    """A retry_after worth giving: finite and positive, else None."""
    return round(wait, 3) if 0 < wait < math.inf else None

Clock = Callable[[], float]

class ProviderLimiter:
    """Every key's limiter for one provider, under one lock."""

    def __init__(self, keys: list[tuple[str, Optional[RateLimitConfig]]], *, refunds_output: bool,
                 clock: Clock = time.monotonic, wall_clock: Clock = time.time,
                 wait: Optional[Callable[[threading.Condition, Optional[float]], Any]] = None,
                 transit_margin: float = TRANSIT_MARGIN) -> None:
        self.transit_margin = transit_margin
        self.clock = clock
        self.wall_clock = wall_clock
        self._cond = threading.Condition(threading.Lock())
        now = clock()
        self.keys = [KeyLimiter(i, cid, cfg, refunds_output=refunds_output, now=now)
                     for i, (cid, cfg) in enumerate(keys)]
        self._sequence = 0
        self._line: list[int] = []  # tickets of callers waiting, first come first
        self._pinned = 0  # callers waiting for one particular key
        self._next_ticket = 0
        # How a waiter blocks: Condition.wait by default; fake clocks in
        # tests advance time here instead.
        self._wait = wait or (lambda cond, timeout: cond.wait(timeout))

    def __repr__(self) -> str:
        return f"<ProviderLimiter {len(self.keys)} keys, {self.waiting} waiting>"

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, nobody waiting, nothing in flight."""
        self._cond = threading.Condition(threading.Lock())
        self._line.clear()
        for key in self.keys:
            key.in_flight = 0
            key.unsent = dict.fromkeys(DIMENSIONS, 0.0)
            key.outstanding = dict.fromkeys(DIMENSIONS, 0.0)

    # --- admission ------------------------------------------------------
    def reserve(self, cost: Cost, deadline: Optional[float], only: Optional[KeyLimiter] = None) -> Reservation:
        """Wait in line until some key can admit ``cost``, then charge it.

        Callers are served strictly first come, first served: only the head
        of the line is admitted, on the key that fits it soonest, and it
        re-evaluates whenever a bucket changes (a settlement, a refund, a
        header sync) or its computed wait runs out. Raises
        LLMValidationError when no key could ever admit the call, and
        LLMRateLimitError (with ``retry_after``) when it would not be
        admitted before ``deadline``.
        """
        if only is not None:
            return self._reserve_on(only, cost, deadline)
        candidates = self.keys
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._line.append(ticket)
            try:
                while True:
                    now = self.clock()
                    wait, choice = self._soonest(cost, candidates, now)
                    if self._line[0] == ticket and choice is not None and wait <= _NO_WAIT:
                        return self._charge(choice, cost, now)
                    remaining = math.inf if deadline is None else deadline - now
                    if choice is not None and wait > remaining:
                        raise LLMRateLimitError(
                            f"rate limit: no key can admit this call before its deadline "
                            f"(soonest: {choice.client_id} in {wait:.2f}s)",
                            retry_after=round(wait, 3),
                        )
                    if remaining <= 0:
                        raise LLMRateLimitError("rate limit: the deadline passed while waiting in line",
                                                retry_after=_hint(wait))
                    timeout = remaining
                    if self._line[0] == ticket and choice is not None:
                        timeout = min(timeout, wait)
                    self._wait(self._cond, None if math.isinf(timeout) else timeout)
            finally:
                self._line.remove(ticket)
                self._cond.notify_all()

    def _reserve_on(self, key: KeyLimiter, cost: Cost, deadline: Optional[float]) -> Reservation:
        """A caller bound to one key (a retry on the key it is on) waits for
        that key alone, outside the shared line: it must not hold up calls
        that could use other keys."""
        with self._cond:
            self._pinned += 1
            try:
                while True:
                    now = self.clock()
                    wait, choice = self._soonest(cost, [key], now)
                    if choice is not None and wait <= _NO_WAIT:
                        return self._charge(choice, cost, now)
                    remaining = math.inf if deadline is None else deadline - now
                    if wait > remaining or remaining <= 0:
                        raise LLMRateLimitError(
                            f"rate limit: {key.client_id} cannot admit this call before its deadline",
                            retry_after=_hint(wait))
                    timeout = min(wait, remaining)
                    self._wait(self._cond, None if math.isinf(timeout) else timeout)
            finally:
                self._pinned -= 1

    def _soonest(self, cost: Cost, candidates: list[KeyLimiter],
                 now: float) -> tuple[float, Optional[KeyLimiter]]:
        """The key that admits ``cost`` soonest: (seconds, key). Ties go to
        the key with most headroom left, so traffic spreads in proportion to
        each key's limits. (inf, None) when every usable key is probing."""
        best: Optional[tuple[tuple[float, float, int, int], KeyLimiter]] = None
        reasons = []
        for key in candidates:
            amounts = key.amounts(cost)
            reason = key.oversize(amounts)
            if reason:
                reasons.append(f"{key.client_id}: {reason}")
                continue
            if key.probing and key.in_flight + key.unsent_calls >= PROBE_IN_FLIGHT:
                continue  # wait for its first answer
            rank = (key.wait_time(amounts, now, self.transit_margin), -key.headroom(amounts, now),
                    key.in_flight, key.last_chosen)
            if best is None or rank < best[0]:
                best = (rank, key)
        if len(reasons) == len(candidates):
            raise LLMValidationError(
                "the request is larger than a whole rate-limit bucket and can never be sent: " + "; ".join(reasons)
            )
        return (math.inf, None) if best is None else (best[0][0], best[1])

    def _charge(self, key: KeyLimiter, cost: Cost, now: float) -> Reservation:
        amounts = key.amounts(cost)
        key.charge(amounts, now)
        for dimension, amount in amounts.items():
            key.unsent[dimension] += amount
            key.outstanding[dimension] += amount
        self._sequence += 1
        key.last_chosen = self._sequence
        return Reservation(key, self, amounts, cost.input_tokens)

    @property
    def waiting(self) -> int:
        """Callers waiting for rate-limit capacity."""
        return len(self._line) + self._pinned

    # --- settlement -----------------------------------------------------
    def mark_sent(self, reservation: Reservation) -> None:
        """The call is going out now. Idempotent."""
        with self._cond:
            if reservation.sent_at is not None or reservation.done:
                return
            key = reservation.key
            for dimension, amount in reservation.amounts.items():
                key.unsent[dimension] -= amount
            reservation.sent_at = self.clock()
            key.in_flight += 1

    def settle(self, reservation: Reservation, input_tokens: Optional[int], output_tokens: Optional[int],
               headers: Optional[Mapping[str, str]] = None) -> None:
        """Correct the charges to the actual usage; sync from headers."""
        with self._cond:
            if not _claim(reservation):
                return
            key, now = reservation.key, self.clock()
            actual = dict(reservation.amounts)
            if input_tokens is not None:
                actual["input_tokens"] = float(input_tokens)
                key.calibrate(reservation.estimate, input_tokens)
            if output_tokens is not None:
                actual["output_tokens"] = float(output_tokens)
            charged_output = actual["output_tokens"] if key.refunds_output else reservation.amounts["output_tokens"]
            actual["tokens"] = actual["input_tokens"] + charged_output
            delta = {d: actual[d] - reservation.amounts[d] for d in actual}
            key.charge({d: v for d, v in delta.items() if v > 0}, now)
            key.charge({d: -v for d, v in delta.items() if v < 0}, now, sign=-1.0)
            # The server counted max_tokens of output when it admitted the
            # call; its headers may predate the refund we just applied.
            pending = {"output_tokens": reservation.amounts["output_tokens"] - actual["output_tokens"]}
            self._finish(reservation, headers, now, pending)

    def observe(self, reservation: Reservation, headers: Mapping[str, str]) -> None:
        """A stream's headers, read when it opens: its key has answered, and
        the buckets can be synced now rather than when the stream ends."""
        with self._cond:
            if reservation.done:
                return
            key = reservation.key
            key.sync(parse_rate_limit_headers(headers, self.wall_clock()), reservation, self.clock(),
                     in_flight=reservation.amounts)
            key.answered = True
            self._cond.notify_all()

    def refund(self, reservation: Reservation, headers: Optional[Mapping[str, str]] = None, *,
               keep_request: bool = False, answered: bool = True) -> None:
        """Give the charges back: the server never saw the call, or refused
        it without counting its tokens (``keep_request``: it did count it)."""
        with self._cond:
            if not _claim(reservation):
                return
            key, now = reservation.key, self.clock()
            amounts = dict(reservation.amounts)
            if keep_request:
                amounts.pop("requests")
            key.charge(amounts, now, sign=-1.0)
            if reservation.sent_at is None:
                for dimension, amount in reservation.amounts.items():
                    key.unsent[dimension] -= amount
            self._finish(reservation, headers, now, answered=answered)

    def release(self, reservation: Reservation, headers: Optional[Mapping[str, str]] = None) -> None:
        """The call ended without usage figures: keep the charges as made."""
        with self._cond:
            if _claim(reservation):
                self._finish(reservation, headers, self.clock())

    def _finish(self, reservation: Reservation, headers: Optional[Mapping[str, str]], now: float,
                pending_refund: Optional[Mapping[str, float]] = None, answered: bool = True) -> None:
        """Common end of a reservation. ``answered``: the server did answer
        (False for a call that never reached it: the key is still unknown)."""
        key = reservation.key
        for dimension, amount in reservation.amounts.items():
            key.outstanding[dimension] -= amount
        if reservation.sent_at is not None:
            key.in_flight -= 1
        if headers:
            key.sync(parse_rate_limit_headers(headers, self.wall_clock()), reservation, now, pending_refund)
            if reservation.sent_at is not None and answered:
                key.answered = True
        elif answered and reservation.sent_at is not None and key.probing:
            key.answered = True  # a server without rate-limit headers: nothing to learn
        self._cond.notify_all()

    def pause(self, key: KeyLimiter, seconds: float) -> None:
        """Hold the whole key for ``seconds`` (after a rate-limit 429)."""
        with self._cond:
            key.paused_until = max(key.paused_until, self.clock() + max(0.0, seconds))
            self._cond.notify_all()

    # --- status ---------------------------------------------------------
    def paused_for(self, key: KeyLimiter) -> float:
        """Seconds the key stays paused after a 429 (0 when serving)."""
        with self._cond:
            return round(max(0.0, key.paused_until - self.clock()), 3)

    def status(self, key: KeyLimiter) -> Optional[dict[str, Any]]:
        with self._cond:
            return key.status(self.clock(), self.wall_clock())
