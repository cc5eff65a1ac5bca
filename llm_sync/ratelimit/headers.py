"""Reading the providers' rate-limit headers into one shape.

Anthropic: ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-
{limit,remaining,reset}``, reset as an RFC 3339 time at which that bucket is
full again. OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
reset as a duration (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``). Missing or
malformed headers are skipped, never an error: compatible servers send any
subset, or none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Optional

__all__ = ["HeaderLimit", "parse_rate_limit_headers", "parse_duration", "parse_rfc3339", "DIMENSIONS"]

# Our dimensions: requests, input tokens, output tokens, and the combined
# tokens figure (OpenAI's only token bucket; Anthropic's summary one).
DIMENSIONS = ("requests", "input_tokens", "output_tokens", "tokens")

_ANTHROPIC = {
    "requests": "requests",
    "input-tokens": "input_tokens",
    "output-tokens": "output_tokens",
    "tokens": "tokens",
}
_OPENAI = {"requests": "requests", "tokens": "tokens"}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class HeaderLimit:
    """One dimension as the server reported it. ``reset_in``: seconds until
    the bucket is full again, measured from when the response was read."""

    limit: Optional[float] = None
    remaining: Optional[float] = None
    reset_in: Optional[float] = None


def parse_duration(value: str) -> Optional[float]:
    """``1h2m3.5s`` → 3723.5; ``20ms`` → 0.02; a bare number is seconds."""
    value = value.strip()
    if _PLAIN_NUMBER.fullmatch(value):
        return float(value)
    total, position = 0.0, 0
    for match in _DURATION.finditer(value):
        if match.start() != position:
            return None
        number, unit = float(match.group(1)), match.group(2)
        total += number * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
        position = match.end()
    return total if position == len(value) and position > 0 else None


def parse_rfc3339(value: str) -> Optional[float]:
    """RFC 3339 time → epoch seconds (``Z`` or an offset)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def _number(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def parse_rate_limit_headers(headers: Mapping[str, str], wall_now: float) -> dict[str, HeaderLimit]:
    """Every dimension the headers describe, keyed by our dimension names.

    ``headers`` must have lower-case names; ``wall_now`` (epoch seconds)
    turns Anthropic's absolute reset times into durations.
    """
    found: dict[str, HeaderLimit] = {}
    for name, dimension in _ANTHROPIC.items():
        prefix = f"anthropic-ratelimit-{name}-"
        limit = _number(headers.get(prefix + "limit"))
        remaining = _number(headers.get(prefix + "remaining"))
        reset_at = parse_rfc3339(headers[prefix + "reset"]) if prefix + "reset" in headers else None
        if limit is not None or remaining is not None:
            reset_in = None if reset_at is None else max(0.0, reset_at - wall_now)
            found[dimension] = HeaderLimit(limit, remaining, reset_in)
    if found:
        return found
    for name, dimension in _OPENAI.items():
        limit = _number(headers.get(f"x-ratelimit-limit-{name}"))
        remaining = _number(headers.get(f"x-ratelimit-remaining-{name}"))
        reset = headers.get(f"x-ratelimit-reset-{name}")
        if limit is not None or remaining is not None:
            found[dimension] = HeaderLimit(limit, remaining, parse_duration(reset) if reset else None)
    return found
