"""RateLimitMiddleware: admission before each attempt, correction after.

The pool already reserved capacity for a call's first attempt when it chose
the key (that is how it knows which key has headroom); this middleware
takes that reservation from the context, or — for a retried attempt —
reserves again on its own key, waiting in line. After the answer it
corrects the charges to the actual usage and syncs the buckets from the
rate-limit headers; a rate-limit 429 pauses the whole key.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import (
    LLMError,
    LLMProviderError,
    LLMRateLimitError,
    LLMTransportError,
)
from ..models import LLMResponse
from ..providers.base import LLMRequest
from ..ratelimit.limiter import Cost, KeyLimiter, ProviderLimiter, Reservation
from ..streaming import Stream
from ..tokens import estimate_tokens
from .base import CallNext, Middleware, Result

__all__ = ["RateLimitMiddleware", "DEFAULT_PAUSE_SECONDS"]

# A 429 without any retry hint pauses its key this long.
DEFAULT_PAUSE_SECONDS = 1.0


class RateLimitMiddleware(Middleware):
    """Per key. Thread-safe: all state lives in the ProviderLimiter."""

    def __init__(self, limiter: ProviderLimiter, key: KeyLimiter) -> None:
        self.limiter = limiter
        self.key = key

    def __repr__(self) -> str:
        return f"<RateLimitMiddleware {self.key.client_id}>"

    def handle(self, request: LLMRequest, context: dict[str, Any], call_next: CallNext) -> Result:
        reservation: Optional[Reservation] = context.pop("reservation", None)
        if reservation is None or reservation.done or reservation.key is not self.key:
            reservation = self._admit_retry(request, context)
        self.limiter.mark_sent(reservation)
        try:
            result = call_next(request)
        except LLMError as error:
            self.on_error(reservation, error)
            raise
        except BaseException:
            self.limiter.release(reservation)  # a bug below us: keep the charges, free the slot
            raise
        if isinstance(result, Stream):
            self.limiter.observe(reservation, result.headers)
            result.add_finisher(lambda response, error: self._settle_stream(reservation, response, error))
            return result
        self._settle(reservation, result)
        return result

    def _admit_retry(self, request: LLMRequest, context: dict[str, Any]) -> Reservation:
        """A retried attempt on this key. If the key is paused (another
        call's 429) and the pool can place the call, hand it back instead
        of waiting: another key may take it now."""
        paused = self.limiter.paused_for(self.key)
        if paused > 0 and context.get("requeue"):
            raise LLMRateLimitError(f"{self.key.client_id} is paused for {paused:.2f}s",
                                    retry_after=paused, key_paused=True)
        budget = context.get("budget")
        deadline = budget.wait_deadline() if budget is not None else context.get("deadline")
        cost = Cost(estimate_tokens(request.messages, request.system), request.max_tokens)
        return self.limiter.reserve(cost, deadline, only=self.key)

    def _settle(self, reservation: Reservation, response: LLMResponse) -> None:
        usage = response.usage
        if usage.input_tokens or usage.output_tokens:
            # Writing a prompt to Anthropic's cache counts toward its input limit.
            counted = usage.input_tokens + (getattr(usage, "cache_creation_input_tokens", 0) or 0)
            self.limiter.settle(reservation, counted, usage.output_tokens, response.headers)
        else:  # a server that reports no usage: keep the estimate
            self.limiter.release(reservation, response.headers)

    def _settle_stream(self, reservation: Reservation, response: Optional[LLMResponse],
                       error: Optional[LLMError]) -> None:
        if response is not None:
            self._settle(reservation, response)
        elif error is not None:
            self.on_error(reservation, error)

    def on_error(self, reservation: Reservation, error: LLMError) -> None:
        headers = getattr(error, "headers", None)
        if isinstance(error, LLMTransportError) and not error.sent:
            self.limiter.refund(reservation, answered=False)  # never reached the server
        elif isinstance(error, LLMRateLimitError) and error.status_code == 429 \
                and not getattr(error, "mid_stream", False):
            self.limiter.refund(reservation, headers)  # refused: nothing was counted
            pause = DEFAULT_PAUSE_SECONDS if error.retry_after is None else error.retry_after
            self.limiter.pause(self.key, pause)
        elif isinstance(error, LLMProviderError) and error.status_code is not None \
                and error.status_code < 500 and not getattr(error, "mid_stream", False):
            self.limiter.refund(reservation, headers, keep_request=True)
        else:  # sent and the outcome is unknown (5xx, read timeout, cut stream): keep the charges
            self.limiter.release(reservation, headers)
