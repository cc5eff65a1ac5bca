"""Scripted failures for retry and fault-handling tests.

Clients must be shown to survive every way a provider can fail, so tests queue
faults and the simulator plays them back, first-in first-out, each on the next
request it matches.  Request-level faults (a status, quota exhaustion, invalid
JSON, a dropped connection, a redirect) replace the answer and skip auth,
validation and rate limits.  Stream faults (an error event, a truncated
stream) only match requests whose stream actually starts, so they are not used
up by a count_tokens call or by a request rejected before streaming.  Answer
faults (extra headers, absurd usage, a header echoing the key) let the request
be answered as usual and only alter that answer.  Wire faults (an interim ``1xx`` response, a trickling or stalling body) change how
the answer travels, not what it is: they match any request, at most one per
request, and the answer itself is still decided by the rest of the queue.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Fault", "FaultKind", "FaultQueue"]


class FaultKind(enum.Enum):
    """What a fault does to the request it matches."""

    STATUS = "status"
    QUOTA_EXCEEDED = "quota_exceeded"
    INVALID_JSON = "invalid_json"
    DISCONNECT = "disconnect"
    REDIRECT = "redirect"
    STREAM_ERROR = "stream_error"
    TRUNCATED_STREAM = "truncated_stream"
    HEADERS = "headers"
    USAGE = "usage"
    ECHO_KEY = "echo_key"
    INTERIM = "interim"
    TRICKLE = "trickle"

    @property
    def on_wire(self) -> bool:
        """Whether the fault changes how the answer travels rather than what it is."""
        return self in (FaultKind.INTERIM, FaultKind.TRICKLE)

    @property
    def in_stream(self) -> bool:
        """Whether the fault strikes mid-stream rather than replacing the answer."""
        return self in (FaultKind.STREAM_ERROR, FaultKind.TRUNCATED_STREAM)


@dataclass(frozen=True)
class Fault:
    """One scripted failure; ``count`` is how many more requests it will hit."""

    kind: FaultKind
    count: int = 1
    key_index: int | None = None
    path: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | bytes | None = None
    delay: float = 0.0
    after_chunks: int = 0
    location: str | None = None
    usage: Mapping[str, Any] = field(default_factory=dict)
    echo_header: str | None = None
    chunk_size: int = 1
    interval: float = 0.0
    stall_after: int | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")
        if self.delay < 0:
            raise ValueError(f"delay must not be negative, got {self.delay}")
        if self.after_chunks < 0:
            raise ValueError(f"after_chunks must not be negative, got {self.after_chunks}")
        if self.chunk_size < 1 or not 0 <= self.interval < float("inf"):
            raise ValueError("chunk_size must be at least 1 and interval a finite number >= 0")
        if self.stall_after is not None and self.stall_after < 0:
            raise ValueError(f"stall_after must not be negative, got {self.stall_after}")

    def matches(self, path: str, key_index: int | None, in_stream: bool, on_wire: bool = False) -> bool:
        """Whether this fault applies to a request (at the given phase)."""
        if self.kind.in_stream != in_stream or self.kind.on_wire != on_wire:
            return False
        if self.path is not None and self.path != path:
            return False
        return self.key_index is None or self.key_index == key_index


class FaultQueue:
    """Thread-safe FIFO of pending faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a fault behind those already pending."""
        with self._lock:
            self._faults.append(fault)

    def take(self, path: str, key_index: int | None, *, in_stream: bool, on_wire: bool = False) -> Fault | None:
        """Use up one hit of the oldest matching fault, if any."""
        with self._lock:
            for position, fault in enumerate(self._faults):
                if fault.matches(path, key_index, in_stream, on_wire):
                    if fault.count > 1:
                        self._faults[position] = replace(fault, count=fault.count - 1)
                    else:
                        del self._faults[position]
                    return replace(fault, count=1)
        return None

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """Snapshot of the faults still waiting to fire."""
        with self._lock:
            return list(self._faults)
