"""A bounded-memory latency sketch: percentiles within 1 % of the exact ones.

Keeping every latency to rank them costs memory that grows with the calls
(2,048 floats a key was ~64 KiB, ~20 MiB over 256 busy keys). A sketch
counts latencies in logarithmic buckets instead (DDSketch's scheme):
bucket ``i`` holds the values in ``(γ^(i-1), γ^i]`` µs, with
γ = (1 + α) / (1 - α), and answers for it ``2γ^i / (γ + 1)`` — within
α = :data:`RELATIVE_ERROR` (1 %) of any value in the bucket. So a
percentile read from the sketch is within 1 % of the exact nearest-rank
percentile of the same values (or within 1 µs, for latencies under 1 µs). The smallest and largest values are kept
exactly: the first and last ranks answer them, and every other answer is
clamped to them (so one sample, the minimum and the maximum are exact).

Memory: one dict entry per bucket in use, never more than
:data:`MAX_BUCKETS` (latencies from 1 µs to ~28 hours; values outside are
counted in the end buckets, still clamped to the exact extremes), whatever
the number of calls.

Threading contract: none of its own — a sketch is guarded by its owner's
lock (MetricsMiddleware's); :meth:`copy` and :meth:`merged` make detached
ones for reading outside it.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

__all__ = ["LatencySketch", "RELATIVE_ERROR", "MAX_BUCKETS"]

RELATIVE_ERROR = 0.01
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
_SMALLEST_MS = 0.001  # 1 µs: bucket 0 holds everything at or below it
MAX_BUCKETS = math.ceil(math.log(1e8 / _SMALLEST_MS) / _LOG_GAMMA) + 1  # up to 1e8 ms (~28 h)


def _bucket(value_ms: float) -> int:
    if value_ms <= _SMALLEST_MS:
        return 0
    return min(MAX_BUCKETS - 1, math.ceil(math.log(value_ms / _SMALLEST_MS) / _LOG_GAMMA))


def _representative(index: int) -> float:
    return 2.0 * _SMALLEST_MS * _GAMMA ** index / (_GAMMA + 1.0)


class LatencySketch:
    """Counts of latencies (ms, ≥ 0) in log buckets; see the module docstring."""

    __slots__ = ("counts", "count", "low", "high")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.low = math.inf
        self.high = -math.inf

    def add(self, value_ms: float) -> None:
        index = _bucket(value_ms)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        if value_ms < self.low:
            self.low = value_ms
        if value_ms > self.high:
            self.high = value_ms

    def update(self, other: "LatencySketch") -> None:
        """Add ``other``'s counts to this one's."""
        counts = self.counts
        for index, count in other.counts.items():
            counts[index] = counts.get(index, 0) + count
        self.count += other.count
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def copy(self) -> "LatencySketch":
        twin = LatencySketch()
        twin.update(self)
        return twin

    @classmethod
    def merged(cls, sketches: Iterable[Optional["LatencySketch"]]) -> "LatencySketch":
        total = cls()
        for sketch in sketches:
            if sketch is not None:
                total.update(sketch)
        return total

    def percentiles(self, *pcts: float) -> list[float]:
        """Nearest-rank percentiles (the value of rank ``ceil(p/100 · n)``),
        each within :data:`RELATIVE_ERROR` of the exact one; 0.0 when empty."""
        n = self.count
        if n == 0:
            return [0.0 for _ in pcts]
        # round() absorbs float noise such as 0.95 * 20 = 19.000000000000004.
        ranks = [min(n, max(1, math.ceil(round(pct * n / 100.0, 9)))) for pct in pcts]
        order = sorted(range(len(ranks)), key=ranks.__getitem__)
        answers = [0.0] * len(ranks)
        for position, rank in enumerate(ranks):  # the first and last ranks: exact
            if rank == n:
                answers[position] = self.high
            elif rank == 1:
                answers[position] = self.low
        order = [position for position in order if 1 < ranks[position] < n]
        seen = 0
        position = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            while position < len(order) and ranks[order[position]] <= seen:
                answers[order[position]] = min(self.high, max(self.low, _representative(index)))
                position += 1
            if position == len(order):
                break
        return answers

    def __len__(self) -> int:
        """Buckets in use: what the sketch stores (not the calls it counted)."""
        return len(self.counts)
