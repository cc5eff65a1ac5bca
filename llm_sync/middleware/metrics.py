"""MetricsMiddleware: per-call counts, latency and tokens for one key.

What one call adds, once, when it ends (for a stream: when the stream ends):

- success: ``successful_requests``, its latency, its tokens;
- failure: ``failed_requests``, ``errors[type(error).__name__]``, and
  ``rate_limited`` when the error carries ``status_code == 429`` (a quota
  429 counts too: the server said 429 either way);
- a stream closed early by the caller: ``cancelled_requests`` only — not a
  failure, and no tokens (the provider never reported usage).

``total_requests`` is the sum of the three, so a call is counted when it
finishes, not while it is in flight.

Latency runs from ``context["started"]`` (stamped with ``time.monotonic()``
by the key-bound client when the call enters the chain, so logs and metrics
agree; set here with ``clock()`` when absent) to the moment the full
response is in. Only successful calls have a latency. ``avg_latency`` is
the exact mean over every successful call since the last :meth:`reset`;
the percentiles use the **nearest-rank** method (pᵏ is the latency of rank
``ceil(k/100·n)`` in ascending order) over the most recent successful
calls — the last ``reservoir_size`` to ``2 × reservoir_size`` of them
(two windows of ``reservoir_size`` calls, the older dropped as a new one
fills) — read from a :class:`~.sketch.LatencySketch`, so each is within
1 % of the exact nearest-rank value (:data:`~.sketch.RELATIVE_ERROR`); the
smallest and largest latencies are kept exactly. For latencies 1..100 ms,
p50 ≈ 50, p95 ≈ 95, p99 ≈ 99 (each ± 1 %). The histogram counts every successful call in the fixed
:data:`LATENCY_BUCKETS` (seconds, upper bounds inclusive as in Prometheus).

Per model: ``per_model`` (the model the request named, from the call's
context; else the response's) holds each model's counts, tokens, latency
sum and histogram, 429s and errors. At most :data:`MAX_MODELS` names are
kept apart; calls for further names are counted under ``"other"``.

Placement: outside RetryMiddleware, so a retried call counts once.

Threading contract: one instance serves every thread calling through its
key (or, if one instance is added to several chains, every key). All state
is guarded by one lock, held only for O(1) bookkeeping when a call ends and
for a copy in :meth:`get_metrics`; percentiles are read outside it.
Memory is bounded whatever the number of calls: two latency sketches of at
most :data:`~.sketch.MAX_BUCKETS` counters each (a few dozen in practice),
and counters keyed by client id, model (at most :data:`MAX_MODELS`) and
error class.
An injected ``clock`` must be on ``time.monotonic``'s timeline when the
middleware runs inside a client (the client stamps ``started``); other
clocks are for tests that drive the middleware directly.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from ..call import Requeue
from ..errors import LLMError, LLMValidationError
from ..models import LLMResponse
from ..providers.base import LLMRequest
from .base import CallNext, Context, Middleware, Result
from .sketch import LatencySketch

__all__ = [
    "MetricsMiddleware",
    "merge_metrics",
    "percentile",
    "LATENCY_BUCKETS",
    "DEFAULT_RESERVOIR_SIZE",
]

# Upper bounds in seconds (Prometheus ``le``); the last catches everything.
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
DEFAULT_RESERVOIR_SIZE = 2048
UNKNOWN_CLIENT = "unknown"
UNKNOWN_MODEL = "unknown"
MAX_MODELS = 256
OTHER_MODELS = "other"


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list; 0.0 when empty."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    # round() absorbs float noise such as 0.95 * 20 = 19.000000000000004.
    rank = math.ceil(round(pct * n / 100.0, 9))
    return sorted_values[min(n, max(1, rank)) - 1]


@dataclass
class _KeyCounts:
    successful: int = 0
    failed: int = 0
    cancelled: int = 0

    def add(self, other: "_KeyCounts") -> None:
        self.successful += other.successful
        self.failed += other.failed
        self.cancelled += other.cancelled

    def as_dict(self) -> dict[str, int]:
        return {
            "total_requests": self.successful + self.failed + self.cancelled,
            "successful_requests": self.successful,
            "failed_requests": self.failed,
            "cancelled_requests": self.cancelled,
        }


@dataclass
class _Counts:
    """The figures of some calls: all of one instance's, or one model's (a
    latency histogram, no reservoir)."""

    successful: int = 0
    failed: int = 0
    cancelled: int = 0
    rate_limited: int = 0
    latency_sum_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))

    def copy(self) -> "_Counts":
        return _Counts(self.successful, self.failed, self.cancelled, self.rate_limited, self.latency_sum_ms,
                            self.input_tokens, self.output_tokens, dict(self.errors), list(self.buckets))

    def succeeded(self, latency_ms: float, input_tokens: int, output_tokens: int, bucket: int) -> None:
        self.successful += 1
        self.latency_sum_ms += latency_ms
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.buckets[bucket] += 1

    def failed_with(self, name: str, limited: bool) -> None:
        """A failure of class ``name`` (``limited``: a 429)."""
        self.failed += 1
        self.errors[name] = self.errors.get(name, 0) + 1
        if limited:
            self.rate_limited += 1

    def add(self, other: "_Counts") -> None:
        self.successful += other.successful
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.rate_limited += other.rate_limited
        self.latency_sum_ms += other.latency_sum_ms
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        for name, count in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_requests": self.successful + self.failed + self.cancelled,
            "successful_requests": self.successful,
            "failed_requests": self.failed,
            "cancelled_requests": self.cancelled,
            "avg_latency": self.latency_sum_ms / self.successful if self.successful else 0.0,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "rate_limited": self.rate_limited,
            "errors": dict(sorted(self.errors.items())),
            "latency_histogram": dict(zip(LATENCY_BUCKETS, self.buckets)),
            "latency_sum_seconds": self.latency_sum_ms / 1000.0,
            "latency_count": self.successful,
        }


@dataclass
class _State:
    """Everything one instance has recorded; also a detached copy of it."""

    totals: _Counts = field(default_factory=_Counts)
    per_key: dict[str, _KeyCounts] = field(default_factory=dict)
    per_model: dict[str, _Counts] = field(default_factory=dict)
    recent: Optional[LatencySketch] = None  # only in copies: the recent calls' latencies


class MetricsMiddleware(Middleware):
    """Counts calls, latencies and tokens; see the module docstring."""

    def __init__(self, *, reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(reservoir_size, int) or reservoir_size < 1:
            raise LLMValidationError(f"reservoir_size must be a positive integer, got {reservoir_size!r}")
        self.reservoir_size = reservoir_size
        self._clock = clock
        self._lock = threading.Lock()  # guards _state and the windows
        self._state = _State()
        # The recent calls' latencies: the window filling, and the one before.
        self._window = LatencySketch()
        self._previous: Optional[LatencySketch] = None

    def __repr__(self) -> str:
        with self._lock:
            s = self._state.totals
            return f"<MetricsMiddleware {s.successful} ok, {s.failed} failed, {s.cancelled} cancelled>"

    # --- hooks -----------------------------------------------------------
    def process_request(self, request: LLMRequest, context: Context) -> LLMRequest:
        context.setdefault("started", self._clock())
        return request

    def process_response(self, response: LLMResponse, context: Context) -> LLMResponse:
        started = context.get("started")
        if started is not None:
            latency_ms = max(0.0, (self._clock() - started) * 1000.0)
        else:  # process_request never ran for this call
            latency_ms = max(0.0, float(response.latency_ms))
        client_id = _client_id(context, response.client_id)
        model_name = _model(context, response.model)
        bucket = bisect.bisect_left(LATENCY_BUCKETS, latency_ms / 1000.0)
        with self._lock:
            for counts in (self._state.totals, self._model(model_name)):
                counts.succeeded(latency_ms, response.usage.input_tokens, response.usage.output_tokens, bucket)
            window = self._window
            if window.count >= self.reservoir_size:
                self._previous, self._window = window, LatencySketch()
                window = self._window
            window.add(latency_ms)
            self._key(client_id).successful += 1
        return response

    def process_error(self, error: LLMError, context: Context) -> None:
        self._record_error(error, context)
        return None  # observe only: never swallow the error

    def handle(self, request: LLMRequest, context: Context, call_next: CallNext) -> Result:
        try:
            return super().handle(request, context, call_next)
        except LLMError:
            raise  # already counted by process_error
        except Requeue as requeue:  # an attempt the pipeline sends on: the call ends elsewhere
            if getattr(requeue.cause, "status_code", None) == 429:
                model_name = _model(context, None)
                with self._lock:
                    self._state.totals.rate_limited += 1
                    self._model(model_name).rate_limited += 1
            raise
        except Exception as exc:  # a bug below us still ends the call
            self._record_error(exc, context)
            raise

    # --- reading -----------------------------------------------------------
    def get_metrics(self) -> dict[str, Any]:
        """A detached dict of everything recorded (shape: :func:`merge_metrics`)."""
        return _summarise([self._snapshot()])

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._state = _State()
            self._window, self._previous = LatencySketch(), None

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (one held at fork time stays behind)."""
        self._lock = threading.Lock()

    # --- internals ---------------------------------------------------------
    def _record_error(self, error: BaseException, context: Context) -> None:
        client_id = _client_id(context, None)
        model_name = _model(context, None)
        if getattr(error, "cancelled", False):
            with self._lock:
                self._state.totals.cancelled += 1
                self._key(client_id).cancelled += 1
                self._model(model_name).cancelled += 1
            return
        name = type(error).__name__
        limited = getattr(error, "status_code", None) == 429
        with self._lock:
            for counts in (self._state.totals, self._model(model_name)):
                counts.failed_with(name, limited)
            self._key(client_id).failed += 1

    def _model(self, name: str) -> _Counts:
        """The figures for model ``name``; call with the lock held."""
        models = self._state.per_model
        counts = models.get(name)
        if counts is None:
            if len(models) >= MAX_MODELS:
                name = OTHER_MODELS
                counts = models.get(name)
            if counts is None:
                counts = models[name] = _Counts()
        return counts

    def _key(self, client_id: str) -> _KeyCounts:
        """The counts for ``client_id``; call with the lock held."""
        counts = self._state.per_key.get(client_id)
        if counts is None:
            counts = self._state.per_key[client_id] = _KeyCounts()
        return counts

    def _snapshot(self) -> _State:
        with self._lock:
            s = self._state
            return _State(
                totals=s.totals.copy(),
                per_key={k: _KeyCounts(v.successful, v.failed, v.cancelled) for k, v in s.per_key.items()},
                per_model={k: v.copy() for k, v in s.per_model.items()},
                recent=LatencySketch.merged((self._window, self._previous)),
            )


