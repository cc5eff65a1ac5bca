"""MetricsMiddleware driven directly through ``handle`` with a fake clock:
counts, rates, latency statistics, the reservoir bound, errors, cancelled
streams, thread safety, and merge_metrics."""

from __future__ import annotations

import random
import sys
import threading
from typing import Any

import pytest

from llm_sync.errors import (
    LLMError,
    LLMProviderError,
    LLMQuotaExceededError,
    LLMRateLimitError,
    LLMStreamError,
    LLMTimeoutError,
    LLMValidationError,
)
from llm_sync.middleware.base import Middleware, MiddlewareChain
from llm_sync.middleware.metrics import (
    LATENCY_BUCKETS,
    MetricsMiddleware,
    merge_metrics,
    percentile,
)
from llm_sync.middleware.sketch import MAX_BUCKETS, RELATIVE_ERROR
from llm_sync.models import LLMResponse, Message, Usage
from llm_sync.providers.base import LLMRequest

REQUEST = LLMRequest(messages=[Message("user", "hi")], model="m")
KEY = "anthropic-0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mw(clock: FakeClock) -> MetricsMiddleware:
    return MetricsMiddleware(clock=clock)


def succeed(mw: MetricsMiddleware, clock: FakeClock, ms: float, *, client_id: str = KEY,
            tokens: tuple[int, int] = (0, 0)) -> LLMResponse:
    """One successful call taking ``ms`` milliseconds on the fake clock."""
    clock.now = 0.0  # every call starts at 0: the latency is exactly ms / 1000 s

    def call_next(request: LLMRequest) -> LLMResponse:
        clock.now += ms / 1000.0
        return LLMResponse(content="ok", model="m", client_id=client_id,
                           usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]))

    result = mw.handle(REQUEST, {"client_id": client_id}, call_next)
    assert isinstance(result, LLMResponse)
    return result


def fail(mw: MetricsMiddleware, error: BaseException, *, client_id: str = KEY) -> BaseException:
    """One call whose provider raises ``error``; returns what propagated."""
    def call_next(request: LLMRequest) -> LLMResponse:
        raise error

    with pytest.raises(type(error)) as info:
        mw.handle(REQUEST, {"client_id": client_id}, call_next)
    return info.value


# --- counts and rates -----------------------------------------------------------
def test_fresh_middleware_reports_zeros_and_a_full_success_rate(mw: MetricsMiddleware):
    m = mw.get_metrics()
    assert m["total_requests"] == m["successful_requests"] == m["failed_requests"] == 0
    assert m["cancelled_requests"] == 0
    assert m["success_rate"] == 1.0  # documented: nothing has failed yet
    for name in ("avg_latency", "p50_latency", "p95_latency", "p99_latency", "latency_sum_seconds"):
        assert m[name] == 0.0
    assert m["input_tokens"] == m["output_tokens"] == m["rate_limited"] == m["latency_count"] == 0
    assert m["errors"] == {} and m["per_key"] == {}
    assert list(m["latency_histogram"]) == list(LATENCY_BUCKETS)
    assert set(m["latency_histogram"].values()) == {0}


def test_success_counts_latency_tokens_and_key(mw: MetricsMiddleware, clock: FakeClock):
    response = succeed(mw, clock, 250, tokens=(12, 30))
    succeed(mw, clock, 750, tokens=(8, 10))
    assert response.content == "ok"  # passed through untouched
    m = mw.get_metrics()
    assert m["total_requests"] == 2 and m["successful_requests"] == 2 and m["failed_requests"] == 0
    assert m["success_rate"] == 1.0
    assert m["avg_latency"] == pytest.approx(500.0)
    assert m["input_tokens"] == 20 and m["output_tokens"] == 40
    assert m["per_key"] == {KEY: {"total_requests": 2, "successful_requests": 2,
                                  "failed_requests": 0, "cancelled_requests": 0}}
    assert m["latency_count"] == 2 and m["latency_sum_seconds"] == pytest.approx(1.0)


