"""Middleware: the base class, the chain, and the built-ins (in the order
every key's chain holds them; see ``llm_sync.manager.default_chain``)."""

from .base import Middleware, MiddlewareChain
from .logging import LoggingMiddleware
from .metrics import MetricsMiddleware
from .ratelimit import RateLimitMiddleware
from .retry import RetryMiddleware

__all__ = [
    "Middleware",
    "MiddlewareChain",
    "LoggingMiddleware",
    "MetricsMiddleware",
    "RetryMiddleware",
    "RateLimitMiddleware",
]
