"""A local token estimate, for when the provider has no counting endpoint.

Roughly 4 characters of ASCII text per token and one token per other
character (CJK, emoji), plus a few tokens of framing per message. Good
enough to size a rate-limit reservation; the limiter corrects every
estimate from the provider's actual usage.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from .models import Message

__all__ = ["estimate_text_tokens", "estimate_tokens", "plausible_count", "MAX_PLAUSIBLE_TOKENS"]

# No call can use more tokens than this: two orders of magnitude above the
# largest context window offered today. A usage figure above it is a server
# bug, and must not be charged to a key (10**15 tokens would hold it for ages).
MAX_PLAUSIBLE_TOKENS = 10**8

PER_MESSAGE_TOKENS = 4
PER_REQUEST_TOKENS = 3


def estimate_text_tokens(text: str) -> int:
    if not text:
        return 0
    ascii_chars = len(text.encode("ascii", "ignore"))
    other = len(text) - ascii_chars
    return -(-ascii_chars // 4) + other


def estimate_tokens(messages: Iterable[Message], system: Optional[str] = None) -> int:
    total = PER_REQUEST_TOKENS
    if system:
        total += estimate_text_tokens(system) + PER_MESSAGE_TOKENS
    for message in messages:
        total += estimate_text_tokens(message.content) + PER_MESSAGE_TOKENS
    return total


def plausible_count(value: Any) -> Optional[int]:
    """A token count a server reported, or None when it is not one: not a
    number (a string, a bool, a list), negative, fractional, not finite or
    above :data:`MAX_PLAUSIBLE_TOKENS`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value <= MAX_PLAUSIBLE_TOKENS else None
