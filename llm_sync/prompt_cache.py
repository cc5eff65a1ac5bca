"""Cache-aware input estimates: which ``cache_control`` prefixes were
recently cached on a scope, so admission does not reserve input tokens the
provider will not count.

Anthropic caches on request: a ``cache_control`` breakpoint on a system or
message block marks a prefix (everything before it, in the order tools →
system → messages). A prefix written or read lives for its TTL (5 minutes;
``{"ttl": "1h"}`` → 1 hour; a read refreshes it), and a read does not count
toward the input-tokens-per-minute limit. So after a call whose usage shows
``cache_creation_input_tokens`` or ``cache_read_input_tokens``, the
pipeline records the request's breakpoint prefixes here; before a call, if
the longest of its breakpoint prefixes is recorded and fresh, the input
estimate becomes ``estimate(total) − estimate(prefix)`` plus a small
allowance (:func:`discounted`).

Per-provider switch: ``Provider.cache_reads_in_input``. Where reads are
counted as input (OpenAI: ``cached_tokens`` are part of
``prompt_tokens``), nothing is tracked and nothing is discounted; where
they are not (Anthropic) the tracker is on.

Scope: the server's cache is per organisation (a key, or a group of
keys), so prefixes are recorded per rate-limit scope id (key or group ×
model class) and the discount is taken per candidate key when the limiter
chooses one (:meth:`CacheCost.input_for`): a key whose cache is cold is
charged the whole prompt.

Privacy: only a hash of the typed blocks' JSON (without their
``cache_control``) and a token estimate are kept, never the content.

Threading contract: one :class:`PromptCacheTracker` per endpoint, owned by
its :class:`~llm_sync.pipeline.Pipeline` and shared by every thread calling
through it. One lock guards the entries; it is held only for a few dict
operations (never across I/O, hashing or estimating, which happen before).
Memory is bounded: at most ``max_entries`` prefixes, least recently
recorded evicted first; expired entries are dropped when met.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

from .ratelimit.key import Cost
from .tokens import PER_MESSAGE_TOKENS, PER_REQUEST_TOKENS, estimate_content_tokens, estimate_text_tokens

__all__ = [
    "Breakpoint",
    "CacheCost",
    "PromptCacheTracker",
    "breakpoints",
    "cache_ttl",
    "discounted",
    "DEFAULT_TTL",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MIN_TOKENS",
    "ALLOWANCE_SHARE",
    "ALLOWANCE_TOKENS",
]

DEFAULT_TTL = 300.0  # Anthropic's ephemeral cache: 5 minutes
LONG_TTL = 3600.0  # ``"ttl": "1h"``
DEFAULT_MAX_ENTRIES = 4096
# Anthropic never caches a prefix shorter than 1,024 tokens (2,048 on some
# models): shorter prefixes are not recorded, so they are never discounted.
DEFAULT_MIN_TOKENS = 1024
# The discounted estimate keeps this much of the cached prefix (and at
# least ALLOWANCE_TOKENS): the local estimate of a prefix is not exact.
ALLOWANCE_SHARE = 0.02
ALLOWANCE_TOKENS = 8


class Breakpoint(NamedTuple):
    """One ``cache_control`` breakpoint: the hash of the prefix up to and
    including its block, that prefix's estimated tokens, and its TTL."""

    digest: bytes
    tokens: int
    ttl: float


@dataclass(frozen=True)
class CacheCost(Cost):
    """A :class:`Cost` whose request has breakpoints. ``input_tokens`` is
    the whole prompt's estimate (what the input estimate is calibrated
    against); :meth:`input_for` is what a scope is charged: less where that
    scope has the longest cached prefix fresh. ``total``: the local
    estimate of the whole prompt (the units ``marks`` are counted in);
    ``marks`` are what to record when the answer shows the cache was used."""

    total: int = 0
    marks: tuple[Breakpoint, ...] = ()
    tracker: Optional["PromptCacheTracker"] = field(default=None, compare=False, repr=False)

    def input_for(self, scope: str) -> int:
        cached = self.tracker.cached_tokens(scope, self.marks) if self.tracker is not None else 0
        if not cached or self.total <= 0:
            return self.input_tokens
        base = self.input_tokens
        return max(1, min(base, math.ceil(base * discounted(self.total, cached) / self.total)))


def cache_ttl(cache_control: Any) -> Optional[float]:
    """Seconds a breakpoint's prefix lives, or None when ``cache_control``
    marks no breakpoint. ``ttl`` may be ``"5m"``, ``"1h"`` or seconds."""
    if not cache_control:
        return None
    ttl = cache_control.get("ttl") if isinstance(cache_control, dict) else None
    if ttl is None:
        return DEFAULT_TTL
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        return float(ttl) if ttl > 0 else DEFAULT_TTL
    text = str(ttl).strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        return DEFAULT_TTL


