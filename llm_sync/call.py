"""What one call carries through the pipeline: its options, its context,
and the internal signal that sends it back to the pool.

``CallOptions`` holds the per-call overrides. ``UNSET`` means "use the
endpoint's setting", so ``None`` can mean what it says: ``timeout=None``
is no deadline, ``retry_budget=None`` no limit on time spent re-sending.

``CallContext`` is the per-pass state a key's middleware shares (a pass is
one trip through one key's chain: the first, or a requeue onto another
key). Its typed fields are what llm_sync itself sets; it is also a mutable
mapping, so user middleware keeps its own entries (``context["custom"]``)
and the seed's ``context.get("client_id")`` style keeps working.

Threading contract: options are frozen values; a context belongs to one
call, which runs on one thread (a stream's finishers run on whichever
thread ends it, after the call's own thread let go of it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, MutableMapping, Optional, Union

from .budget import CallBudget
from .errors import LLMError

__all__ = ["UNSET", "Unset", "CallOptions", "CallContext", "Requeue"]


class Unset:
    """The type of :data:`UNSET`: no per-call value, use the configured one."""

    _instance: Optional["Unset"] = None

    def __new__(cls) -> "Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class CallOptions:
    """Per-call settings that are not part of the request body."""

    timeout: Union[float, None, Unset] = UNSET
    max_retries: Union[int, Unset] = UNSET
    retry_budget: Union[float, None, Unset] = UNSET
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    extra_query: Mapping[str, Any] = field(default_factory=dict)
    extra_body: Mapping[str, Any] = field(default_factory=dict)


class Requeue(BaseException):
    """Internal: this pass ends, and the pipeline sends the call again
    through the pool (usually onto another key). Never reaches a caller.
    A BaseException (like GeneratorExit), so middleware written as
    ``except Exception: return fallback`` cannot swallow it.

    ``cause`` is the server's 429 (the key is now paused), or None when the
    pass found its key paused before sending anything. ``wait``: seconds
    the cause asked for, if it said.
    """

    def __init__(self, cause: Optional[LLMError], wait: Optional[float] = None) -> None:
        super().__init__(type(cause).__name__ if cause is not None else "key paused")
        self.cause = cause
        self.wait = wait


_TYPED = ("provider", "endpoint", "client_id", "model", "stream", "started", "attempt", "retries", "deadline",
          "budget", "pooled")


class CallContext(MutableMapping[str, Any]):
    """Per-pass state shared by one key's middleware (see module doc).

    Typed fields: ``endpoint`` (and ``provider``, the same name, as the
    seed called it), ``client_id`` of the key, ``model``, ``stream``,
    ``started`` (monotonic), ``attempt`` (1 on the first send of this
    pass), ``retries`` (re-sends so far), ``deadline`` and ``budget``.
    ``pooled``: the pipeline can requeue this call (False for a chain run
    on its own, e.g. in a unit test).
    """

    __slots__ = ("endpoint", "client_id", "model", "stream", "started", "attempt", "retries", "budget",
                 "pooled", "data")

    def __init__(self, *, endpoint: str, client_id: Optional[str], model: str, stream: bool,
                 budget: Optional[CallBudget] = None, pooled: bool = False,
                 started: Optional[float] = None) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.model = model
        self.stream = stream
        self.started = time.monotonic() if started is None else started
        self.attempt = 1
        self.retries = 0
        self.budget = budget
        self.pooled = pooled
        self.data: dict[str, Any] = {}

    @property
    def provider(self) -> str:
        return self.endpoint

    @property
    def deadline(self) -> Optional[float]:
        return self.budget.deadline if self.budget is not None else None

    # --- mapping view (typed fields first, then user entries) ------------
    def __getitem__(self, name: str) -> Any:
        if name in _TYPED:
            return getattr(self, name)
        return self.data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name in ("provider", "deadline"):
            raise KeyError(f"context[{name!r}] is derived and cannot be set")
        if name in _TYPED:
            setattr(self, name, value)
        else:
            self.data[name] = value

    def __delitem__(self, name: str) -> None:
        if name in _TYPED:
            raise KeyError(f"context[{name!r}] is set by llm_sync and cannot be deleted")
        del self.data[name]

    def __iter__(self) -> Iterator[str]:
        yield from _TYPED
        yield from self.data

    def __len__(self) -> int:
        return len(_TYPED) + len(self.data)

    def __contains__(self, name: object) -> bool:
        return name in _TYPED or name in self.data

    def __repr__(self) -> str:
        return (f"<CallContext {self.endpoint} {self.client_id} model={self.model!r} attempt={self.attempt}"
                f"{' stream' if self.stream else ''}>")
