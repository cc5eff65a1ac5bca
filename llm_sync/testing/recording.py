"""What the simulator remembers about each request it answered.

Tests assert on traffic (how many retries, which key, which body) without
ever seeing a key: only its index in ``Simulator.keys`` is kept, and the
header values carrying keys are replaced by ``"***"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One answered request.

    ``key_id`` is the index of the presented key in ``Simulator.keys`` (None if
    missing or unknown); ``headers`` has lower-cased names with key-bearing
    values redacted; ``body`` is the parsed JSON (None if absent or invalid);
    ``status`` is the status sent (None when the connection was dropped
    without an answer).
    """

    path: str
    key_id: int | None
    headers: dict[str, str]
    body: Any
    status: int | None
    method: str = "POST"
