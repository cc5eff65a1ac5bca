"""RetryMiddleware: re-send transient failures, the way the server asks.

Retried: connection errors and timeouts, 408, 409, 429, 500, 502, 503, 504,
529, and a 200 whose body was not valid JSON. Never: 400, 401, 403, 404,
413, and a quota 429 (``LLMQuotaExceededError``). ``x-should-retry:
true|false`` from the server overrides the status.

Wait before a retry: the server's ``retry-after-ms``, else ``retry-after``
(seconds or an HTTP date), else exponential backoff from 0.5 s doubling to
8 s with full jitter. A wait longer than the call's remaining budget fails
fast with ``LLMRateLimitError(retry_after=...)`` instead of sleeping past
the deadline.

A rate-limit 429 is not retried here when the call came through the
pipeline: the pipeline requeues it onto the key that can take it soonest
(often another one). Both draw on the call's one :class:`CallBudget`.
Each re-send this middleware asks for is admitted by the pipeline anew on
this key; without this middleware nothing is re-sent on the same key, and
the accounting is unchanged.

Placement: outside RateLimitMiddleware (each attempt is admitted and
corrected anew), inside Logging and Metrics (they see one call). Streams
are retried only while opening, before any chunk was yielded.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional

import tenacity

from ..budget import CallBudget
from ..config import DEFAULT_RETRY_BUDGET
from ..errors import (
    RETRYABLE_STATUSES,
    LLMError,
    LLMPoolExhaustedError,
    LLMProviderError,
    LLMQuotaExceededError,
    LLMRateLimitError,
    LLMTransportError,
)
from ..providers.base import LLMRequest
from .base import CallNext, Context, Middleware, Result

__all__ = ["RetryMiddleware", "is_retryable", "backoff"]

BACKOFF_START = 0.5
BACKOFF_CAP = 8.0


def backoff(attempt: int, draw: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, start * 2**(attempt-1))]."""
    return float(draw()) * min(BACKOFF_CAP, BACKOFF_START * 2.0 ** (attempt - 1))


def is_retryable(error: BaseException) -> bool:
    """The status-based decision, overridden by ``x-should-retry``."""
    if not isinstance(error, LLMError) or isinstance(error, (LLMQuotaExceededError, LLMPoolExhaustedError)):
        return False  # a local wait already used up, or a bill to pay: sending again changes nothing
    hint = str((getattr(error, "headers", None) or {}).get("x-should-retry", "")).strip().lower()
    if hint in ("true", "false"):
        return hint == "true"
    if isinstance(error, LLMTransportError):
        return not bool(getattr(error, "deadline_passed", False))
    if isinstance(error, LLMProviderError):
        return error.status_code in RETRYABLE_STATUSES
    return False


class _OverBudget(Exception):
    def __init__(self, wait: float, error: BaseException, from_server: bool) -> None:
        super().__init__(wait)
        self.wait = wait
        self.error = error
        self.from_server = from_server


def _left_to_the_pipeline(error: BaseException) -> bool:
    """A server 429 on a pooled call: the pipeline already requeued it if
    it could (onto whichever key can take it soonest); what reaches here
    is a 429 it could not place, which a retry on this paused key would
    not place either."""
    return isinstance(error, LLMRateLimitError) and error.status_code == 429


class RetryMiddleware(Middleware):
    """Thread-safe: no state changes per call; ``sleep``, ``clock`` and the
    jitter's ``draw`` are injectable for tests."""

    def __init__(self, max_retries: int = 2, retry_budget: Optional[float] = DEFAULT_RETRY_BUDGET, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 draw: Callable[[], float] = random.random) -> None:
        self.max_retries = max_retries
        self.retry_budget = retry_budget
        self.sleep = sleep
        self.clock = clock
        self.draw = draw

    def __repr__(self) -> str:
        return f"<RetryMiddleware max_retries={self.max_retries} budget={self.retry_budget}>"

    def handle(self, request: LLMRequest, context: Context, call_next: CallNext) -> Result:
        """The first attempt runs bare: a call that succeeds (most do) costs
        no retry machinery. Only a retryable failure engages tenacity,
        which replays that failure as its attempt 1 — so the waits, stops
        and hints that follow are exactly those of a call run under
        tenacity from the start."""
        budget: CallBudget = context.get("budget") or CallBudget(
            self.max_retries,
            deadline=context.get("deadline"),
            retry_deadline=None if self.retry_budget is None else self.clock() + self.retry_budget,
            clock=self.clock,
        )
        pooled = bool(context.get("pooled"))
        context["attempt"] = 1
        try:
            return call_next(request)
        except BaseException as error:
            if not _should_retry(error, pooled):
                raise
            first = error
        return self._retry(request, context, call_next, budget, pooled, first)

    def _retry(self, request: LLMRequest, context: Context, call_next: CallNext, budget: CallBudget,
               pooled: bool, first: BaseException) -> Result:
        """Attempts 2.. under tenacity, after ``first`` (attempt 1's failure)."""
        replay: Optional[BaseException] = first

        def wait(state: tenacity.RetryCallState) -> float:
            if budget.retries_left <= 0:
                return 0.0  # stop() ends it; no budget check needed
            error = state.outcome.exception() if state.outcome else None
            hint = getattr(error, "retry_after", None)
            delay = hint if hint is not None else backoff(state.attempt_number, self.draw)
            if delay > budget.time_left():
                raise _OverBudget(delay, error, from_server=hint is not None)  # type: ignore[arg-type]
            return delay

        def before_sleep(state: tenacity.RetryCallState) -> None:
            budget.spend()
            context["retries"] = context.get("retries", 0) + 1

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda error: _should_retry(error, pooled)),
            stop=lambda state: budget.retries_left <= 0,
            wait=wait,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if replay is not None:  # attempt 1 already ran: its failure, once more
                        error, replay = replay, None
                        raise error
                    context["attempt"] = attempt.retry_state.attempt_number
                    result = call_next(request)
        except _OverBudget as over:
            if not over.from_server:
                raise over.error from None  # our own backoff does not fit: the failure stands
            raise LLMRateLimitError(
                f"the server asks to wait {over.wait:.2f}s before retrying, longer than the call has left "
                f"({max(0.0, budget.time_left()):.2f}s): {over.error}",
                retry_after=round(over.wait, 3),
                status_code=getattr(over.error, "status_code", None),
                error_type=getattr(over.error, "error_type", None),
                provider=context.get("provider"),
            ) from over.error
        return result


def _should_retry(error: BaseException, pooled: bool) -> bool:
    if pooled and _left_to_the_pipeline(error):
        return False
    return is_retryable(error)
