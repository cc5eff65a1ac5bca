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

__all__ = ["CallBudget"]


@dataclass
class CallBudget:
    retries_left: int
    deadline: Optional[float] = None  # the call's timeout (monotonic)
    retry_deadline: Optional[float] = None  # start + the retry-time budget (monotonic)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def time_left(self) -> float:
        """Seconds a retry may still wait (inf when unbounded)."""
        limits = [d for d in (self.deadline, self.retry_deadline) if d is not None]
        return min(limits) - self.clock() if limits else math.inf

    def wait_deadline(self) -> Optional[float]:
        """How long a re-send may wait (for a lease, for capacity): the
        sooner of the call's deadline and its retry budget."""
        limits = [d for d in (self.deadline, self.retry_deadline) if d is not None]
        return min(limits) if limits else None

    def http_timeout(self, connect: float, read: Optional[float]) -> tuple[float, Optional[float]]:
        """(connect, read) for the next attempt, cut to the time the call
        has left; LLMTimeoutError once its deadline has passed."""
        if self.deadline is None:
            return connect, read
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise LLMTimeoutError("the call's deadline passed before it could be sent", sent=False,
                                  deadline_passed=True)
        return min(connect, remaining), remaining if read is None else min(read, remaining)

    def spend(self) -> bool:
        """Take one re-send; False when none is left."""
        if self.retries_left <= 0:
            return False
        self.retries_left -= 1
        return True
