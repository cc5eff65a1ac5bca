"""Prompt caching as the simulator does it, for both kinds.

Anthropic caches on request: a ``cache_control`` breakpoint on a tool,
system or message block marks a prefix (everything before it, in the order
tools → system → messages). The first request with that prefix writes it
(``cache_creation_input_tokens``); repeats within its TTL (5 minutes, or 1
hour with ``"ttl": "1h"``; a hit refreshes it) read it
(``cache_read_input_tokens``). The longest cached prefix up to the last
breakpoint is read, the rest up to the last breakpoint is written, and
neither is part of ``input_tokens``. Prefixes shorter than
``min_tokens`` (1024 by default, as on real models) are never cached.

OpenAI caches by itself: any prefix of at least ``min_tokens`` seen within
5 minutes is read again; ``cached_tokens`` is that prefix rounded down to a
multiple of 128, and is part of ``prompt_tokens``.

Caches are per scope (a key, or the group of keys it belongs to: an
organisation), per kind and per model; the simulator's monotonic clock
drives expiry.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .blocks import Piece

__all__ = ["CacheUse", "PromptCache"]

DEFAULT_MIN_TOKENS = 1024
OPENAI_TTL = 300.0
_OPENAI_STEP = 128


@dataclass
class CacheUse:
    """The cache figures of one request and the prefixes to store if it is served."""

    read: int = 0
    created: int = 0
    store: list[tuple[str, float]] = field(default_factory=list)


def _prefixes(scope: str, pieces: Sequence[Piece]) -> list[tuple[str, int]]:
    """(hash, tokens) of every prefix ending at a piece boundary."""
    digest = hashlib.sha256(scope.encode())
    total = 0
    out: list[tuple[str, int]] = []
    for piece in pieces:
        digest.update(b"\x00" + piece.material.encode())
        total += piece.tokens
        out.append((digest.hexdigest(), total))
    return out


class PromptCache:
    """Prefix hashes with expiry times; thread-safe."""

    def __init__(self, clock: Callable[[], float], min_tokens: int = DEFAULT_MIN_TOKENS) -> None:
        self._clock = clock
        self.min_tokens = min_tokens
        self._lock = threading.Lock()
        self._expiry: dict[str, tuple[float, float]] = {}  # hash -> (expires at, ttl)

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()

    def _alive(self, digest: str, now: float) -> bool:
        entry = self._expiry.get(digest)
        return entry is not None and entry[0] > now

    def anthropic(self, scope: str, pieces: Sequence[Piece]) -> CacheUse:
        """Figures for an Anthropic request (nothing is stored until :meth:`commit`)."""
        marks = [index for index, piece in enumerate(pieces) if piece.ttl is not None]
        if not marks:
            return CacheUse()
        prefixes = _prefixes(scope, pieces)
        last = marks[-1]
        if prefixes[last][1] < self.min_tokens:
            return CacheUse()
        now = self._clock()
        use = CacheUse()
        with self._lock:
            for index in range(last, -1, -1):
                digest, tokens = prefixes[index]
                if tokens >= self.min_tokens and self._alive(digest, now):
                    use.read = tokens
                    use.store.append((digest, self._expiry[digest][1]))
                    break
        use.created = prefixes[last][1] - use.read
        for index in marks:
            digest, tokens = prefixes[index]
            ttl = pieces[index].ttl
            if tokens >= self.min_tokens and tokens > use.read and ttl is not None:
                use.store.append((digest, ttl))
        return use

    def openai(self, scope: str, pieces: Sequence[Piece]) -> CacheUse:
        """Figures for an OpenAI request: the longest live prefix of ``min_tokens`` or more."""
        prefixes = _prefixes(scope, pieces)
        now = self._clock()
        use = CacheUse()
        with self._lock:
            for digest, tokens in reversed(prefixes):
                if tokens >= self.min_tokens and self._alive(digest, now):
                    use.read = tokens // _OPENAI_STEP * _OPENAI_STEP
                    break
        use.store = [(digest, OPENAI_TTL) for digest, tokens in prefixes if tokens >= self.min_tokens]
        return use

    def commit(self, use: CacheUse) -> None:
        """Store (or refresh) the prefixes of a request that was served."""
        now = self._clock()
        with self._lock:
            for digest, ttl in use.store:
                self._expiry[digest] = (now + ttl, ttl)
