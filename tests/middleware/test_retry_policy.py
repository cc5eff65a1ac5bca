"""RetryMiddleware as a policy on its own: which failures are re-sent, how
long it waits (server hints first), and that every wait fits the budget.
Fake sleep and clock: nothing here waits."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from llm_sync.budget import CallBudget
from llm_sync.call import CallContext, Requeue
from llm_sync.errors import (
    LLMAuthenticationError,
    LLMConnectionError,
    LLMPoolExhaustedError,
    LLMProviderError,
    LLMQuotaExceededError,
    LLMRateLimitError,
    LLMTimeoutError,
)
from llm_sync.middleware.retry import BACKOFF_CAP, RetryMiddleware, backoff, is_retryable
from llm_sync.models import LLMResponse, Message
from llm_sync.providers.base import LLMRequest

REQUEST = LLMRequest(messages=[Message("user", "hi")], model="m")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(*errors: BaseException) -> tuple[Callable[[LLMRequest], Any], list[int]]:
    """call_next raising ``errors`` in turn, then answering."""
    calls = [0]

    def call_next(request: LLMRequest) -> Any:
        calls[0] += 1
        if calls[0] <= len(errors):
            raise errors[calls[0] - 1]
        return LLMResponse(content="ok")

    return call_next, calls


def middleware(clock: Clock, max_retries: int = 2, budget: float = 60.0) -> RetryMiddleware:
    return RetryMiddleware(max_retries, budget, sleep=clock.sleep, clock=clock, draw=lambda: 1.0)


def status(code: int, **kwargs: Any) -> LLMProviderError:
    from llm_sync.errors import error_class_for_status

    return error_class_for_status(code)(f"status {code}", status_code=code, **kwargs)


@pytest.mark.parametrize("error, retried", [
    (status(500), True), (status(502), True), (status(503), True), (status(504), True), (status(529), True),
    (status(408), True), (status(409), True), (status(429), True),
    (status(400), False), (status(404), False), (status(413), False),
    (LLMAuthenticationError("no", status_code=401), False),
    (LLMQuotaExceededError("pay", status_code=429), False),
    (LLMConnectionError("reset"), True), (LLMTimeoutError("slow"), True),
    (LLMTimeoutError("late", deadline_passed=True), False),
    (status(500, headers={"x-should-retry": "false"}), False),
    (status(400, headers={"x-should-retry": "true"}), True),
    (ValueError("a bug"), False),
    (LLMPoolExhaustedError("no lease"), False),
])
def test_what_is_retried(error: BaseException, retried: bool):
    assert is_retryable(error) is retried


def test_backoff_doubles_to_the_cap_with_full_jitter():
    assert [backoff(n, lambda: 1.0) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, BACKOFF_CAP]
    assert backoff(3, lambda: 0.25) == 0.5


def test_retries_with_backoff_then_succeeds():
    clock = Clock()
    call_next, calls = failing(status(503), status(503))
    context: dict[str, Any] = {}
    result = middleware(clock).handle(REQUEST, context, call_next)
    assert result.content == "ok" and calls[0] == 3
    assert clock.slept == [0.5, 1.0]
    assert context["retries"] == 2 and context["attempt"] == 3


def test_the_server_hint_wins_over_backoff():
    clock = Clock()
    call_next, _ = failing(status(503, retry_after=3.25))
    middleware(clock).handle(REQUEST, {}, call_next)
    assert clock.slept == [3.25]


def test_gives_up_after_max_retries_with_the_last_error():
    clock = Clock()
    last = status(503)
    call_next, calls = failing(status(503), status(503), last)
    with pytest.raises(LLMProviderError) as caught:
        middleware(clock, max_retries=2).handle(REQUEST, {}, call_next)
    assert caught.value is last and calls[0] == 3


def test_a_server_hint_longer_than_the_budget_fails_fast_as_a_rate_limit():
    clock = Clock()
    call_next, calls = failing(status(503, retry_after=120.0))
    with pytest.raises(LLMRateLimitError) as caught:
        middleware(clock, budget=10.0).handle(REQUEST, {}, call_next)
    assert caught.value.retry_after == 120.0 and calls[0] == 1 and clock.slept == []


def test_our_own_backoff_that_does_not_fit_leaves_the_failure_as_it_is():
    clock = Clock()
    first = status(503)
    call_next, _ = failing(first)
    with pytest.raises(LLMProviderError) as caught:
        middleware(clock, budget=0.1).handle(REQUEST, {}, call_next)
    assert caught.value is first


def test_one_budget_is_shared_through_the_context():
    clock = Clock()
    budget = CallBudget(1, clock=clock)
    context = CallContext(endpoint="anthropic", client_id="anthropic-0", model="m", stream=False, budget=budget)
    call_next, calls = failing(status(503), status(503))
    with pytest.raises(LLMProviderError):
        middleware(clock, max_retries=5).handle(REQUEST, context, call_next)
    assert calls[0] == 2 and budget.retries_left == 0  # the call's budget, not the middleware's 5


def test_a_pooled_429_is_left_to_the_pipeline():
    clock = Clock()
    context = CallContext(endpoint="anthropic", client_id="anthropic-0", model="m", stream=False,
                          budget=CallBudget(3, clock=clock), pooled=True)
    call_next, calls = failing(status(429, retry_after=0.0))
    with pytest.raises(LLMRateLimitError):
        middleware(clock).handle(REQUEST, context, call_next)
    assert calls[0] == 1


def test_a_requeue_passes_straight_through():
    clock = Clock()
    call_next, calls = failing(Requeue(None, 1.0))
    with pytest.raises(Requeue):
        middleware(clock).handle(REQUEST, {}, call_next)
    assert calls[0] == 1 and clock.slept == []


# --- the first attempt runs outside tenacity ------------------------------------------------


@pytest.fixture
def retrying_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many tenacity.Retrying objects the middleware built."""
    import tenacity

    from llm_sync.middleware import retry as retry_module

    built = [0]

    class Counting(tenacity.Retrying):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built[0] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(retry_module.tenacity, "Retrying", Counting)
    return built


