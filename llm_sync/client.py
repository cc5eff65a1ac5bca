"""LLMClient: the calls users make — complete, stream, batch, submit.

Threading contract: one LLMClient is shared freely between threads; every
call leases its own Session and key from the pool, so calls never share
mutable state. Argument checking happens here, before any network I/O.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from pydantic import BaseModel

from .arguments import (
    CONTROL,
    MAX_TOKENS_LIMIT,
    check_body,
    check_headers,
    check_max_retries,
    check_query,
    check_retry_budget,
    check_system,
    check_timeout,
    check_tools,
    shown,
    stop_list,
)
from .call import UNSET, CallOptions, Unset
from .cancel import CancelScope
from .content import ContentBlock
from .errors import LLMClosedError, LLMValidationError
from .models import LLMResponse, MessagesInput, normalize_messages
from .pipeline import Pipeline
from .pool import KeyPool
from .progress import Progress, reporter
from .providers.base import LLMRequest
from .sendable import utf8_problem
from .streaming import Stream
from .structured import complete_structured
from .tools import ToolsInput

__all__ = ["LLMClient"]

# Body fields the client sets itself; passing them as extras is a mistake.
_RESERVED = frozenset({"messages", "stream", "stream_options"})
# A system prompt: text, or text blocks (typed or native dicts, cache_control kept).
SystemInput = Union[str, Sequence[Union[ContentBlock, dict[str, Any]]], None]
# How often complete_batch's waiting thread looks up (for a Ctrl-C).
_BATCH_POLL = 0.1
# After an interrupt, how long complete_batch waits for its cut calls to end
# (and then joins its threads): calls waiting for rate-limit capacity or a
# lease, or asleep in a retry backoff, see the cancel and end (LLMClosedError)
# well within it.
_CANCEL_GRACE = 1.0
BATCH_THREAD_PREFIX = "llm-sync-batch"


class WorkerThreads:
    """The threads behind ``submit``: one set per provider, shared by all
    of its clients (so N models never mean N × max_size threads). Created
    on first use; ``close`` lets what was submitted run (after the pool's
    close it fails fast with LLMClosedError), then stops them.

    Threading contract: any thread may submit or close; ``_lock`` guards
    ``_executor``, ``_closed`` and ``_pid``. In a forked child the parent's
    threads are gone and its lock may have been held at fork time: the
    child gets a new lock (once, however many threads ask) and its own
    executor; ``close`` there never touches the parent's."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closed = False
        self._pid = os.getpid()
        self._fork_locks: dict[int, threading.Lock] = {}
        # Each worker thread notes which executor it belongs to, so that a
        # close() run by one of them (a task, a Future's done-callback)
        # does not wait for itself to finish.
        self._mine = threading.local()
        self._token: Optional[object] = None

    def _enter(self, token: object) -> None:
        self._mine.token = token

    def _own_lock(self) -> threading.Lock:
        pid = os.getpid()
        if self._pid != pid:  # threads and held locks do not survive fork()
            with self._fork_locks.setdefault(pid, threading.Lock()):
                if self._pid != pid:
                    self._lock, self._executor = threading.Lock(), None
                    self._pid = pid
        return self._lock

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "Future[Any]":
        with self._own_lock():
            if self._closed:
                raise LLMClosedError(f"the {self._name} client is closed")
            if self._executor is None:
                self._token = object()
                self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix=f"llm-sync-{self._name}",
                                                    initializer=self._enter, initargs=(self._token,))
            return self._executor.submit(fn, *args, **kwargs)

    def close(self) -> None:
        if self._pid != os.getpid():  # never used in this child: nothing here is ours
            self._closed = True
            return
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            token, self._token = self._token, None
        if executor is not None:
            # From one of its own threads, waiting would join that very
            # thread: the others still finish what was submitted.
            own_thread = token is not None and getattr(self._mine, "token", None) is token
            executor.shutdown(wait=not own_thread)


