"""LoggingMiddleware: one INFO line per call, bodies only at DEBUG.

Logs under the ``llm_sync`` logger (``llm_sync.calls``). The INFO line
carries provider, model, client id, outcome, attempts, latency and tokens;
at DEBUG the request's messages and the answer are logged too, truncated.
Keys never reach it: requests and contexts carry none, and error text is
scrubbed where errors are made.

Placement: outermost, so it sees a call once, after all its retries.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from ..call import Requeue
from ..content import blocks_text
from ..errors import LLMError
from ..models import LLMResponse
from ..providers.base import LLMRequest
from .base import CallNext, Context, Middleware, Result

__all__ = ["LoggingMiddleware", "LOGGER_NAME"]

LOGGER_NAME = "llm_sync.calls"
DEBUG_TEXT_LIMIT = 500


def _clip(text: str, limit: int = DEBUG_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class LoggingMiddleware(Middleware):
    """Stateless, so thread-safe."""

    def __init__(self, logger: Optional[logging.Logger] = None) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    def process_request(self, request: LLMRequest, context: Context) -> LLMRequest:
        context.setdefault("started", time.monotonic())
        if self.logger.isEnabledFor(logging.DEBUG):
            turns = " | ".join(f"{m.role.value}: {m.text}" for m in request.messages)
            self.logger.debug(
                "request %s %s max_tokens=%d stream=%s system=%r messages=%s",
                context.get("client_id"), request.model, request.max_tokens, request.stream,
                _clip(blocks_text(request.system) if request.system else ""), _clip(turns),
            )
        return request

    def process_response(self, response: LLMResponse, context: Context) -> LLMResponse:
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                "%s %s %s ok stop=%s attempts=%d latency=%.0fms tokens=%d/%d request_id=%s",
                context.get("provider"), response.model or context.get("model"), context.get("client_id"),
                response.stop_reason, context.get("attempt", 1), self._elapsed_ms(context),
                response.usage.input_tokens, response.usage.output_tokens, response.request_id,
            )
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("response %s %s", context.get("client_id"), _clip(response.content))
        return response

    def process_error(self, error: LLMError, context: Context) -> None:
        cancelled = getattr(error, "cancelled", False)
        level = logging.INFO if cancelled else logging.WARNING
        if self.logger.isEnabledFor(level):
            status = getattr(error, "status_code", None)
            self.logger.log(
                level, "%s %s %s %s status=%s attempts=%d latency=%.0fms: %s",
                context.get("provider"), context.get("model"), context.get("client_id"),
                "cancelled" if cancelled else type(error).__name__, status if status is not None else "-",
                context.get("attempt", 1), self._elapsed_ms(context), error,
            )
        return None

    def handle(self, request: LLMRequest, context: Context, call_next: CallNext) -> Result:
        try:
            return super().handle(request, context, call_next)
        except Requeue as requeue:  # the call goes on, on another lease: not its end
            self.logger.debug("%s %s requeued after %s: %s", context.get("provider"), context.get("client_id"),
                              type(requeue.cause).__name__ if requeue.cause else "a paused key", requeue.cause)
            raise

    @staticmethod
    def _elapsed_ms(context: Context) -> float:
        started = context.get("started")
        return (time.monotonic() - started) * 1000.0 if started is not None else 0.0
