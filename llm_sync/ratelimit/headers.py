"""Reading the providers' rate-limit headers into one shape.

Anthropic: ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-
{limit,remaining,reset}``, reset as an RFC 3339 time at which that bucket is
full again. OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
reset as a duration (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``). Missing or
malformed headers are skipped, never an error: compatible servers send any
subset, or none. So are figures outside plausible bounds (``PLAUSIBLE_*``):
they steer every later call on the key, and one absurd header (a limit of
0.0001 a minute) must not refuse every call from then on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Mapping, Optional

__all__ = ["HeaderLimit", "ResetCache", "parse_rate_limit_headers", "parse_organization", "ORGANIZATION_HEADERS",
           "parse_duration", "parse_rfc3339", "DIMENSIONS",
           "PLAUSIBLE_MIN_LIMIT", "PLAUSIBLE_MAX_LIMIT", "PLAUSIBLE_MAX_RESET"]

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

# Per-minute limits below these are not believed. Every hosted provider's
# smallest tier allows a few requests and thousands of tokens a minute; a
# learned limit far below that would call every request "larger than the
# bucket" and refuse it locally, so the key would never reach the server
# (nor hear a correction) again. A real limit that small is still enforced:
# by the server's 429s, which pause the key.
PLAUSIBLE_MIN_LIMIT = {"requests": 1.0, "input_tokens": 100.0, "output_tokens": 100.0, "tokens": 100.0}
# ... nor above this: no provider grants ten billion of anything a minute,
# and beyond it float sums lose whole calls.
PLAUSIBLE_MAX_LIMIT = 1e10
# A bucket refills within its window; the longest windows are a day
# (requests per day). A reset further off is dropped (the limit and
# remaining figures of that dimension are kept).
PLAUSIBLE_MAX_RESET = 86_400.0

# The headers naming the organisation that answered (Anthropic, OpenAI).
ORGANIZATION_HEADERS = ("anthropic-organization-id", "openai-organization")
# What an organisation id may look like to be believed: it names a scope
# (and shows in status), so nothing long or odd is taken from a server.
_ORGANIZATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

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
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):
        return None


def _number(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def plausible(dimension: str, reported: HeaderLimit) -> Optional[HeaderLimit]:
    """``reported`` if its limit and remaining figures are believable (the
    reset dropped if it alone is not); None when the dimension must be
    ignored whole. See ``PLAUSIBLE_*``."""
    limit, remaining, reset_in = reported.limit, reported.remaining, reported.reset_in
    if limit is not None and not (PLAUSIBLE_MIN_LIMIT[dimension] <= limit <= PLAUSIBLE_MAX_LIMIT):
        return None  # also NaN and inf: every comparison with NaN is False
    ceiling = PLAUSIBLE_MAX_LIMIT if limit is None else limit
    if remaining is not None and not (0.0 <= remaining <= ceiling):
        return None  # more left than the limit allows: the figures contradict each other
    if reset_in is not None and not (0.0 <= reset_in <= PLAUSIBLE_MAX_RESET and math.isfinite(reset_in)):
        return HeaderLimit(limit, remaining, None)
    return reported  # frozen: safe to share


def _duration(value: str, cache: Optional[ResetCache]) -> Optional[float]:
    return parse_duration(value) if cache is None else cache.duration(value)


def parse_rate_limit_headers(headers: Mapping[str, str], wall_now: float,
                             rejected: Optional[list[str]] = None,
                             cache: Optional[ResetCache] = None) -> dict[str, HeaderLimit]:
    """Every dimension the headers describe, keyed by our dimension names.

    ``headers`` must have lower-case names; ``wall_now`` (epoch seconds)
    turns Anthropic's absolute reset times into durations. A dimension
    whose figures are implausible is left out, and its name appended to
    ``rejected`` when given (so the caller can say so, once). ``cache``:
    where parsed reset values are remembered (the caller's; none: parse).
    """
    found: dict[str, HeaderLimit] = {}
    for dimension, limit_name, remaining_name, reset_name in _ANTHROPIC_NAMES:
        limit = _number(headers.get(limit_name))
        remaining = _number(headers.get(remaining_name))
        if limit is not None or remaining is not None:
            reset = headers.get(reset_name)
            reset_at = None if reset is None else (parse_rfc3339(reset) if cache is None else cache.time(reset))
            reset_in = None if reset_at is None else max(0.0, reset_at - wall_now)
            found[dimension] = HeaderLimit(limit, remaining, reset_in)
    if not found:
        for dimension, limit_name, remaining_name, reset_name in _OPENAI_NAMES:
            limit = _number(headers.get(limit_name))
            remaining = _number(headers.get(remaining_name))
            if limit is not None or remaining is not None:
                reset = headers.get(reset_name)
                found[dimension] = HeaderLimit(limit, remaining, _duration(reset, cache) if reset else None)
    kept = {}
    for dimension, reported in found.items():
        checked = plausible(dimension, reported)
        if checked is None:
            if rejected is not None:
                rejected.append(dimension)
        else:
            kept[dimension] = checked
    return kept


# The header names of each dimension, built once: (dimension, limit,
# remaining, reset).
_ANTHROPIC_NAMES = tuple(
    (dimension, f"anthropic-ratelimit-{name}-limit", f"anthropic-ratelimit-{name}-remaining",
     f"anthropic-ratelimit-{name}-reset") for name, dimension in _ANTHROPIC.items())
_OPENAI_NAMES = tuple(
    (dimension, f"x-ratelimit-limit-{name}", f"x-ratelimit-remaining-{name}", f"x-ratelimit-reset-{name}")
    for name, dimension in _OPENAI.items())

_CACHE_LIMIT = 512


def _remembered(cache: dict[str, Optional[float]], parse: Callable[[str], Optional[float]],
                value: str) -> Optional[float]:
    """``parse(value)``, remembered in ``cache`` (cleared whole when full)."""
    try:
        return cache[value]
    except KeyError:
        parsed = parse(value)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = parsed
        return parsed


class ResetCache:
    """Reset values already parsed, by their text: every answer carries
    them, and answers within the same second (or window) carry the same
    strings. Bounded (each table cleared whole when full). No lock of its
    own: its owner (a ProviderLimiter) only uses it under its lock."""

    __slots__ = ("times", "durations")

    def __init__(self) -> None:
        self.times: dict[str, Optional[float]] = {}
        self.durations: dict[str, Optional[float]] = {}

    def __repr__(self) -> str:
        return f"<ResetCache {len(self.times)} times, {len(self.durations)} durations>"

    def time(self, value: str) -> Optional[float]:
        """:func:`parse_rfc3339`, remembered by string."""
        return _remembered(self.times, parse_rfc3339, value)

    def duration(self, value: str) -> Optional[float]:
        """:func:`parse_duration`, remembered by string."""
        return _remembered(self.durations, parse_duration, value)


def parse_organization(headers: Mapping[str, str]) -> Optional[str]:
    """The organisation that answered (``anthropic-organization-id`` or
    ``openai-organization``; ``headers`` with lower-case names), or None
    when absent or not a plausible id (letters, digits, ``_.:-``, at most
    128 characters)."""
    for name in ORGANIZATION_HEADERS:
        value = headers.get(name)
        if value is not None:
            value = value.strip()
            if _ORGANIZATION.fullmatch(value):
                return value
    return None