class LLMClient:
    """The calls users make, for one endpoint and default model. A thin
    front: it checks arguments and hands the call to the endpoint's
    :class:`~llm_sync.pipeline.Pipeline`."""

    def __init__(self, pipeline: Pipeline, model: str, workers: Optional[WorkerThreads] = None) -> None:
        self._pipeline = pipeline
        self._provider = pipeline.provider
        self._pool = pipeline.pool
        self._workers = workers or WorkerThreads(pipeline.pool.max_size, pipeline.provider.endpoint)
        self.model = model

    def __repr__(self) -> str:
        return f"<LLMClient {self._provider.endpoint} model={self.model!r}>"

    @property
    def provider(self) -> str:
        """The endpoint's name."""
        return self._provider.endpoint

    @property
    def pool(self) -> KeyPool:
        return self._pool

    # --- single calls ---------------------------------------------------
    def complete(self, messages: MessagesInput, *, model: Optional[str] = None, max_tokens: int = 1024,
                 temperature: Optional[float] = None, system: SystemInput = None,
                 stop: Union[str, Sequence[str], None] = None, tools: Optional[ToolsInput] = None,
                 tool_choice: Any = None, response_model: Optional[type[BaseModel]] = None,
                 timeout: Union[float, None, Unset] = UNSET,
                 max_retries: Union[int, Unset] = UNSET, retry_budget: Union[float, None, Unset] = UNSET,
                 extra_headers: Optional[Mapping[str, str]] = None, extra_query: Optional[Mapping[str, Any]] = None,
                 extra_body: Optional[Mapping[str, Any]] = None, **provider_extras: Any) -> LLMResponse:
        """One answer. ``timeout`` bounds the whole call (``None``: no
        deadline; unset: the endpoint's ``timeout.total``). ``extra_*`` go
        to the request's headers, query string and JSON body as in the
        official SDKs; other unknown keywords go into the body.

        ``tools`` (Tool, pydantic model class or native dict) and
        ``tool_choice`` (``"auto"``, ``"required"``, ``"none"`` or a tool
        name) offer tools; calls come back as ``response.tool_calls``.
        ``response_model`` (a pydantic model class) makes ``.parsed`` an
        instance of it, with one repair attempt on an invalid answer (a
        second call within the same ``timeout``), then
        LLMStructuredOutputError (see :mod:`llm_sync.structured`)."""
        request, options = self._prepare(messages, False, dict(
            model=model, max_tokens=max_tokens, temperature=temperature, system=system, stop=stop,
            tools=tools, tool_choice=tool_choice, response_model=response_model,
            timeout=timeout, max_retries=max_retries, retry_budget=retry_budget, extra_headers=extra_headers,
            extra_query=extra_query, extra_body=extra_body, **provider_extras))
        if response_model is None:
            return self._pipeline.complete(request, options)
        total = self._pipeline.total_timeout if isinstance(options.timeout, Unset) else options.timeout
        return complete_structured(self._pipeline.complete, request, options, response_model, total)

    def stream(self, messages: MessagesInput, *, model: Optional[str] = None, max_tokens: int = 1024,
               temperature: Optional[float] = None, system: SystemInput = None,
               stop: Union[str, Sequence[str], None] = None, tools: Optional[ToolsInput] = None,
               tool_choice: Any = None, timeout: Union[float, None, Unset] = UNSET,
               max_retries: Union[int, Unset] = UNSET, retry_budget: Union[float, None, Unset] = UNSET,
               extra_headers: Optional[Mapping[str, str]] = None, extra_query: Optional[Mapping[str, Any]] = None,
               extra_body: Optional[Mapping[str, Any]] = None, **provider_extras: Any) -> Stream:
        """Open a streamed call. The Stream iterates text chunks (or typed
        events: ``events()``), is a context manager, and has ``.response``
        (tool calls, refusal and thinking included) once read to the end.
        ``response_model`` is refused here: use ``complete``."""
        request, options = self._prepare(messages, True, dict(
            model=model, max_tokens=max_tokens, temperature=temperature, system=system, stop=stop,
            tools=tools, tool_choice=tool_choice,
            timeout=timeout, max_retries=max_retries, retry_budget=retry_budget, extra_headers=extra_headers,
            extra_query=extra_query, extra_body=extra_body, **provider_extras))
        return self._pipeline.stream(request, options)

    def stream_complete(self, messages: MessagesInput, **kwargs: Any) -> Iterator[str]:
        """Text chunks as they arrive. Breaking out of the loop, ``close()``
        or garbage collection returns the lease and connection at once."""
        return self.stream(messages, **kwargs)

    def count_tokens(self, messages: MessagesInput, model: Optional[str] = None, *,
                     system: SystemInput = None, tools: Optional[ToolsInput] = None) -> int:
        """The provider's native count where it has one (an endpoint that
        answers it with 404 gets the estimate), else a local estimate."""
        request, options = self._prepare(messages, False, {"model": model, "max_tokens": 1, "system": system,
                                                           "tools": tools})
        return self._pipeline.count_tokens(request, options)

    # --- many calls -----------------------------------------------------
    def submit(self, messages: MessagesInput, **kwargs: Any) -> "Future[LLMResponse]":
        """Run ``complete`` on the client's worker threads; bad arguments
        raise here, at once, not inside the Future."""
        self._check(messages, kwargs)
        return self._workers.submit(self.complete, messages, **kwargs)

    def complete_batch(self, items: Sequence[MessagesInput], *, max_workers: Optional[int] = None,
                       return_exceptions: bool = False, progress: Progress = False,
                       **kwargs: Any) -> list[Any]:
        """``complete`` for every item on a ThreadPoolExecutor; results in
        input order. With ``return_exceptions`` a failed item is its
        exception in place; otherwise the first failure is raised after the
        batch settles (nothing in flight is abandoned).

        Workers are capped at the pool's size (``pool.max_size``): more
        would only queue for a lease, and an item must never fail merely
        because the batch has more workers than leases.

        ``progress=True`` draws a bar on stderr (tqdm with the ``[progress]``
        extra, else a plain line); a callable gets ``(done, total)``.

        Ctrl-C (KeyboardInterrupt), or any exception raised by ``progress``,
        stops the batch at once: items not started are cancelled, calls in
        flight are cut (see :mod:`llm_sync.cancel`: they fail, never
        retried, and their Sessions go back to the pool), the batch's
        threads are joined, and the exception is raised within about a
        second. A call caught waiting for rate-limit capacity or a lease, or
        sleeping in a retry backoff, ends too, without sending again.
        """
        items = list(items)
        for index, item in enumerate(items):
            try:
                self._check(item, kwargs)
            except LLMValidationError as exc:
                raise LLMValidationError(f"items[{index}]: {exc.message}") from None
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise LLMValidationError(f"max_workers must be a positive integer, got {shown(max_workers)}")
        if not items:
            return []
        workers = min(len(items), max_workers or self._pool.max_size, self._pool.max_size)
        report = reporter(progress, len(items), desc=f"{self.provider} batch")
        results: list[Any] = [None] * len(items)
        done = 0
        done_lock = threading.Lock()
        stopped = threading.Event()  # the batch was interrupted: start nothing more
        scope = CancelScope()  # what the batch's threads have on the wire, to cut on interrupt

        def run(index: int) -> None:
            nonlocal done
            if stopped.is_set():
                return
            with scope.entered():
                try:
                    results[index] = self.complete(items[index], **kwargs)
                except Exception as exc:  # kept in place: a batch never drops a result
                    results[index] = exc
            with done_lock:
                done += 1
                try:
                    report.update(done)
                except BaseException:
                    stopped.set()  # before this worker takes the next item
                    raise

        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=BATCH_THREAD_PREFIX)
        pending: set["Future[None]"] = set()
        try:
            pending = {executor.submit(run, i) for i in range(len(items))}
            while pending:
                # Short waits: a Ctrl-C is seen between them even where the
                # signal does not interrupt a blocked lock acquire.
                finished, pending = _wait(pending, timeout=_BATCH_POLL, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()  # only the progress callback can raise here
        except BaseException:
            stopped.set()
            scope.cancel()  # calls in flight are cut and fail at once (never retried)
            self._pipeline.limiter.wake()  # its calls waiting for capacity see the cancel (the pool's look themselves)
            executor.shutdown(wait=False, cancel_futures=True)
            _, running = _wait({f for f in pending if not f.cancelled()}, timeout=_CANCEL_GRACE)
            if not running:
                executor.shutdown(wait=True)  # their threads are gone before we return
            report.close(interrupted=True)
            raise
        executor.shutdown(wait=True)
        report.close()
        if not return_exceptions:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    # --- internals ------------------------------------------------------
    def _check(self, messages: MessagesInput, kwargs: dict[str, Any]) -> None:
        """Validate a ``complete`` call's arguments without making it."""
        self._prepare(messages, False, dict(kwargs))

    def _prepare(self, messages: MessagesInput, stream: bool,
                 kwargs: dict[str, Any]) -> tuple[LLMRequest, CallOptions]:
        """Validate every argument; build the request and options (no I/O)."""
        call = {name: kwargs.pop(name, default) for name, default in _CALL_DEFAULTS.items()}
        if "headers" in kwargs:
            raise LLMValidationError("headers= is not a body field: pass HTTP headers as extra_headers={...}")
        options = CallOptions(
            timeout=check_timeout(call["timeout"]),
            max_retries=check_max_retries(call["max_retries"]),
            retry_budget=check_retry_budget(call["retry_budget"]),
            extra_headers=check_headers(call["extra_headers"], self._provider),
            extra_query=check_query(call["extra_query"]),
            extra_body=check_body(call["extra_body"], "extra_body"),
        )
        request = self._request(messages, call["model"], call["max_tokens"], call["temperature"], call["system"],
                                call["stop"], stream, kwargs)
        check_body(request.extras, "provider extras")
        request.tools, request.tool_choice, request.response_schema = check_tools(
            call["tools"], call["tool_choice"], call["response_model"], stream,
            [*request.extras, *options.extra_body])
        request.headers = dict(options.extra_headers)
        request.extra_query = dict(options.extra_query)
        request.extra_body = dict(options.extra_body)
        return request, options

    def _request(self, messages: MessagesInput, model: Optional[str], max_tokens: Any, temperature: Any,
                 system: Any, stop: Any, stream: bool, extras: dict[str, Any]) -> LLMRequest:
        """Validate every argument and build the request (no I/O)."""
        model = self.model if model is None else model
        if not isinstance(model, str) or not model.strip() or CONTROL.search(model) or utf8_problem(model):
            raise LLMValidationError(f"model must be a non-empty, single-line string, got {shown(model)}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            raise LLMValidationError(f"max_tokens must be a positive integer up to {MAX_TOKENS_LIMIT}, "
                                     f"got {shown(max_tokens)}")
        if temperature is not None:
            low, high = self._provider.temperature_range
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                    or not low <= temperature <= high:
                raise LLMValidationError(
                    f"temperature must be a number from {low} to {high} for {self.provider}, got {shown(temperature)}"
                )
        system = check_system(system)
        stops = stop_list(stop)
        bad = _RESERVED & extras.keys() | ({"model"} & extras.keys())
        if bad:
            raise LLMValidationError(f"{', '.join(sorted(bad))} cannot be passed as provider extras")
        return LLMRequest(
            messages=normalize_messages(messages),
            model=model,
            max_tokens=max_tokens,
            temperature=None if temperature is None else float(temperature),
            system=system,
            stop=stops,
            stream=stream,
            extras=extras,
        )

# Arguments of a call that are not part of the request body, with defaults.
_CALL_DEFAULTS: dict[str, Any] = {
    "model": None, "max_tokens": 1024, "temperature": None, "system": None, "stop": None,
    "tools": None, "tool_choice": None, "response_model": None,
    "timeout": UNSET, "max_retries": UNSET, "retry_budget": UNSET,
    "extra_headers": None, "extra_query": None, "extra_body": None,
}

