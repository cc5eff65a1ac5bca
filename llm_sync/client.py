"""LLMClient: the calls users make — complete, stream, batch, submit.

Threading contract: one LLMClient is shared freely between threads; every
call leases its own Session and key from the pool, so calls never share
mutable state. Argument checking happens here, before any network I/O.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from .call import UNSET, CallOptions, Unset
from .errors import LLMClosedError, LLMValidationError
from .models import LLMResponse, MessagesInput, normalize_messages
from .pipeline import Pipeline
from .pool import KeyPool
from .providers.base import LLMRequest, Provider, with_query
from .sendable import HEADER_NAME, header_value_problem, utf8_problem
from .streaming import Stream

__all__ = ["LLMClient"]

# Body fields the client sets itself; passing them as extras is a mistake.
_RESERVED = frozenset({"messages", "stream", "stream_options"})
Progress = Union[bool, Callable[[int, int], Any]]
# How often complete_batch's waiting thread looks up (for a Ctrl-C).
_BATCH_POLL = 0.1


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
                 temperature: Optional[float] = None, system: Optional[str] = None,
                 stop: Union[str, Sequence[str], None] = None, timeout: Union[float, None, Unset] = UNSET,
                 max_retries: Union[int, Unset] = UNSET, retry_budget: Union[float, None, Unset] = UNSET,
                 extra_headers: Optional[Mapping[str, str]] = None, extra_query: Optional[Mapping[str, Any]] = None,
                 extra_body: Optional[Mapping[str, Any]] = None, **provider_extras: Any) -> LLMResponse:
        """One answer. ``timeout`` bounds the whole call (``None``: no
        deadline; unset: the endpoint's ``timeout.total``). ``extra_*`` go
        to the request's headers, query string and JSON body as in the
        official SDKs; other unknown keywords go into the body."""
        request, options = self._prepare(messages, False, dict(
            model=model, max_tokens=max_tokens, temperature=temperature, system=system, stop=stop,
            timeout=timeout, max_retries=max_retries, retry_budget=retry_budget, extra_headers=extra_headers,
            extra_query=extra_query, extra_body=extra_body, **provider_extras))
        return self._pipeline.complete(request, options)

    def stream(self, messages: MessagesInput, *, model: Optional[str] = None, max_tokens: int = 1024,
               temperature: Optional[float] = None, system: Optional[str] = None,
               stop: Union[str, Sequence[str], None] = None, timeout: Union[float, None, Unset] = UNSET,
               max_retries: Union[int, Unset] = UNSET, retry_budget: Union[float, None, Unset] = UNSET,
               extra_headers: Optional[Mapping[str, str]] = None, extra_query: Optional[Mapping[str, Any]] = None,
               extra_body: Optional[Mapping[str, Any]] = None, **provider_extras: Any) -> Stream:
        """Open a streamed call. The Stream iterates text chunks, is a
        context manager, and has ``.response`` once read to the end."""
        request, options = self._prepare(messages, True, dict(
            model=model, max_tokens=max_tokens, temperature=temperature, system=system, stop=stop,
            timeout=timeout, max_retries=max_retries, retry_budget=retry_budget, extra_headers=extra_headers,
            extra_query=extra_query, extra_body=extra_body, **provider_extras))
        return self._pipeline.stream(request, options)

    def stream_complete(self, messages: MessagesInput, **kwargs: Any) -> Iterator[str]:
        """Text chunks as they arrive. Breaking out of the loop, ``close()``
        or garbage collection returns the lease and connection at once."""
        return self.stream(messages, **kwargs)

    def count_tokens(self, messages: MessagesInput, model: Optional[str] = None, *,
                     system: Optional[str] = None) -> int:
        """The provider's native count where it has one, else an estimate."""
        request, options = self._prepare(messages, False, {"model": model, "max_tokens": 1, "system": system})
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

        Ctrl-C (KeyboardInterrupt), or any exception raised by ``progress``,
        stops the batch at once: items not started are cancelled, the
        exception is raised within a fraction of a second, and calls
        already in flight finish (or fail) on their own in the background.
        """
        items = list(items)
        for index, item in enumerate(items):
            try:
                self._check(item, kwargs)
            except LLMValidationError as exc:
                raise LLMValidationError(f"items[{index}]: {exc.message}") from None
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise LLMValidationError(f"max_workers must be a positive integer, got {_shown(max_workers)}")
        if not items:
            return []
        workers = min(len(items), max_workers or self._pool.max_size, self._pool.max_size)
        report = _progress_reporter(progress, len(items))
        results: list[Any] = [None] * len(items)
        done = 0
        done_lock = threading.Lock()
        stopped = threading.Event()  # the batch was interrupted: start nothing more

        def run(index: int) -> None:
            nonlocal done
            if stopped.is_set():
                return
            try:
                results[index] = self.complete(items[index], **kwargs)
            except Exception as exc:  # kept in place: a batch never drops a result
                results[index] = exc
            with done_lock:
                done += 1
                try:
                    report(done)
                except BaseException:
                    stopped.set()  # before this worker takes the next item
                    raise

        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-sync-batch")
        try:
            pending = {executor.submit(run, i) for i in range(len(items))}
            while pending:
                # Short waits: a Ctrl-C is seen between them even where the
                # signal does not interrupt a blocked lock acquire.
                finished, pending = wait(pending, timeout=_BATCH_POLL, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()  # only the progress callback can raise here
        except BaseException:
            stopped.set()
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
        report(len(items), final=True)
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
            timeout=_check_timeout(call["timeout"]),
            max_retries=_check_max_retries(call["max_retries"]),
            retry_budget=_check_retry_budget(call["retry_budget"]),
            extra_headers=_check_headers(call["extra_headers"], self._provider),
            extra_query=_check_query(call["extra_query"]),
            extra_body=_check_body(call["extra_body"], "extra_body"),
        )
        request = self._request(messages, call["model"], call["max_tokens"], call["temperature"], call["system"],
                                call["stop"], stream, kwargs)
        _check_body(request.extras, "provider extras")
        request.headers = dict(options.extra_headers)
        request.extra_query = dict(options.extra_query)
        request.extra_body = dict(options.extra_body)
        return request, options

    def _request(self, messages: MessagesInput, model: Optional[str], max_tokens: Any, temperature: Any,
                 system: Any, stop: Any, stream: bool, extras: dict[str, Any]) -> LLMRequest:
        """Validate every argument and build the request (no I/O)."""
        model = self.model if model is None else model
        if not isinstance(model, str) or not model.strip() or _CONTROL.search(model) or utf8_problem(model):
            raise LLMValidationError(f"model must be a non-empty, single-line string, got {_shown(model)}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            raise LLMValidationError(f"max_tokens must be a positive integer up to {MAX_TOKENS_LIMIT}, "
                                     f"got {_shown(max_tokens)}")
        if temperature is not None:
            low, high = self._provider.temperature_range
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                    or not low <= temperature <= high:
                raise LLMValidationError(
                    f"temperature must be a number from {low} to {high} for {self.provider}, got {_shown(temperature)}"
                )
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise LLMValidationError(f"system must be a non-empty string, got {_shown(system)}")
        if system is not None and utf8_problem(system):
            raise LLMValidationError(f"system {utf8_problem(system)}")
        stops = _stop_list(stop)
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
    "timeout": UNSET, "max_retries": UNSET, "retry_budget": UNSET,
    "extra_headers": None, "extra_query": None, "extra_body": None,
}


# Far above any model's output limit, and what a server's 32-bit field holds.
MAX_TOKENS_LIMIT = 2**31 - 1


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message: clipped, and never failing (an int of
    5,000 digits has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        return f"an {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _seconds(value: Any) -> Optional[float]:
    """``value`` as positive, finite seconds; None if it is not that (an
    int too large for a float included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if 0 < seconds < math.inf else None


def _check_timeout(timeout: Any) -> Union[float, None, Unset]:
    if timeout is UNSET or timeout is None:
        return timeout
    seconds = _seconds(timeout)
    if seconds is None:
        raise LLMValidationError(
            f"timeout must be a positive, finite number of seconds (or None), got {_shown(timeout)}")
    return seconds


def _check_max_retries(value: Any) -> Union[int, Unset]:
    if value is UNSET:
        return value
    if value is None:  # the seed's habit: None means "the configured number"
        return UNSET
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LLMValidationError(f"max_retries must be a non-negative integer, got {_shown(value)}")
    return value


def _check_retry_budget(value: Any) -> Union[float, None, Unset]:
    if value is UNSET or value is None:
        return value
    seconds = _seconds(value)
    if seconds is None:
        raise LLMValidationError(f"retry_budget must be a positive number of seconds (or None), got {_shown(value)}")
    return seconds


def _check_headers(headers: Any, provider: Provider) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise LLMValidationError(f"extra_headers must be a mapping of names to strings, got {type(headers).__name__}")
    auth = _KEY_HEADERS | {name.lower() for name in provider.auth_headers("")}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise LLMValidationError(f"extra_headers: {_shown(name)} is not a valid header name")
        if name.lower() in auth:
            raise LLMValidationError(f"extra_headers: {name} carries the API key; configure keys in api_keys")
        problem = header_value_problem(value)
        if problem:
            raise LLMValidationError(f"extra_headers: the value of {name} {problem}")
        out[name] = value
    return out


def _check_query(query: Any) -> dict[str, Any]:
    if query is None:
        return {}
    if not isinstance(query, Mapping) or not all(isinstance(k, str) and k for k in query):
        raise LLMValidationError("extra_query must be a mapping with non-empty string keys")
    for name, value in query.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            raise LLMValidationError(f"extra_query: {_shown(name)} must be a string or number (or a list of them)")
    try:  # as the provider will, on every attempt
        with_query("", query).encode("ascii")
    except (ValueError, UnicodeError) as exc:  # a lone surrogate, an int too long to print
        raise LLMValidationError(f"extra_query cannot be put in a URL: {type(exc).__name__}") from None
    return dict(query)


def _check_body(body: Any, what: str) -> dict[str, Any]:
    """A JSON object the server can read: refused now, never sent broken."""
    if body is None:
        return {}
    if not isinstance(body, Mapping) or not all(isinstance(k, str) for k in body):
        raise LLMValidationError(f"{what} must be a mapping with string keys")
    if what == "extra_body" and "stream" in body:
        raise LLMValidationError("extra_body cannot set stream: use stream() or stream_complete()")
    try:  # ensure_ascii=False: a lone surrogate fails here, not as an escape the server refuses
        json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise LLMValidationError(f"{what} cannot be sent as JSON: {type(exc).__name__}") from None
    return dict(body)


# Headers that carry credentials: keys belong in api_keys, where they are
# kept secret, never in per-call headers that middleware and logs can see.
_KEY_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
# A model name goes into logs and metric labels: one line, no control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _stop_list(stop: Any) -> Optional[list[str]]:
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise LLMValidationError(f"stop must be a string or a list of non-empty strings, got {_shown(stop)}")
    for index, text in enumerate(stops):
        if utf8_problem(text):
            raise LLMValidationError(f"stop[{index}] {utf8_problem(text)}")
    return list(stops) or None


def _progress_reporter(progress: Progress, total: int) -> Callable[..., None]:
    """``progress=True`` draws a bar on a terminal (stderr); a callable gets
    ``(done, total)`` after each item."""
    if callable(progress):
        return lambda done, final=False: None if final else progress(done, total)
    if not progress or not sys.stderr.isatty():
        return lambda done, final=False: None
    lock = threading.Lock()

    def draw(done: int, final: bool = False) -> None:
        width = 30
        filled = width * done // total
        with lock:
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return draw
