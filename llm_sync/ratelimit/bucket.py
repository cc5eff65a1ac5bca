"""A continuously refilled token bucket: the arithmetic, nothing else.

The level may go negative when a call turns out to cost more than was
reserved (its actual usage is charged after the fact); later calls then
wait until refill pays that debt off.

Not thread-safe by itself: each bucket belongs to one ``ScopeState``, whose
backend serialises every operation on it. Time is passed in (``now``), so
the maths is tested with plain numbers.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    __slots__ = ("limit", "rate", "capacity", "level", "updated")

    def __init__(self, per_minute: float, now: float, burst_seconds: float | None = None) -> None:
        self.limit = float(per_minute)
        self.rate = self.limit / 60.0
        self.capacity = self.limit if burst_seconds is None else self.rate * burst_seconds
        self.level = self.capacity
        self.updated = now

    def __repr__(self) -> str:
        return f"<TokenBucket {self.level:.1f}/{self.capacity:.1f} +{self.rate:.3f}/s>"

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + self.rate * (now - self.updated))
            self.updated = now

    def available(self, now: float) -> float:
        self.refill(now)
        return self.level

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits; ``inf`` if it never can."""
        self.refill(now)
        needed = min(amount, self.capacity)
        if self.level >= needed:
            return 0.0
        if self.rate <= 0:
            return math.inf
        return (needed - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Charge ``amount`` (into debt, for a correction)."""
        self.refill(now)
        self.level -= amount

    def give(self, amount: float, now: float) -> None:
        """Refund ``amount`` (never above capacity)."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def lower_to(self, level: float, now: float) -> None:
        """Pull the level down (never up) to ``level``."""
        self.refill(now)
        self.level = min(self.level, level)

    def set_limit(self, per_minute: float, now: float, burst_seconds: float | None = None) -> None:
        """Change the rate and capacity, keeping the debt or the free share."""
        self.refill(now)
        old_capacity = self.capacity
        self.limit = float(per_minute)
        self.rate = self.limit / 60.0
        self.capacity = self.limit if burst_seconds is None else self.rate * burst_seconds
        if old_capacity > 0 and self.level > 0:
            self.level = self.level * self.capacity / old_capacity
        self.level = min(self.level, self.capacity)

    def set_capacity(self, capacity: float, now: float) -> None:
        """Shrink (or restore) the burst the bucket allows."""
        self.refill(now)
        self.capacity = max(0.0, capacity)
        self.level = min(self.level, self.capacity)

    def full_at(self, now: float) -> float:
        """Seconds from ``now`` until the bucket is full."""
        self.refill(now)
        if self.level >= self.capacity:
            return 0.0
        return math.inf if self.rate <= 0 else (self.capacity - self.level) / self.rate
