"""PooledKey: everything bound to one API key of an endpoint.

The key itself lives only inside a :class:`KeyAuth`; the PooledKey is
known by its ``client_id`` (``anthropic-0``), which is what status dicts,
responses, logs and errors carry (API.md calls these "key-bound clients":
``pool.clients``). It does no I/O: the pipeline sends through its chain.

Threading contract: shared by every thread whose lease is bound to this
key. The counters are owned by the PooledKey and guarded by its ``_lock``;
the middleware chain guards itself; nothing is held across network I/O.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from pydantic import SecretStr

from .config import RateLimitConfig
from .middleware.base import MiddlewareChain
from .providers.base import Provider
from .transport import KeyAuth

__all__ = ["PooledKey"]


class PooledKey:
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
        self.auth = KeyAuth(provider.auth_headers(key.get_secret_value()), self.client_id)
        self._lock = threading.Lock()
        self._in_use = 0
        self._total_requests = 0
        self._failed_requests = 0
        self._errors: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<PooledKey {self.client_id} in_use={self._in_use} requests={self._total_requests}>"

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

    def record(self, error: Optional[BaseException], *, requeued: bool = False) -> None:
        """One finished call; a stream the caller closed early is no failure.
        A pass the pipeline sends on elsewhere (``requeued``, after a 429)
        is no call of this key, but its error still shows in ``errors``."""
        with self._lock:
            if error is not None and not getattr(error, "cancelled", False):
                name = type(error).__name__
                self._errors[name] = self._errors.get(name, 0) + 1
                if requeued:
                    return
                self._failed_requests += 1
            elif requeued:
                return
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
