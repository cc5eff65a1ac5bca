"""RateLimitMiddleware: how a key reacts when the server says "too many".

Admission and accounting are the pipeline's: it reserves capacity before
every send and settles it after, whatever the chain holds. This
middleware is the policy on top: a rate-limit 429 pauses the key's scope
for the request's model (that model class on the key, or on its whole
group; other models go on) for the server's ``retry-after``, else
``DEFAULT_PAUSE_SECONDS``; never longer than the endpoint's ``max_pause``,
after which the scope is probed again. So the calls waiting in line go
to other keys meanwhile. Without it, a 429 is still refunded and
requeued, but the scope is not rested.
"""

from __future__ import annotations

from typing import Optional

from ..call import Requeue
from ..errors import LLMError, LLMRateLimitError
from ..providers.base import LLMRequest
from ..ratelimit.limiter import KeyLimiter, ProviderLimiter
from .base import CallNext, Context, Middleware, Result

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

    def handle(self, request: LLMRequest, context: Context, call_next: CallNext) -> Result:
        try:
            return call_next(request)
        except Requeue as requeue:
            self._pause_after(requeue.cause, request.model)
            raise
        except LLMError as error:
            self._pause_after(error, request.model)
            raise

    def _pause_after(self, error: Optional[LLMError], model: str) -> None:
        if isinstance(error, LLMRateLimitError) and error.status_code == 429 \
                and not getattr(error, "mid_stream", False):
            pause = DEFAULT_PAUSE_SECONDS if error.retry_after is None else error.retry_after
            self.limiter.pause(self.key, pause, model)
