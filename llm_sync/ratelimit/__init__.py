"""Token-accurate rate limiting: buckets, header parsing, the limiter.

Layers, each importing only those before it: ``bucket`` (the arithmetic),
``headers`` (parsing), ``state`` (one scope's buckets and what headers do
to them), ``backends`` (who holds the states: ``MemoryBackend`` here, a
shared store later), ``key`` (one key's and one scope's per-process
bookkeeping), ``scopes`` (which scope a call is charged to: key or group
× model class) and ``limiter`` (the line of waiting callers and the
choice of key).
"""

from .backends import MemoryBackend, RateLimitBackend
from .bucket import TokenBucket
from .headers import HeaderLimit, parse_duration, parse_rate_limit_headers, parse_rfc3339
from .limiter import Cost, KeyLimiter, ProviderLimiter, Reservation
from .state import Observation, Quote, ScopeSnapshot, ScopeState

__all__ = [
    "TokenBucket",
    "HeaderLimit",
    "parse_duration",
    "parse_rate_limit_headers",
    "parse_rfc3339",
    "Cost",
    "KeyLimiter",
    "ProviderLimiter",
    "Reservation",
    "RateLimitBackend",
    "MemoryBackend",
    "ScopeState",
    "ScopeSnapshot",
    "Quote",
    "Observation",
]