def test_success_rate_counts_failures_but_not_cancellations(mw: MetricsMiddleware, clock: FakeClock):
    for _ in range(3):
        succeed(mw, clock, 10)
    fail(mw, LLMTimeoutError("slow"))
    mw.process_error(LLMStreamError("closed", cancelled=True), {"client_id": KEY})
    m = mw.get_metrics()
    assert m["total_requests"] == 5
    assert (m["successful_requests"], m["failed_requests"], m["cancelled_requests"]) == (3, 1, 1)
    assert m["success_rate"] == pytest.approx(0.75)


def test_seed_readme_example_formats(mw: MetricsMiddleware, clock: FakeClock):
    succeed(mw, clock, 120)
    fail(mw, LLMProviderError("boom", status_code=500))
    chain = MiddlewareChain([mw])
    metrics = chain.get_middleware(MetricsMiddleware).get_metrics()
    lines = [
        f"  Total requests: {metrics['total_requests']}",
        f"  Avg latency: {metrics['avg_latency']:.2f}ms",
        f"  Success rate: {metrics['success_rate']:.1%}",
    ]
    assert lines == ["  Total requests: 2", "  Avg latency: 120.00ms", "  Success rate: 50.0%"]


# --- latency statistics -------------------------------------------------------------
def test_percentiles_use_nearest_rank_on_1_to_100_ms(mw: MetricsMiddleware, clock: FakeClock):
    latencies = list(range(1, 101))
    random.Random(7).shuffle(latencies)
    for ms in latencies:
        succeed(mw, clock, ms)
    m = mw.get_metrics()
    # Nearest rank, within the sketch's stated error (1 %); linear
    # interpolation would give 50.5 / 95.05 / 99.01.
    assert m["p50_latency"] == pytest.approx(50.0, rel=RELATIVE_ERROR)
    assert m["p95_latency"] == pytest.approx(95.0, rel=RELATIVE_ERROR)
    assert m["p99_latency"] == pytest.approx(99.0, rel=RELATIVE_ERROR)
    assert m["avg_latency"] == pytest.approx(50.5)


def test_percentile_helper_small_samples_and_float_noise():
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 99) == 7.0
    assert [percentile([10.0, 20.0, 30.0, 40.0], p) for p in (25, 50, 51, 95, 99, 100)] == [
        10.0, 20.0, 30.0, 40.0, 40.0, 40.0]
    twenty = [float(i) for i in range(1, 21)]
    assert percentile(twenty, 95) == 19.0  # 0.95 * 20 is 19.000000000000004 in floats


def test_latency_runs_from_the_call_start_in_context(mw: MetricsMiddleware, clock: FakeClock):
    clock.now = 10.0
    context: dict[str, Any] = {"client_id": KEY, "started": 9.5}  # stamped by the client
    mw.process_request(REQUEST, context)
    assert context["started"] == 9.5  # not overwritten
    clock.now = 10.25
    mw.process_response(LLMResponse(content="ok"), context)
    assert mw.get_metrics()["avg_latency"] == pytest.approx(750.0)


def test_percentiles_keep_the_most_recent_windows_in_bounded_memory(clock: FakeClock):
    mw = MetricsMiddleware(reservoir_size=10, clock=clock)
    for ms in range(1, 1001):
        succeed(mw, clock, ms)
    m = mw.get_metrics()
    # Percentiles see the last two windows of 10 calls: 981..1000; the mean
    # and counts see every call.
    assert m["p50_latency"] == pytest.approx(990.0, rel=RELATIVE_ERROR)
    assert m["p99_latency"] == 1000.0  # the largest is kept exactly
    assert m["avg_latency"] == pytest.approx(500.5)
    assert m["successful_requests"] == m["latency_count"] == 1000
    assert mw._previous is not None and mw._window.count + mw._previous.count <= 20


