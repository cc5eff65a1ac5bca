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
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..config import RateLimitConfig
from ..errors import LLMRateLimitError, LLMValidationError
from .bucket import TokenBucket
from .headers import DIMENSIONS, HeaderLimit, parse_rate_limit_headers

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

# Before a key without configured limits has answered once, this many of
# its calls may be in flight: enough to learn the limits quickly, too few
# to blast a strict server.
PROBE_IN_FLIGHT = 2
# The input-token estimate is calibrated against actual usage with this
# weight per observation (exponential moving average).
CALIBRATION_WEIGHT = 0.2
# A call reaches the server a little after we admit it. While a bucket sits
# full, refill is wasted, and the server's bucket stays full that much
# longer than ours: from then on it runs ``rate * transit`` behind our view.
# So a call is admitted only when its bucket also covers this many seconds
# of refill. A one-off delay, not a lower rate. (Measured: without it, ~1 in
# 7 runs of the demo drew a 429 at a bucket's edge under CPU load.)
TRANSIT_MARGIN = 0.1
# A learned burst capacity must be this much below the current one to count
# (reset times are rounded; avoid chasing noise).
CAPACITY_TOLERANCE = 0.97
_CONFIG_FIELDS = {
    "requests": "requests_per_minute",
    "input_tokens": "input_tokens_per_minute",
    "output_tokens": "output_tokens_per_minute",
    "tokens": "tokens_per_minute",
}


@dataclass(frozen=True)
class Cost:
    """What a call needs: its input-token estimate and its ``max_tokens``."""

    input_tokens: int
    output_tokens: int


@dataclass(eq=False)
class Reservation:
    """Charges made for one call on one key."""

    key: "KeyLimiter"
    limiter: "ProviderLimiter"
    amounts: dict[str, float]
    estimate: int
    sent_at: Optional[float] = None
    done: bool = False


