"""LatencySketch: percentiles within the stated error of the exact
nearest-rank ones, in memory that does not grow with the samples."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_sync.middleware.metrics import percentile
from llm_sync.middleware.sketch import MAX_BUCKETS, RELATIVE_ERROR, LatencySketch

PCTS = (1, 25, 50, 90, 95, 99, 99.9, 100)
LATENCIES = st.one_of(st.floats(0.0, 1e7), st.floats(0.0, 5.0), st.integers(0, 10_000).map(float))


def close_enough(estimate: float, exact: float) -> bool:
    return abs(estimate - exact) <= RELATIVE_ERROR * exact + 1e-3  # 1 %, or 1 µs below 1 µs


def sketch_of(values: list[float]) -> LatencySketch:
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    return sketch


@settings(max_examples=300, deadline=None)
@given(values=st.lists(LATENCIES, min_size=1, max_size=300))
def test_percentiles_are_within_the_stated_error_of_the_exact_nearest_rank(values: list[float]):
    exact = sorted(values)
    estimates = sketch_of(values).percentiles(*PCTS)
    for pct, estimate in zip(PCTS, estimates):
        assert close_enough(estimate, percentile(exact, pct)), (pct, estimate, percentile(exact, pct))


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.lists(LATENCIES, max_size=50), min_size=1, max_size=5))
def test_a_merge_answers_as_one_sketch_of_every_value(parts: list[list[float]]):
    merged = LatencySketch.merged(sketch_of(part) for part in parts)
    whole = sketch_of([value for part in parts for value in part])
    assert merged.percentiles(*PCTS) == whole.percentiles(*PCTS)
    assert merged.count == whole.count and merged.counts == whole.counts


def test_the_extremes_and_a_single_sample_are_exact():
    assert sketch_of([123.456]).percentiles(0, 50, 100) == [123.456] * 3
    values = [random.Random(3).uniform(1, 5000) for _ in range(1000)]
    low, high = sketch_of(values).percentiles(0.01, 100)
    assert (low, high) == (min(values), max(values))


def test_an_empty_sketch_answers_zero():
    assert LatencySketch().percentiles(50, 99) == [0.0, 0.0]


def test_stored_buckets_do_not_grow_with_the_samples():
    rng = random.Random(11)
    sketch = LatencySketch()
    sizes = []
    for _ in range(5):
        for _ in range(20_000):
            sketch.add(rng.lognormvariate(6.0, 1.0))  # ~400 ms, a long right tail
        sizes.append(len(sketch))
    assert sizes[-1] <= MAX_BUCKETS and sizes[-1] < sizes[0] * 1.2
    sketch.add(1e12)  # beyond the range: the last bucket, the exact maximum
    sketch.add(-0.0)
    assert len(sketch) <= MAX_BUCKETS and sketch.percentiles(100) == [1e12]


@pytest.mark.parametrize("value", [0.0, 1e-9, 0.001, 0.0011, 1.0, 999.99, 1e8, 1e9])
def test_every_value_lands_within_the_error_of_its_bucket(value: float):
    sketch = sketch_of([0.0, value, 2e9])  # the middle rank is neither extreme
    assert close_enough(sketch.percentiles(50)[0], value) or value >= 1e8
