"""The middleware plug-in point and the chain that runs it.

A chain is an onion: the first middleware added is the outermost. For each
call, ``process_request`` runs outer → inner, the provider sends, then
``process_response`` runs inner → outer (``process_error`` likewise when the
call fails). Middleware that must wrap the whole call (retries, rate-limit
admission) overrides :meth:`Middleware.handle` instead.

For streamed calls ``call_next`` returns a :class:`Stream`; the default
``handle`` defers ``process_response`` / ``process_error`` until the stream
ends, so they run exactly once with the full response.

Threading contract: one chain belongs to one key-bound client and is shared
by every thread that calls through that key, so middleware must be
thread-safe; per-call state belongs in ``context``. A pass that the
pipeline requeues onto another key leaves the chain as an internal
``Requeue`` exception, which ``handle`` lets through without calling
``process_error``: the call is not over. ``add``/``remove`` may be
called while calls run: a call uses the chain as it was when it started.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, MutableMapping, Optional, Union

from ..errors import LLMError, LLMValidationError
from ..models import LLMResponse
from ..providers.base import LLMRequest
from ..streaming import Stream

__all__ = ["Middleware", "MiddlewareChain", "CallNext", "Result", "Context"]

Result = Union[LLMResponse, Stream]
# Per-call state: a :class:`~llm_sync.call.CallContext` in the pipeline (a
# mapping with typed fields); any mutable mapping when a chain runs alone.
Context = MutableMapping[str, Any]
CallNext = Callable[[LLMRequest], Result]


class Middleware:
    """Base class: override any of the three hooks (all optional)."""

    def process_request(self, request: LLMRequest, context: Context) -> LLMRequest:
        return request

    def process_response(self, response: LLMResponse, context: Context) -> LLMResponse:
        return response

    def process_error(self, error: LLMError, context: Context) -> Optional[LLMResponse]:
        """Observe a failure. Return a response to recover; None re-raises."""
        return None

    def handle(self, request: LLMRequest, context: Context, call_next: CallNext) -> Result:
        request = self.process_request(request, context) or request
        try:
            result = call_next(request)
        except LLMError as error:
            recovered = self.process_error(error, context)
            if recovered is None:
                raise
            return recovered
        if isinstance(result, Stream):
            result.add_finisher(lambda response, error: self._finish_stream(response, error, context))
            return result
        return self.process_response(result, context) or result

    def _finish_stream(self, response: Optional[LLMResponse], error: Optional[LLMError],
                       context: Context) -> Optional[LLMResponse]:
        if error is not None:
            self.process_error(error, context)
            return None
        assert response is not None
        return self.process_response(response, context) or response

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class MiddlewareChain:
    """An ordered list of middleware around one key's provider calls."""

    def __init__(self, middleware: Optional[list[Middleware]] = None) -> None:
        self._lock = threading.Lock()  # guards _items; calls read a snapshot
        self._items: tuple[Middleware, ...] = tuple(middleware or ())

    def add(self, middleware: Middleware, *, index: Optional[int] = None) -> Middleware:
        """Append (innermost), or insert at ``index`` (0 = outermost)."""
        if not isinstance(middleware, Middleware):
            raise LLMValidationError(
                f"{type(middleware).__name__} is not middleware: subclass llm_sync.middleware.base.Middleware"
            )
        with self._lock:
            items = list(self._items)
            items.insert(len(items) if index is None else index, middleware)
            self._items = tuple(items)
        return middleware

    def remove(self, middleware: Union[Middleware, type]) -> bool:
        """Remove an instance, or every instance of a class. True if any."""
        with self._lock:
            if isinstance(middleware, type):
                kept = tuple(m for m in self._items if not isinstance(m, middleware))
            else:
                kept = tuple(m for m in self._items if m is not middleware)
            removed = len(kept) != len(self._items)
            self._items = kept
        return removed

    def after_fork(self) -> None:
        """In a forked child: fresh locks here and in any middleware that
        keeps one (a lock held by another thread at fork would never open)."""
        self._lock = threading.Lock()
        for middleware in self._items:
            hook = getattr(middleware, "after_fork", None)
            if callable(hook):
                hook()

    def get_middleware(self, cls: type) -> Optional[Any]:
        """The first middleware that is an instance of ``cls``, or None."""
        return next((m for m in self._items if isinstance(m, cls)), None)

    def __iter__(self) -> Iterator[Middleware]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<MiddlewareChain [{', '.join(type(m).__name__ for m in self._items)}]>"

    def run(self, request: LLMRequest, context: Context, terminal: CallNext) -> Result:
        """Run ``request`` through every middleware, then ``terminal``."""
        items = self._items

        def call(index: int, req: LLMRequest) -> Result:
            if index == len(items):
                return terminal(req)
            return items[index].handle(req, context, lambda r: call(index + 1, r))

        return call(0, request)
