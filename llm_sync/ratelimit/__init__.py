"""Token-accurate rate limiting: buckets, header parsing, the limiter."""

from .bucket import TokenBucket
from .headers import HeaderLimit, parse_duration, parse_rate_limit_headers, parse_rfc3339
from .limiter import Cost, KeyLimiter, ProviderLimiter, Reservation

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
]
