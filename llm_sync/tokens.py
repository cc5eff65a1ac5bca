"""A local token estimate, for when the provider has no counting endpoint.

Roughly 4 characters of ASCII text per token and one token per other
character (CJK, emoji), plus a few tokens of framing per message. Good
enough to size a rate-limit reservation; the limiter corrects every
estimate from the provider's actual usage.
"""

from __future__ import annotations

import json
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


def estimate_tokens(messages: Iterable[Message], system: Any = None, tools: Iterable[Any] = ()) -> int:
    """Input tokens of a request: its system prompt (text or blocks), its
    messages, and the tool definitions it carries."""
    total = PER_REQUEST_TOKENS
    if system:
        total += estimate_content_tokens(system) + PER_MESSAGE_TOKENS
    for tool in tools:
        total += estimate_text_tokens(tool.name + tool.description + json.dumps(tool.input_schema, default=str))
    for message in messages:
        total += estimate_content_tokens(message.content) + PER_MESSAGE_TOKENS
    return total


# Anthropic: an image costs about width × height / 750 tokens; without a
# known size, assume a large one (the limiter corrects from actual usage).
IMAGE_PIXELS_PER_TOKEN = 750
UNKNOWN_IMAGE_TOKENS = 1600
# Larger images are scaled down by the provider before they are counted.
IMAGE_MAX_EDGE = 1568
IMAGE_MAX_PIXELS = 1_150_000
# A PDF page costs text plus an image of the page; ~3 KB of PDF a page.
PDF_BYTES_PER_PAGE = 3000
PDF_TOKENS_PER_PAGE = 2000


def estimate_content_tokens(content: Any) -> int:
    """Tokens of a message's content: text, or blocks of any kind."""
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    for block in content:
        total += _block_tokens(block)
    return total


def _block_tokens(block: Any) -> int:
    kind = getattr(block, "type", None)
    if kind == "text":
        return estimate_text_tokens(str(block.text))
    if kind == "image":
        if block.width and block.height:
            return image_tokens(int(block.width), int(block.height))
        return UNKNOWN_IMAGE_TOKENS
    if kind == "document":
        if block.text is not None:
            return estimate_text_tokens(block.text)
        pages = max(1, math.ceil(len(block.data or "") * 3 / 4 / PDF_BYTES_PER_PAGE))
        return pages * PDF_TOKENS_PER_PAGE
    if kind == "tool_use":
        return estimate_text_tokens(block.name) + estimate_text_tokens(json.dumps(block.input, default=str))
    if kind == "tool_result":
        return estimate_content_tokens(block.content)
    if kind == "thinking":
        return estimate_text_tokens(block.thinking or block.redacted or "")
    return 0


def image_tokens(width: int, height: int) -> int:
    """An image's tokens as the providers count them: scaled down to fit
    (Anthropic: long edge ``IMAGE_MAX_EDGE``, area ``IMAGE_MAX_PIXELS``),
    then width × height / 750. OpenAI's tile rule lands close to this for
    the same image (at most ~1,450 tokens), so one rule serves both."""
    scale = min(1.0, IMAGE_MAX_EDGE / max(width, height), math.sqrt(IMAGE_MAX_PIXELS / (width * height)))
    return max(1, math.ceil(width * scale * height * scale / IMAGE_PIXELS_PER_TOKEN))


def plausible_count(value: Any) -> Optional[int]:
    """A token count a server reported, or None when it is not one: not a
    number (a string, a bool, a list), negative, fractional, not finite or
    above :data:`MAX_PLAUSIBLE_TOKENS`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value <= MAX_PLAUSIBLE_TOKENS else None