def test_what_the_percentiles_store_does_not_grow_with_the_calls(clock: FakeClock):
    mw = MetricsMiddleware(clock=clock)  # the default window: 2,048 calls
    stored = []
    for round_ in range(4):
        for i in range(5000):
            succeed(mw, clock, 1 + (i * 7919 % 60_000) / 10.0)  # 1 ms .. 6 s, spread
        stored.append(len(mw._window) + len(mw._previous or ()))
    assert max(stored) <= 2 * MAX_BUCKETS
    assert stored[-1] <= stored[0] * 1.1  # 20,000 calls store no more than 5,000 did


def test_reservoir_size_must_be_positive():
    with pytest.raises(LLMValidationError):
        MetricsMiddleware(reservoir_size=0)


def test_histogram_buckets_are_inclusive_upper_bounds(mw: MetricsMiddleware, clock: FakeClock):
    for ms in (50, 51, 100, 999, 1000, 1001, 59_000, 61_000, 3_600_000):
        succeed(mw, clock, ms)
    m = mw.get_metrics()
    hist = m["latency_histogram"]
    assert hist[0.05] == 1  # 50 ms: le=0.05 is inclusive
    assert hist[0.1] == 2  # 51, 100
    assert hist[1.0] == 2  # 999, 1000
    assert hist[2.5] == 1  # 1001
    assert hist[60.0] == 1  # 59 s
    assert hist[float("inf")] == 2  # 61 s, 1 h
    assert sum(hist.values()) == m["latency_count"] == 9
    assert m["latency_sum_seconds"] == pytest.approx((50 + 51 + 100 + 999 + 1000 + 1001
                                                      + 59_000 + 61_000 + 3_600_000) / 1000)


# --- errors ---------------------------------------------------------------------------
def test_errors_by_type_and_429s_are_counted_and_reraised(mw: MetricsMiddleware):
    limited = LLMRateLimitError("slow down", status_code=429, retry_after=1.0)
    assert fail(mw, limited) is limited  # the very same error propagates
    fail(mw, LLMRateLimitError("slow down", status_code=429))
    fail(mw, LLMQuotaExceededError("pay up", status_code=429))
    fail(mw, LLMProviderError("overloaded", status_code=529))
    fail(mw, LLMTimeoutError("read timeout"))
    m = mw.get_metrics()
    assert m["failed_requests"] == 5 and m["successful_requests"] == 0
    assert m["errors"] == {"LLMRateLimitError": 2, "LLMQuotaExceededError": 1,
                           "LLMProviderError": 1, "LLMTimeoutError": 1}
    assert m["rate_limited"] == 3  # every status 429, quota included
    assert m["success_rate"] == 0.0
    assert m["latency_count"] == 0 and m["avg_latency"] == 0.0


def test_process_error_never_recovers(mw: MetricsMiddleware):
    assert mw.process_error(LLMTimeoutError("x"), {"client_id": KEY}) is None
    assert mw.process_error(LLMStreamError("x", cancelled=True), {"client_id": KEY}) is None


def test_non_llm_exception_counts_as_a_failure(mw: MetricsMiddleware):
    fail(mw, RuntimeError("bug below"))
    m = mw.get_metrics()
    assert m["failed_requests"] == 1 and m["errors"] == {"RuntimeError": 1}


def test_cancelled_stream_is_not_a_failure(mw: MetricsMiddleware, clock: FakeClock):
    context: dict[str, Any] = {"client_id": KEY, "stream": True}
    mw.process_request(REQUEST, context)
    clock.now += 3.0
    mw.process_error(LLMStreamError("closed early", partial_text="par", cancelled=True), context)
    m = mw.get_metrics()
    assert m["cancelled_requests"] == 1 and m["total_requests"] == 1
    assert m["failed_requests"] == 0 and m["errors"] == {}
    assert m["success_rate"] == 1.0 and m["latency_count"] == 0
    assert m["per_key"][KEY]["cancelled_requests"] == 1


def test_broken_stream_is_a_failure(mw: MetricsMiddleware):
    context: dict[str, Any] = {"client_id": KEY, "stream": True}
    mw.process_request(REQUEST, context)
    mw.process_error(LLMStreamError("connection reset", partial_text="par"), context)
    m = mw.get_metrics()
    assert m["failed_requests"] == 1 and m["cancelled_requests"] == 0
    assert m["errors"] == {"LLMStreamError": 1}