def _block_json(block: Any) -> str:
    if hasattr(block, "model_dump"):
        data = block.model_dump(mode="json", exclude={"cache_control"})
    elif isinstance(block, dict):
        data = {k: v for k, v in block.items() if k != "cache_control"}
    else:
        data = block
    return json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))


def _cache_control(block: Any) -> Any:
    if isinstance(block, dict):
        return block.get("cache_control")
    return getattr(block, "cache_control", None)


def breakpoints(messages: Sequence[Any], system: Any = None, tools: Iterable[Any] = ()) -> tuple[Breakpoint, ...]:
    """The request's breakpoints in Anthropic's order (tools, system,
    messages), each with the hash and estimated tokens of its prefix. The
    token figures follow :func:`~llm_sync.tokens.estimate_tokens`, so the
    longest prefix's tokens compare with the whole estimate."""
    digest = hashlib.sha256()
    tokens = PER_REQUEST_TOKENS
    marks: list[Breakpoint] = []

    def feed(kind: str, text: str) -> None:
        digest.update(kind.encode() + b"\x00" + text.encode("utf-8", "surrogatepass") + b"\x00")

    for tool in tools:
        feed("tool", _block_json(tool))
        tokens += estimate_text_tokens(tool.name + tool.description + json.dumps(tool.input_schema, default=str))
        ttl = cache_ttl(_cache_control(tool))
        if ttl is not None:
            marks.append(Breakpoint(digest.digest(), tokens, ttl))

    def content(kind: str, value: Any) -> None:
        nonlocal tokens
        tokens += PER_MESSAGE_TOKENS
        if isinstance(value, str):
            feed(kind, json.dumps(value))
            tokens += estimate_text_tokens(value)
            return
        for block in value:
            feed(kind, _block_json(block))
            tokens += estimate_content_tokens([block])
            ttl = cache_ttl(_cache_control(block))
            if ttl is not None:
                marks.append(Breakpoint(digest.copy().digest(), tokens, ttl))

    if system:
        content("system", system)
    for message in messages:
        content(f"message:{getattr(message, 'role', '')}", message.content)
    return tuple(marks)


def discounted(total: int, cached: int) -> int:
    """The input estimate of a prompt of ``total`` estimated tokens whose
    prefix of ``cached`` tokens will be read from the cache: the rest, plus
    an allowance (:data:`ALLOWANCE_SHARE` of the prefix, at least
    :data:`ALLOWANCE_TOKENS`), never more than ``total`` nor less than 1."""
    if cached <= 0:
        return total
    allowance = max(ALLOWANCE_TOKENS, math.ceil(cached * ALLOWANCE_SHARE))
    return max(1, min(total, total - cached + allowance))


class _Entry(NamedTuple):
    expires: float
    tokens: int


class PromptCacheTracker:
    """Breakpoint prefixes recently cached, per scope, with their expiry
    (see the module docstring for the contract)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = DEFAULT_MAX_ENTRIES,
                 min_tokens: int = DEFAULT_MIN_TOKENS) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.clock = clock
        self.max_entries = max_entries
        self.min_tokens = min_tokens
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()

    def _locked(self) -> threading.Lock:
        """The lock; in a forked child, a fresh one (one held at fork time
        stays behind) and no entries (the child's calls start afresh)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._entries = OrderedDict()
        return self._lock

    def __repr__(self) -> str:
        return f"<PromptCacheTracker {len(self)} prefixes>"

    def __len__(self) -> int:
        with self._locked():
            return len(self._entries)

    def cached_tokens(self, scope: str, marks: Sequence[Breakpoint]) -> int:
        """Estimated tokens of the longest of ``marks`` recorded on
        ``scope`` and not expired; 0 when none is."""
        if not marks:
            return 0
        now = self.clock()
        with self._locked():
            for mark in sorted(marks, key=lambda m: m.tokens, reverse=True):
                entry = self._entries.get((scope, mark.digest))
                if entry is None:
                    continue
                if entry.expires > now:
                    return mark.tokens
                del self._entries[(scope, mark.digest)]
        return 0

    def record(self, scope: str, marks: Sequence[Breakpoint]) -> None:
        """The server cached (wrote or read) these prefixes just now: each
        long enough to be cached lives its TTL from now (a read refreshes)."""
        now = self.clock()
        with self._locked():
            for mark in marks:
                if mark.tokens < self.min_tokens:
                    continue
                key = (scope, mark.digest)
                self._entries[key] = _Entry(now + mark.ttl, mark.tokens)
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._locked():
            self._entries.clear()