def _client_id(context: Context, fallback: Optional[str]) -> str:
    return str(context.get("client_id") or fallback or UNKNOWN_CLIENT)


def _model(context: Context, fallback: Optional[str]) -> str:
    return str(context.get("model") or fallback or UNKNOWN_MODEL)


def merge_metrics(metrics: Iterable[MetricsMiddleware]) -> dict[str, Any]:
    """One ``get_metrics()``-shaped dict over several middleware (several
    keys): counts, tokens, errors, histograms and ``per_key`` summed;
    ``avg_latency`` over every successful call; percentiles from the union
    of the recent windows. An instance listed twice (one instance added to
    several chains) counts once. Empty input gives the all-zero dict."""
    seen: set[int] = set()
    snapshots = []
    for mw in metrics:
        if id(mw) not in seen:
            seen.add(id(mw))
            snapshots.append(mw._snapshot())
    return _summarise(snapshots)


def _summarise(snapshots: list[_State]) -> dict[str, Any]:
    """The public dict for one or more snapshots.

    Keys: ``total_requests`` (successful + failed + cancelled),
    ``successful_requests``, ``failed_requests``, ``cancelled_requests``,
    ``success_rate`` (successful / (successful + failed); 1.0 before any
    call has succeeded or failed — nothing has gone wrong yet — and
    cancellations never lower it), ``avg_latency``, ``p50_latency``,
    ``p95_latency``, ``p99_latency`` (ms; 0.0 with no samples),
    ``input_tokens``, ``output_tokens``, ``rate_limited`` (429s),
    ``errors`` (error class name → count), ``per_key`` (client id →
    ``total_requests``, ``successful_requests``, ``failed_requests``,
    ``cancelled_requests``), ``per_model`` (model → ``total_requests``,
    ``successful_requests``, ``failed_requests``, ``cancelled_requests``,
    ``avg_latency``, ``input_tokens``, ``output_tokens``, ``rate_limited``,
    ``errors``, ``latency_histogram``, ``latency_sum_seconds``,
    ``latency_count``), ``latency_histogram`` (upper bound in seconds
    → count of calls in that bucket alone, not cumulative; ordered as
    :data:`LATENCY_BUCKETS`), ``latency_sum_seconds`` and ``latency_count``.
    """
    merged = _State()
    total = merged.totals
    recent = LatencySketch()
    for snap in snapshots:
        total.add(snap.totals)
        for client_id, counts in snap.per_key.items():
            merged.per_key.setdefault(client_id, _KeyCounts()).add(counts)
        for model_name, figures in snap.per_model.items():
            merged.per_model.setdefault(model_name, _Counts()).add(figures)
        if snap.recent is not None:
            recent.update(snap.recent)
    p50, p95, p99 = recent.percentiles(50, 95, 99)
    decided = total.successful + total.failed
    return {
        "total_requests": total.successful + total.failed + total.cancelled,
        "successful_requests": total.successful,
        "failed_requests": total.failed,
        "cancelled_requests": total.cancelled,
        "success_rate": total.successful / decided if decided else 1.0,
        "avg_latency": total.latency_sum_ms / total.successful if total.successful else 0.0,
        "p50_latency": p50,
        "p95_latency": p95,
        "p99_latency": p99,
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "rate_limited": total.rate_limited,
        "errors": dict(sorted(total.errors.items())),
        "per_key": {k: v.as_dict() for k, v in sorted(merged.per_key.items())},
        "per_model": {k: v.as_dict() for k, v in sorted(merged.per_model.items())},
        "latency_histogram": dict(zip(LATENCY_BUCKETS, total.buckets)),
        "latency_sum_seconds": total.latency_sum_ms / 1000.0,
        "latency_count": total.successful,
    }