class KeyLimiter:
    """The buckets of one key. Only touched under the owner's lock."""

    def __init__(self, index: int, client_id: str, config: Optional[RateLimitConfig], *,
                 refunds_output: bool, now: float) -> None:
        self.index = index
        self.client_id = client_id
        self.refunds_output = refunds_output
        self.burst_seconds = config.burst_seconds if config else None
        self.configured: dict[str, float] = {}
        self.buckets: dict[str, TokenBucket] = {}
        for dimension, name in _CONFIG_FIELDS.items():
            value = getattr(config, name) if config else None
            if value:
                self.configured[dimension] = float(value)
                self.buckets[dimension] = TokenBucket(value, now, self.burst_seconds)
        self.unsent = dict.fromkeys(DIMENSIONS, 0.0)  # reserved, not yet sent
        self.outstanding = dict.fromkeys(DIMENSIONS, 0.0)  # reserved, not yet settled
        self.paused_until = 0.0
        self.in_flight = 0
        # Until the key's first answer, only PROBE_IN_FLIGHT calls go out:
        # even configured limits may be stricter at the server than stated.
        self.answered = False
        self.calibration = 1.0
        self.last_chosen = -1
        self.reset_at_wall: Optional[float] = None

    def __repr__(self) -> str:
        return f"<KeyLimiter {self.client_id} {sorted(self.buckets)}>"

    @property
    def probing(self) -> bool:
        return not self.answered

    @property
    def unsent_calls(self) -> int:
        return int(round(self.unsent["requests"]))

    def amounts(self, cost: Cost) -> dict[str, float]:
        estimate = max(1.0, math.ceil(cost.input_tokens * self.calibration))
        return {
            "requests": 1.0,
            "input_tokens": estimate,
            "output_tokens": float(cost.output_tokens),
            "tokens": estimate + cost.output_tokens,
        }

    def oversize(self, amounts: Mapping[str, float]) -> Optional[str]:
        """Name the limit ``amounts`` can never fit, or None."""
        for dimension, bucket in self.buckets.items():
            limit = bucket.limit  # in force: configured, or lower if the server says so
            capacity = limit if self.burst_seconds is None else limit / 60.0 * self.burst_seconds
            if amounts[dimension] > capacity:
                return f"{dimension.replace('_', ' ')} ({amounts[dimension]:.0f} > {capacity:.0f})"
        return None

    def wait_time(self, amounts: Mapping[str, float], now: float, margin: float = TRANSIT_MARGIN) -> float:
        """Seconds until ``amounts`` fit every bucket with ``margin``
        seconds of refill to spare (see TRANSIT_MARGIN), and no pause."""
        wait = max(0.0, self.paused_until - now)
        for dimension, bucket in self.buckets.items():
            needed = amounts[dimension] + bucket.rate * margin
            wait = max(wait, bucket.wait_time(needed, now))
        return wait

    def headroom(self, amounts: Mapping[str, float], now: float) -> float:
        """Smallest fraction of any bucket left after this call (1 = none)."""
        fractions = [
            (bucket.available(now) - amounts[d]) / bucket.capacity
            for d, bucket in self.buckets.items() if bucket.capacity > 0
        ]
        return min(fractions) if fractions else 1.0

    def charge(self, amounts: Mapping[str, float], now: float, *, sign: float = 1.0) -> None:
        for dimension, amount in amounts.items():
            bucket = self.buckets.get(dimension)
            if bucket is None:
                continue
            if sign > 0:
                bucket.take(amount, now)
            else:
                bucket.give(amount, now)

    def sync(self, reported: Mapping[str, HeaderLimit], reservation: Optional[Reservation], now: float,
             pending_refund: Optional[Mapping[str, float]] = None) -> None:
        """Pull buckets down to what the server says remains, learn limits
        the config does not give, and learn a smaller burst capacity.

        ``remaining`` describes the bucket when the server admitted *this*
        request, somewhere between its send and its answer. Concurrent
        requests reach the server in any order, so the local level is only
        pulled down to an upper bound of what the server can have left now:
        ``remaining`` plus the refill since the send, less what we reserved
        but have not sent, plus what the server will still refund of this
        call (Anthropic charges ``max_tokens`` of output until the reply
        ends). On the key's first answer the bound is exact instead: the
        other calls out are the few probes, so all of them are subtracted.
        Measured: assuming the server admitted it at the send instead
        pulls buckets 2-3k tokens too low in a 32-thread burst (9 % lost).
        A bucket above that bound is wrong (a stricter server, another
        process on the key); one below it is right and left alone.
        """
        first_answer = not self.answered
        for dimension, header in reported.items():
            if dimension == "tokens" and self.refunds_output and dimension not in self.configured:
                continue  # Anthropic's combined figure is a summary, not a bucket
            bucket = self.buckets.get(dimension)
            if header.limit:
                configured = self.configured.get(dimension)
                if bucket is None:
                    bucket = self.buckets[dimension] = TokenBucket(header.limit, now, self.burst_seconds)
                elif configured is None and header.limit != bucket.limit:
                    bucket.set_limit(header.limit, now, self.burst_seconds)
                elif configured is not None and header.limit < bucket.limit:
                    bucket.set_limit(header.limit, now, self.burst_seconds)  # never raised by a header
            if bucket is None or header.remaining is None:
                continue
            if header.reset_in is not None and header.limit:
                learned = header.remaining + bucket.rate * header.reset_in
                if learned < bucket.capacity * CAPACITY_TOLERANCE:
                    bucket.set_capacity(learned, now)
            sent_at = reservation.sent_at if reservation is not None else None
            since = now - sent_at if sent_at is not None else 0.0
            # On the key's first answer only the probes are out, so count
            # every unsettled call: a bucket learned now (or a configured
            # one the server turns out to be stricter than) starts exact.
            others = self.outstanding[dimension] if first_answer else self.unsent[dimension]
            bound = (
                min(bucket.capacity, header.remaining + bucket.rate * max(0.0, since))
                - others
                + (pending_refund or {}).get(dimension, 0.0)
            )
            bucket.lower_to(bound, now)
        if reported:
            self.answered = True

    def status(self, now: float, wall_now: float) -> Optional[dict[str, Any]]:
        if not self.buckets:
            return None
        remaining = {d: max(0, int(b.available(now))) for d, b in self.buckets.items()}
        token_figures = [remaining[d] for d in ("input_tokens", "output_tokens", "tokens") if d in remaining]
        full_in = max((b.full_at(now) for b in self.buckets.values()), default=0.0)
        return {
            "requests_remaining": remaining.get("requests"),
            "input_tokens_remaining": remaining.get("input_tokens"),
            "output_tokens_remaining": remaining.get("output_tokens"),
            "tokens_remaining": min(token_figures) if token_figures else None,
            "reset_at": wall_now + max(full_in, self.paused_until - now, 0.0),
            "limits": {_CONFIG_FIELDS[d]: b.limit for d, b in self.buckets.items()},
            "burst_capacity": {_CONFIG_FIELDS[d]: round(b.capacity, 1) for d, b in self.buckets.items()},
            "paused_for": round(max(0.0, self.paused_until - now), 3),
            "learned": sorted(_CONFIG_FIELDS[d] for d in self.buckets if d not in self.configured),
            "calibration": round(self.calibration, 4),
        }


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
        candidates = [only] if only is not None else self.keys
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
        """Callers in line for rate-limit capacity."""
        return len(self._line)

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
                if reservation.estimate > 0 and input_tokens > 0:
                    ratio = input_tokens / reservation.estimate
                    key.calibration += CALIBRATION_WEIGHT * (ratio - key.calibration)
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

    def refund(self, reservation: Reservation, headers: Optional[Mapping[str, str]] = None, *,
               keep_request: bool = False) -> None:
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
            self._finish(reservation, headers, now)

    def release(self, reservation: Reservation, headers: Optional[Mapping[str, str]] = None) -> None:
        """The call ended without usage figures: keep the charges as made."""
        with self._cond:
            if _claim(reservation):
                self._finish(reservation, headers, self.clock())

    def _finish(self, reservation: Reservation, headers: Optional[Mapping[str, str]], now: float,
                pending_refund: Optional[Mapping[str, float]] = None) -> None:
        key = reservation.key
        for dimension, amount in reservation.amounts.items():
            key.outstanding[dimension] -= amount
        if reservation.sent_at is not None:
            key.in_flight -= 1
        if headers:
            key.sync(parse_rate_limit_headers(headers, self.wall_clock()), reservation, now, pending_refund)
            if reservation.sent_at is not None:
                key.answered = True
        elif reservation.sent_at is not None and key.probing:
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
