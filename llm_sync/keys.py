"""KeyClient: everything bound to one API key of a provider.

The key itself lives only inside a :class:`KeyAuth`; the KeyClient is
known by its ``client_id`` (``anthropic-0``), which is what status dicts,
responses, logs and errors carry.

Threading contract: shared by every thread whose lease is bound to this
key. The counters are owned by the KeyClient and guarded by its ``_lock``;
the middleware chain guards itself; nothing is held across network I/O.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import requests
from pydantic import SecretStr

from .budget import CallBudget
from .config import RateLimitConfig
from .middleware.base import MiddlewareChain, Result
from .models import LLMResponse
from .providers.base import LLMRequest, Provider
from .ratelimit.limiter import Reservation
from .streaming import Stream
from .transport import KeyAuth

if TYPE_CHECKING:
    from .pool import Lease

__all__ = ["KeyClient"]

Timeout = tuple[float, Optional[float]]


class KeyClient:
    def __init__(
        self,
        provider: Provider,
        key: SecretStr,
        index: int,
        limits: Optional[RateLimitConfig] = None,
    ) -> None:
        self.provider = provider
        self.index = index
        self.client_id = f"{provider.endpoint}-{index}"
        self.limits = limits
        self.middleware_chain = MiddlewareChain()
        self._auth = KeyAuth(provider.auth_headers(key.get_secret_value()), self.client_id)
        self._lock = threading.Lock()
        self._in_use = 0
        self._total_requests = 0
        self._failed_requests = 0
        self._errors: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<KeyClient {self.client_id} in_use={self._in_use} requests={self._total_requests}>"

    # --- counters (the pool calls bind/unbind under its own lock too) ---
    @property
    def in_use(self) -> int:
        return self._in_use

    def after_fork(self) -> None:
        """In a forked child: fresh locks, nothing in flight."""
        self._lock = threading.Lock()
        self._in_use = 0
        self.middleware_chain.after_fork()

    def bind(self) -> None:
        with self._lock:
            self._in_use += 1

    def unbind(self) -> None:
        with self._lock:
            self._in_use -= 1

    def _count(self, error: Optional[BaseException]) -> None:
        """One finished call; a stream the caller closed early is no failure.
        An attempt the pool sends on elsewhere (a 429) is no call of this
        key, but its error still shows in the key's ``errors``."""
        with self._lock:
            if error is not None and not getattr(error, "cancelled", False):
                name = type(error).__name__
                self._errors[name] = self._errors.get(name, 0) + 1
                if getattr(error, "requeued", False):
                    return
                self._failed_requests += 1
            self._total_requests += 1

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "client_id": self.client_id,
                "in_use": self._in_use > 0,
                "active_leases": self._in_use,
                "total_requests": self._total_requests,
                "failed_requests": self._failed_requests,
                "errors": dict(self._errors),
                "rate_limit_status": None,
            }

    # --- calls ------------------------------------------------------------
    def _context(self, request: LLMRequest, reservation: Optional[Reservation],
                 budget: Optional[CallBudget]) -> dict[str, Any]:
        """Per-call state shared by the middleware of one call. ``requeue``:
        the pool can send this call elsewhere after a 429."""
        return {
            "provider": self.provider.endpoint,
            "client_id": self.client_id,
            "model": request.model,
            "stream": request.stream,
            "started": time.monotonic(),
            "reservation": reservation,
            "budget": budget,
            "deadline": budget.deadline if budget is not None else None,
            "requeue": budget is not None,
        }

    def complete(self, session: requests.Session, request: LLMRequest, timeout: Timeout,
                 reservation: Optional[Reservation] = None, budget: Optional[CallBudget] = None) -> LLMResponse:
        """One non-streamed call through this key's middleware chain."""
        context = self._context(request, reservation, budget)

        def send(req: LLMRequest) -> Result:
            _going_out(reservation)
            return self.provider.complete(session, self._auth, req, _attempt_timeout(timeout, budget))

        try:
            result = self.middleware_chain.run(request, context, send)
        except Exception as error:
            self._count(error)
            raise
        self._count(None)
        assert isinstance(result, LLMResponse)
        return result

    def open_stream(self, session: requests.Session, request: LLMRequest, timeout: Timeout,
                    lease: "Lease", budget: Optional[CallBudget] = None) -> Stream:
        """Open a streamed call; the Stream releases ``lease`` when it ends."""
        context = self._context(request, lease.reservation, budget)
        deadline = context["deadline"]

        def send(req: LLMRequest) -> Result:
            _going_out(lease.reservation)
            started = time.monotonic()
            http = self.provider.open_stream(session, self._auth, req, _attempt_timeout(timeout, budget))
            stream = Stream(http, self.provider, self.client_id, started, deadline=deadline)
            stream.prime()  # an error before the first chunk is retried in the chain
            stream.context = context
            stream.add_finisher(lambda response, error: self._count(error))
            return stream

        try:
            result = self.middleware_chain.run(request, context, send)
        except Exception as error:
            self._count(error)
            raise
        assert isinstance(result, Stream)
        # Only now, with every finisher registered, does the stream own the
        # lease: a stream that already ended settles before the lease goes.
        result.attach(lease)
        lease.track(result)
        return result

    def count_tokens(self, session: requests.Session, request: LLMRequest, timeout: Timeout) -> Optional[int]:
        return self.provider.count_tokens(session, self._auth, request, timeout)


def _going_out(reservation: Optional[Reservation]) -> None:
    """Mark the lease's reservation sent if no RateLimitMiddleware did (a
    user removed it): a key must not look forever unanswered."""
    if reservation is not None and reservation.sent_at is None and not reservation.done:
        reservation.limiter.mark_sent(reservation)


def _attempt_timeout(timeout: Timeout, budget: Optional[CallBudget]) -> Timeout:
    """(connect, read) for this attempt: retries get what the call has left."""
    return budget.http_timeout(*timeout) if budget is not None else timeout
