"""The rate-limit state of one key: its buckets, and what it learns.

A :class:`KeyLimiter` holds a key's token buckets and bookkeeping
(reserved-but-unsent, in flight, pause, calibration of the input estimate)
and turns the server's rate-limit headers into corrections. It has no lock
of its own: it is owned by a :class:`~llm_sync.ratelimit.limiter.ProviderLimiter`
and only touched under that limiter's lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..config import RateLimitConfig
from .bucket import TokenBucket
from .headers import DIMENSIONS, HeaderLimit

if TYPE_CHECKING:
    from .limiter import ProviderLimiter

__all__ = ["Cost", "Reservation", "KeyLimiter", "PROBE_IN_FLIGHT", "TRANSIT_MARGIN", "CALIBRATION_WEIGHT"]

# Before a key without configured limits has answered once, this many of
# its calls may be in flight: enough to learn the limits quickly, too few
# to blast a strict server.
PROBE_IN_FLIGHT = 2
# The input-token estimate is calibrated against actual usage with this
# weight per observation (exponential moving average).
CALIBRATION_WEIGHT = 0.2
# ... and kept within this range: one odd answer (a prompt served from the
# cache, say) must not make every later estimate absurd.
CALIBRATION_RANGE = (0.25, 4.0)
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

    def calibrate(self, estimate: int, actual: int) -> None:
        """Move the estimate's scale toward what the provider counted."""
        if estimate > 0 and actual > 0:
            self.calibration += CALIBRATION_WEIGHT * (actual / estimate - self.calibration)
            self.calibration = min(CALIBRATION_RANGE[1], max(CALIBRATION_RANGE[0], self.calibration))

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
             pending_refund: Optional[Mapping[str, float]] = None,
             in_flight: Optional[Mapping[str, float]] = None) -> None:
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
            if first_answer and in_flight:  # this call is still out, yet already in ``remaining``
                others -= in_flight.get(dimension, 0.0)
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
