"""CallBudget: what one call may still spend on re-sends.

Created per call by the client and shared by everything that can re-send
it — the retry middleware (same key, after a backoff) and the pool's 429
requeue (possibly another key) — so each re-send counts once against
``max_retries`` and every wait must fit the call's time left.

Threading contract: a budget belongs to one call, which runs on one thread.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import LLMTimeoutError

__all__ = ["CallBudget", "cut_timeout", "DEFAULT_MAX_PAUSE"]

# The longest wait any server hint may impose (``retry-after``, the pause of
# a key after a 429): a longer or absurd hint (``1e9``, ``inf``) is cut to
# this, so one answer never takes a key out of service for long. An
# endpoint's ``max_pause`` setting overrides it.
DEFAULT_MAX_PAUSE = 60.0


@dataclass
class CallBudget:
    retries_left: int
    deadline: Optional[float] = None  # the call's timeout (monotonic)
    retry_deadline: Optional[float] = None  # start + the retry-time budget (monotonic)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def time_left(self) -> float:
        """Seconds a retry may still wait (inf when unbounded)."""
        until = self.wait_deadline()
        return math.inf if until is None else until - self.clock()

    def wait_deadline(self) -> Optional[float]:
        """How long a re-send may wait (for a lease, for capacity): the
        sooner of the call's deadline and its retry budget."""
        limits = [d for d in (self.deadline, self.retry_deadline) if d is not None]
        return min(limits) if limits else None

    def http_timeout(self, connect: float, read: Optional[float]) -> tuple[float, Optional[float]]:
        """(connect, read) for the next attempt: see :func:`cut_timeout`."""
        return cut_timeout(connect, read, self.deadline, self.clock)

    def spend(self) -> bool:
        """Take one re-send; False when none is left."""
        if self.retries_left <= 0:
            return False
        self.retries_left -= 1
        return True


def cut_timeout(connect: float, read: Optional[float], deadline: Optional[float],
                clock: Callable[[], float] = time.monotonic) -> tuple[float, Optional[float]]:
    """(connect, read) cut to the time left before ``deadline``;
    LLMTimeoutError once it has passed (nothing was sent: safe to say so)."""
    if deadline is None:
        return connect, read
    remaining = deadline - clock()
    if remaining <= 0:
        raise LLMTimeoutError("the call's deadline passed before it could be sent", sent=False,
                              deadline_passed=True)
    return min(connect, remaining), remaining if read is None else min(read, remaining)