def test_a_first_attempt_that_succeeds_builds_no_retry_machinery(retrying_built: list[int]):
    clock = Clock()
    context: dict[str, Any] = {}
    call_next, calls = failing()
    assert middleware(clock).handle(REQUEST, context, call_next).content == "ok"
    assert calls[0] == 1 and retrying_built[0] == 0 and clock.slept == []
    assert context["attempt"] == 1 and "retries" not in context


@pytest.mark.parametrize("error", [status(400), LLMQuotaExceededError("pay", status_code=429), ValueError("bug"),
                                   status(503, headers={"x-should-retry": "false"})])
def test_a_failure_never_retried_is_raised_as_it_is_without_tenacity(retrying_built: list[int],
                                                                      error: BaseException):
    clock = Clock()
    call_next, calls = failing(error)
    with pytest.raises(type(error)) as caught:
        middleware(clock).handle(REQUEST, {}, call_next)
    assert caught.value is error and calls[0] == 1 and retrying_built[0] == 0 and clock.slept == []


@pytest.mark.parametrize("first", [status(429, retry_after=2.0), status(500), status(529), LLMConnectionError("x")])
def test_a_retryable_first_failure_engages_tenacity_and_keeps_its_waits(retrying_built: list[int],
                                                                         first: LLMProviderError):
    clock = Clock()
    context: dict[str, Any] = {}
    call_next, calls = failing(first, status(503))
    assert middleware(clock).handle(REQUEST, context, call_next).content == "ok"
    hint = getattr(first, "retry_after", None)
    # Attempt 1 (run bare) is attempt 1 to tenacity too: backoff 0.5 then 1.0.
    assert clock.slept == [hint if hint is not None else 0.5, 1.0]
    assert calls[0] == 3 and retrying_built[0] == 1
    assert context["retries"] == 2 and context["attempt"] == 3


def test_a_retryable_first_failure_with_no_retry_left_is_raised_without_sleeping():
    clock = Clock()
    first = status(503)
    call_next, calls = failing(first)
    with pytest.raises(LLMProviderError) as caught:
        middleware(clock, max_retries=0).handle(REQUEST, {}, call_next)
    assert caught.value is first and calls[0] == 1 and clock.slept == []


def test_a_first_hint_longer_than_the_budget_still_fails_fast_as_a_rate_limit():
    clock = Clock()
    call_next, calls = failing(status(503, retry_after=120.0))
    with pytest.raises(LLMRateLimitError) as caught:
        middleware(clock, budget=10.0).handle(REQUEST, {}, call_next)
    assert caught.value.retry_after == 120.0 and calls[0] == 1 and clock.slept == []