# --- placement, reset, detachment ---------------------------------------------------
class RetryOnce(Middleware):
    def handle(self, request, context, call_next):  # type: ignore[no-untyped-def]
        try:
            return call_next(request)
        except LLMError:
            return call_next(request)


def test_a_retried_call_counts_once_outside_the_retry(mw: MetricsMiddleware):
    attempts = []

    def terminal(request: LLMRequest) -> LLMResponse:
        attempts.append(1)
        if len(attempts) == 1:
            raise LLMProviderError("overloaded", status_code=529)
        return LLMResponse(content="ok", usage=Usage(input_tokens=1, output_tokens=2))

    chain = MiddlewareChain([mw, RetryOnce()])
    chain.run(REQUEST, {"client_id": KEY}, terminal)
    m = mw.get_metrics()
    assert len(attempts) == 2
    assert (m["total_requests"], m["successful_requests"], m["failed_requests"]) == (1, 1, 0)
    assert m["errors"] == {} and m["output_tokens"] == 2


def test_reset_forgets_everything(mw: MetricsMiddleware, clock: FakeClock):
    succeed(mw, clock, 40, tokens=(1, 1))
    fail(mw, LLMRateLimitError("x", status_code=429))
    mw.reset()
    m = mw.get_metrics()
    assert m["total_requests"] == 0 and m["rate_limited"] == 0 and m["errors"] == {}
    assert m["p50_latency"] == 0.0 and m["per_key"] == {} and m["input_tokens"] == 0
    succeed(mw, clock, 40)
    assert mw.get_metrics()["p50_latency"] == pytest.approx(40.0)


def test_get_metrics_is_a_detached_copy(mw: MetricsMiddleware):
    fail(mw, LLMTimeoutError("x"))
    m = mw.get_metrics()
    m["errors"]["LLMTimeoutError"] = 99
    m["per_key"][KEY]["failed_requests"] = 99
    again = mw.get_metrics()
    assert again["errors"] == {"LLMTimeoutError": 1}
    assert again["per_key"][KEY]["failed_requests"] == 1


def test_missing_client_id_falls_back_to_the_response_then_unknown(mw: MetricsMiddleware):
    mw.process_response(LLMResponse(content="ok", client_id="openai-3"), {})
    mw.process_error(LLMTimeoutError("x"), {})
    assert set(mw.get_metrics()["per_key"]) == {"openai-3", "unknown"}


def test_repr(mw: MetricsMiddleware, clock: FakeClock):
    succeed(mw, clock, 1)
    fail(mw, LLMTimeoutError("x"))
    assert repr(mw) == "<MetricsMiddleware 1 ok, 1 failed, 0 cancelled>"


# --- threads --------------------------------------------------------------------------
def test_totals_are_exact_under_many_threads():
    mw = MetricsMiddleware(reservoir_size=64, clock=lambda: 0.0)
    threads_n, calls = 8, 1500
    barrier = threading.Barrier(threads_n)
    problems: list[BaseException] = []

    def ok(request: LLMRequest) -> LLMResponse:
        return LLMResponse(content="ok", usage=Usage(input_tokens=2, output_tokens=3))

    def limited(request: LLMRequest) -> LLMResponse:
        raise LLMRateLimitError("x", status_code=429)

    def worker(index: int) -> None:
        client_id = f"k-{index % 2}"
        try:
            barrier.wait()
            for i in range(calls):
                try:
                    mw.handle(REQUEST, {"client_id": client_id}, limited if i % 3 == 0 else ok)
                except LLMRateLimitError:
                    pass
                if i % 500 == 0:
                    mw.get_metrics()  # readers interleave with writers
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert problems == []
    failures_per_thread = len(range(0, calls, 3))
    ok_per_thread = calls - failures_per_thread
    m = mw.get_metrics()
    assert m["total_requests"] == threads_n * calls
    assert m["failed_requests"] == m["rate_limited"] == threads_n * failures_per_thread
    assert m["errors"] == {"LLMRateLimitError": threads_n * failures_per_thread}
    assert m["successful_requests"] == m["latency_count"] == threads_n * ok_per_thread
    assert m["input_tokens"] == 2 * threads_n * ok_per_thread
    assert m["output_tokens"] == 3 * threads_n * ok_per_thread
    for client_id in ("k-0", "k-1"):
        assert m["per_key"][client_id]["total_requests"] == threads_n // 2 * calls
    assert mw._window.count <= 64 and (mw._previous is None or mw._previous.count == 64)


