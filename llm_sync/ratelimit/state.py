"""The bucket state of one rate-limit scope, and the maths that moves it.

A scope is what a provider limits as one: a key or a group of keys, times
a model class (see ``key``). Its state is
a token bucket per dimension (requests, input, output, combined tokens)
and a pause. :class:`ScopeState` is pure: no lock, no clock (``now`` is
passed in), no idea who owns it. A backend owns the states and makes each
method atomic; a Redis backend runs the same maths in a Lua script, so
this module is the reference for what every operation means.

Everything crossing the backend boundary is a plain value (amounts by
dimension, durations in seconds), never a local clock reading: processes
sharing a backend do not share a monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from .bucket import TokenBucket

__all__ = [
    "ScopeState", "Quote", "Observation", "BucketView", "ScopeSnapshot",
    "CONFIG_FIELDS", "CAPACITY_TOLERANCE", "NO_WAIT", "MAX_DEBT_MINUTES",
    "MIN_BURST_SECONDS", "MIN_BURST",
]

# Dimension → the RateLimitConfig field (and status key) that names it.
CONFIG_FIELDS = {
    "requests": "requests_per_minute",
    "input_tokens": "input_tokens_per_minute",
    "output_tokens": "output_tokens_per_minute",
    "tokens": "tokens_per_minute",
}
# A learned burst capacity must differ from the current one by this factor
# to count, down or up (reset times are rounded; avoid chasing noise).
CAPACITY_TOLERANCE = 0.97
# A burst capacity learned from a reset time is never below this many
# seconds of refill, nor below MIN_BURST (one request; a call of any size
# still fits, since a bucket lets a call larger than its capacity in once
# full). Anthropic's reset times come in whole seconds and wall clocks
# disagree by about as much, so a reading under 2 s is as likely noise as a
# server's burst; 2 s still learns a server that really bursts that little,
# and a bucket holding 2 s of refill keeps a burst of calls moving rather
# than spacing every call by the previous one's refill.
MIN_BURST_SECONDS = 2.0
MIN_BURST = 1.0
# Waits shorter than this are float noise in the refill maths: admit now
# rather than spin on a clock too coarse to move by that much.
NO_WAIT = 1e-6
# A correction (actual usage above the reservation) never puts a bucket more
# than this many minutes of refill into debt: a single answer, however
# large its reported usage, holds its key for a few minutes at most.
MAX_DEBT_MINUTES = 2.0


@dataclass(frozen=True)
class Quote:
    """When a scope could admit some amounts.

    ``wait``: seconds until they fit with the margin to spare and no pause
    (``inf``: never at the current rates). ``headroom``: smallest fraction
    of any bucket left after them (1 without buckets). ``oversize``: the
    limit they can never fit, or None. ``granted``: they were taken.
    """

    wait: float
    headroom: float
    oversize: Optional[str] = None
    granted: bool = False


@dataclass(frozen=True)
class Observation:
    """One dimension of a server's rate-limit headers, made ready to apply.

    ``limit``, ``remaining``, ``reset_in`` as the server said. ``since``:
    seconds from the call's send to now (the refill the server has had
    since it admitted the call, at most). ``offset``: what the caller's
    process has charged that the server had not yet counted, less what the
    server will still refund of this call; subtracted from the bound.
    """

    limit: Optional[float] = None
    remaining: Optional[float] = None
    reset_in: Optional[float] = None
    since: float = 0.0
    offset: float = 0.0


@dataclass(frozen=True)
class BucketView:
    """A bucket as a snapshot shows it; ``level`` may be negative (debt)."""

    limit: float
    capacity: float
    level: float
    full_in: float
    configured: bool

    @property
    def rate(self) -> float:
        return self.limit / 60.0


@dataclass(frozen=True)
class ScopeSnapshot:
    buckets: Mapping[str, BucketView]
    paused_for: float


class ScopeState:
    """Buckets and pause of one scope. Not thread-safe: owned by one
    backend, which serialises every call."""

    __slots__ = ("configured", "burst_seconds", "buckets", "paused_until")

    def __init__(self, limits: Mapping[str, float], burst_seconds: Optional[float], now: float) -> None:
        self.configured = {d: float(v) for d, v in limits.items() if v}
        self.burst_seconds = burst_seconds
        self.buckets = {d: TokenBucket(v, now, burst_seconds) for d, v in self.configured.items()}
        self.paused_until = 0.0

    def __repr__(self) -> str:
        return f"<ScopeState {sorted(self.buckets)}>"

    def quote(self, amounts: Mapping[str, float], now: float, margin: float) -> Quote:
        """When ``amounts`` fit every bucket with ``margin`` seconds of
        refill to spare (see limiter.TRANSIT_MARGIN)."""
        oversize = self._oversize(amounts)
        wait = max(0.0, self.paused_until - now)
        fractions = []
        for dimension, bucket in self.buckets.items():
            amount = amounts.get(dimension, 0.0)
            wait = max(wait, bucket.wait_time(amount + bucket.rate * margin, now))
            if bucket.capacity > 0:
                fractions.append((bucket.available(now) - amount) / bucket.capacity)
        return Quote(wait, min(fractions) if fractions else 1.0, oversize)

    def try_take(self, amounts: Mapping[str, float], now: float, margin: float) -> Quote:
        """Take ``amounts`` if they fit now; the quote says whether."""
        quote = self.quote(amounts, now, margin)
        if quote.oversize is not None or quote.wait > NO_WAIT:
            return quote
        for dimension, bucket in self.buckets.items():
            bucket.take(amounts.get(dimension, 0.0), now)
        return Quote(quote.wait, quote.headroom, None, granted=True)

    def adjust(self, delta: Mapping[str, float], now: float) -> None:
        """Charge positive amounts (into debt if need be, at most
        MAX_DEBT_MINUTES of refill); give negative ones back (never above
        capacity)."""
        for dimension, amount in delta.items():
            bucket = self.buckets.get(dimension)
            if bucket is None or amount == 0:
                continue
            if amount > 0:
                floor = min(bucket.available(now), -bucket.limit * MAX_DEBT_MINUTES)
                bucket.take(amount, now)
                bucket.level = max(bucket.level, floor)
            else:
                bucket.give(-amount, now)

    def pause(self, seconds: float, now: float) -> None:
        """Hold the scope ``seconds`` from now; never shortens a pause."""
        self.paused_until = max(self.paused_until, now + max(0.0, seconds))

    def sync(self, observations: Mapping[str, Observation], now: float) -> None:
        """Learn limits the config does not give (a configured one follows
        the server's, never above the configured value), track the burst
        capacity the reset time implies (see ``_learn_capacity``), and pull each bucket down to what the server can have left now:
        ``remaining`` plus the refill since the send, less the offset. A
        bucket above that bound is wrong (a stricter server, another user
        of the key); one below it is right and left alone.
        """
        for dimension, seen in observations.items():
            bucket = self.buckets.get(dimension)
            if seen.limit:
                configured = self.configured.get(dimension)
                if bucket is None:
                    bucket = self.buckets[dimension] = TokenBucket(seen.limit, now, self.burst_seconds)
                elif configured is None and seen.limit != bucket.limit:
                    bucket.set_limit(seen.limit, now, self.burst_seconds)
                elif configured is not None and min(seen.limit, configured) != bucket.limit:
                    # A lower report lowers it; a later one raises it back,
                    # so one odd header does not slow the key for good.
                    bucket.set_limit(min(seen.limit, configured), now, self.burst_seconds)
            if bucket is None or seen.remaining is None:
                continue
            if seen.limit:
                self._learn_capacity(bucket, seen, now)
            bound = min(bucket.capacity, seen.remaining + bucket.rate * max(0.0, seen.since)) - seen.offset
            bucket.lower_to(bound, now)

    def _learn_capacity(self, bucket: TokenBucket, seen: Observation, now: float) -> None:
        """Follow the server's burst capacity, down and back up.

        ``remaining + rate * reset_in`` is what the server holds when full.
        A reading with nothing left (``remaining`` 0: an exhausted or
        penalised bucket) or no time to refill (``reset_in`` about 0: a
        reset already past, from a stale header or a skewed clock) says
        nothing about that size: it can only raise the capacity to
        ``remaining``, which the server evidently holds. A learned capacity
        never goes below MIN_BURST_SECONDS of refill and MIN_BURST, nor
        above the bucket's full size (its limit, or ``burst_seconds`` of
        refill); a later, larger reading raises it again, so one odd header
        cannot shrink a key's burst for good.
        """
        if seen.remaining is None or seen.remaining <= 0:
            return
        full = bucket.limit if self.burst_seconds is None else bucket.rate * self.burst_seconds
        if seen.reset_in is None or seen.reset_in <= NO_WAIT:
            # No size, but a floor: the server holds at least what it has left.
            learned = min(full, seen.remaining)
            if learned * CAPACITY_TOLERANCE > bucket.capacity:
                bucket.set_capacity(learned, now)
            return
        floor = min(full, max(MIN_BURST, bucket.rate * MIN_BURST_SECONDS))
        learned = min(full, max(floor, seen.remaining + bucket.rate * seen.reset_in))
        if learned < bucket.capacity * CAPACITY_TOLERANCE or learned * CAPACITY_TOLERANCE > bucket.capacity:
            bucket.set_capacity(learned, now)

    def snapshot(self, now: float) -> ScopeSnapshot:
        views = {
            d: BucketView(b.limit, b.capacity, b.available(now), b.full_at(now), d in self.configured)
            for d, b in self.buckets.items()
        }
        return ScopeSnapshot(views, max(0.0, self.paused_until - now))

    def _oversize(self, amounts: Mapping[str, float]) -> Optional[str]:
        """Name the limit ``amounts`` can never fit, or None."""
        for dimension in CONFIG_FIELDS:  # a fixed order, as the Redis backend's
            bucket = self.buckets.get(dimension)
            if bucket is None:
                continue
            limit = bucket.limit  # in force: configured, or lower if the server says so
            capacity = limit if self.burst_seconds is None else limit / 60.0 * self.burst_seconds
            amount = amounts.get(dimension, 0.0)
            if amount > capacity:
                return f"{dimension.replace('_', ' ')} ({amount:.0f} > {capacity:.0f})"
        return None
