"""What the simulator's HTTP layer needs of the objects around it.

The request plumbing (:mod:`.exchange`, :mod:`.handler`) and the endpoint
simulations (:mod:`.anthropic_api`, :mod:`.openai_api`) sit *below*
:class:`~llm_sync.testing.simulator.Simulator`: the simulator owns a server,
the server hands requests to handlers.  So the lower layers describe the
simulator (and the request handler) structurally here instead of importing
the modules that define them, which would close an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from io import BufferedIOBase
from typing import Any, Protocol

from .cache import PromptCache
from .faults import FaultQueue
from .limits import KeyLimiter
from .recording import RecordedRequest

__all__ = ["ExchangeHandler", "SimulatorState", "SimulatorServer"]


class SimulatorState(Protocol):
    """The part of :class:`~llm_sync.testing.simulator.Simulator` that serving a request uses."""

    @property
    def keys(self) -> tuple[str, ...]: ...

    @property
    def path_prefix(self) -> str: ...

    @property
    def latency(self) -> float: ...

    @property
    def organization_prefix(self) -> str: ...

    @property
    def _faults(self) -> FaultQueue: ...

    @property
    def _wall_clock(self) -> Callable[[], float]: ...

    @property
    def _prompt_cache(self) -> PromptCache: ...

    def _bad_json_once(self, prompt: str) -> bool: ...

    def _next_number(self) -> int: ...

    def _record(self, item: RecordedRequest) -> None: ...

    def _limiter(self, key_index: int, model: str) -> KeyLimiter: ...

    def _scope_name(self, key_index: int) -> str: ...

    def _reply(self, messages: list[dict[str, Any]]) -> str: ...


class SimulatorServer(Protocol):
    """A server that knows the simulator it serves for."""

    @property
    def simulator(self) -> SimulatorState: ...


class ExchangeHandler(Protocol):
    """The part of the request handler an :class:`~.exchange.Exchange` answers through."""

    close_connection: bool

    @property
    def server(self) -> SimulatorServer: ...

    @property
    def headers(self) -> Message: ...

    @property
    def wfile(self) -> BufferedIOBase: ...

    def send_response(self, code: int, message: str | None = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...