# --- merge_metrics ----------------------------------------------------------------------
def test_merge_sums_counts_and_weights_the_mean_by_calls(clock: FakeClock):
    a, b = MetricsMiddleware(clock=clock), MetricsMiddleware(clock=clock)
    for ms in (10, 20, 30):
        succeed(a, clock, ms, client_id="anthropic-0", tokens=(1, 2))
    succeed(b, clock, 1000, client_id="anthropic-1", tokens=(5, 5))
    fail(b, LLMRateLimitError("x", status_code=429), client_id="anthropic-1")
    fail(a, LLMTimeoutError("x"), client_id="anthropic-0")
    b.process_error(LLMStreamError("closed", cancelled=True), {"client_id": "anthropic-1"})

    m = merge_metrics([a, b])
    assert (m["total_requests"], m["successful_requests"], m["failed_requests"], m["cancelled_requests"]) == (
        7, 4, 2, 1)
    assert m["success_rate"] == pytest.approx(4 / 6)
    assert m["avg_latency"] == pytest.approx(1060 / 4)  # not the mean of the means (520)
    assert m["input_tokens"] == 8 and m["output_tokens"] == 11
    assert m["rate_limited"] == 1
    assert m["errors"] == {"LLMRateLimitError": 1, "LLMTimeoutError": 1}
    assert m["per_key"] == {
        "anthropic-0": {"total_requests": 4, "successful_requests": 3, "failed_requests": 1,
                        "cancelled_requests": 0},
        "anthropic-1": {"total_requests": 3, "successful_requests": 1, "failed_requests": 1,
                        "cancelled_requests": 1},
    }
    # Union of the windows [10, 20, 30, 1000]: nearest rank (± 1 %).
    assert m["p50_latency"] == pytest.approx(20.0, rel=RELATIVE_ERROR)
    assert m["p95_latency"] == pytest.approx(1000.0)  # the largest: exact
    assert m["latency_histogram"][0.05] == 3 and m["latency_histogram"][1.0] == 1
    assert m["latency_count"] == 4 and m["latency_sum_seconds"] == pytest.approx(1.06)
    assert set(m) == set(a.get_metrics())  # the same shape as one key's


def test_merge_counts_a_shared_instance_once_and_sums_a_shared_key(clock: FakeClock):
    a, b = MetricsMiddleware(clock=clock), MetricsMiddleware(clock=clock)
    succeed(a, clock, 5, client_id="k")
    succeed(b, clock, 5, client_id="k")
    m = merge_metrics([a, a, b])
    assert m["total_requests"] == 2
    assert m["per_key"]["k"]["successful_requests"] == 2


def test_merge_of_nothing_is_the_empty_shape():
    m = merge_metrics([])
    assert m["total_requests"] == 0 and m["success_rate"] == 1.0 and m["p99_latency"] == 0.0
    assert set(m) == set(MetricsMiddleware().get_metrics())


def test_merge_accepts_a_generator(clock: FakeClock):
    mws = [MetricsMiddleware(clock=clock) for _ in range(3)]
    for n, one in enumerate(mws):
        succeed(one, clock, 10 * (n + 1), client_id=f"k{n}")
    m = merge_metrics(x for x in mws)
    assert m["successful_requests"] == 3 and m["p99_latency"] == pytest.approx(30.0)

