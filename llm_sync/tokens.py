"""A local token estimate, for when the provider has no counting endpoint.

Roughly 4 characters of ASCII text per token and one token per other
character (CJK, emoji), plus a few tokens of framing per message. Good
enough to size a rate-limit reservation; the limiter corrects every
estimate from the provider's actual usage.
"""

from __future__ import annotations

from typing import Iterable, Optional

from .models import Message

__all__ = ["estimate_text_tokens", "estimate_tokens"]

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
