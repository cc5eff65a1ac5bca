"""LLMClient: the calls users make — complete, stream, batch, submit.

Threading contract: one LLMClient is shared freely between threads; every
call leases its own Session and key from the pool, so calls never share
mutable state. Argument checking happens here, before any network I/O.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar, Union

from .budget import CallBudget, cut_timeout
from .config import ProviderConfig
from .errors import LLMError, LLMRateLimitError, LLMValidationError
from .models import LLMResponse, MessagesInput, normalize_messages
from .pool import KeyPool, Lease
from .providers.base import LLMRequest, Provider
from .ratelimit.limiter import Cost
from .streaming import Stream
from .tokens import estimate_tokens

__all__ = ["LLMClient"]

# Body fields the client sets itself; passing them as extras is a mistake.
_RESERVED = frozenset({"messages", "stream", "stream_options"})
Progress = Union[bool, Callable[[int, int], Any]]
HTTPTimeout = tuple[float, Optional[float]]
_T = TypeVar("_T")


class WorkerThreads:
    """The threads behind ``submit``: one set per provider, shared by all
    of its clients (so N models never mean N × max_size threads). Created
    on first use; ``close`` runs what was submitted, then stops them."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()  # guards _executor, _closed, _pid
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closed = False
        self._pid = os.getpid()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "Future[Any]":
        with self._lock:
            if self._closed:
                raise LLMError(f"the {self._name} client is closed")
            if self._pid != os.getpid():  # threads do not survive fork()
                self._executor, self._pid = None, os.getpid()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix=f"llm-sync-{self._name}")
            return self._executor.submit(fn, *args, **kwargs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class LLMClient:
    def __init__(self, pool: KeyPool, provider: Provider, model: str, settings: ProviderConfig,
                 workers: Optional[WorkerThreads] = None) -> None:
        self._pool = pool
        self._provider = provider
        self._workers = workers or WorkerThreads(pool.max_size, provider.endpoint)
        self.model = model
        self._timeout = settings.timeout
        self._base_timeout: HTTPTimeout = (settings.timeout.connect, settings.timeout.read)
        self._native_counting = settings.token_counting == "native" and _has_native_counting(provider)
        # Every re-send of a call (a retry, or a 429 requeued to the pool)
        # draws on one budget of max_retries and retry_budget seconds.
        self._max_retries = settings.max_retries
        self._retry_budget = settings.retry_budget

    def __repr__(self) -> str:
        return f"<LLMClient {self._provider.endpoint} model={self.model!r}>"

    @property
    def provider(self) -> str:
        return self._provider.endpoint

    @property
    def pool(self) -> KeyPool:
        return self._pool

    # --- single calls ---------------------------------------------------
    def complete(self, messages: MessagesInput, *, model: Optional[str] = None, max_tokens: int = 1024,
                 temperature: Optional[float] = None, system: Optional[str] = None,
                 stop: Union[str, Sequence[str], None] = None, timeout: Optional[float] = None,
                 max_retries: Optional[int] = None, retry_budget: Optional[float] = None,
                 **provider_extras: Any) -> LLMResponse:
        request = self._request(messages, model, max_tokens, temperature, system, stop, False, provider_extras)

        def send(lease: Lease, budget: CallBudget) -> LLMResponse:
            with lease:
                return lease.key.complete(lease.session, request, self._base_timeout, lease.reservation, budget)


        return self._through_pool(request, timeout, max_retries, retry_budget, send)

    def stream(self, messages: MessagesInput, *, model: Optional[str] = None, max_tokens: int = 1024,
               temperature: Optional[float] = None, system: Optional[str] = None,
               stop: Union[str, Sequence[str], None] = None, timeout: Optional[float] = None,
               max_retries: Optional[int] = None, retry_budget: Optional[float] = None,
               **provider_extras: Any) -> Stream:
        """Open a streamed call. The Stream iterates text chunks, is a
        context manager, and has ``.response`` once read to the end."""
        request = self._request(messages, model, max_tokens, temperature, system, stop, True, provider_extras)

        def send(lease: Lease, budget: CallBudget) -> Stream:
            return lease.key.open_stream(lease.session, request, self._base_timeout, lease, budget)  # owns the lease

        return self._through_pool(request, timeout, max_retries, retry_budget, send)

    def _through_pool(self, request: LLMRequest, timeout: Optional[float], max_retries: Optional[int],
                      retry_budget: Optional[float], send: Callable[[Lease, CallBudget], _T]) -> _T:
        """Lease a key (waiting in line), send; on a server 429 the limiter
        has paused that key, so go back to the pool — to the key that can
        take the call soonest — while the call's budget allows."""
        _check_retry_args(max_retries, retry_budget)
        deadline = self._deadline(timeout)
        budget = self._budget(deadline, max_retries, retry_budget)
        cost = self._cost(request, deadline)
        wait_until = deadline  # the first attempt may wait its whole timeout
        while True:
            lease = self._pool.acquire(self._acquire_wait(wait_until), cost)
            try:
                return send(lease, budget)  # each attempt cuts the timeouts to what is left
            except LLMRateLimitError as error:
                lease.release()
                if not getattr(error, "requeued", False):  # decided by RetryMiddleware
                    raise
                wait_until = budget.wait_deadline()  # a re-send waits within the retry budget
            except BaseException:
                lease.release()
                raise

    def _budget(self, deadline: Optional[float], max_retries: Optional[int],
                retry_budget: Optional[float]) -> CallBudget:
        retries = self._max_retries if max_retries is None else max_retries
        seconds = self._retry_budget if retry_budget is None else retry_budget
        return CallBudget(retries, deadline, None if seconds is None else time.monotonic() + seconds)

    def stream_complete(self, messages: MessagesInput, **kwargs: Any) -> Iterator[str]:
        """Text chunks as they arrive. Breaking out of the loop, ``close()``
        or garbage collection returns the lease and connection at once."""
        return self.stream(messages, **kwargs)

    def count_tokens(self, messages: MessagesInput, model: Optional[str] = None, *,
                     system: Optional[str] = None) -> int:
        """The provider's native count where it has one, else an estimate."""
        request = self._request(messages, model, 1, None, system, None, False, {})
        if not _has_native_counting(self._provider):
            return estimate_tokens(request.messages, request.system)
        return self._native_count(request, self._deadline(None))

    def _native_count(self, request: LLMRequest, deadline: Optional[float]) -> int:
        """Ask the provider; counting is free and limited apart from messages,
        so it takes a lease without a rate-limit reservation."""
        with self._pool.acquire(self._acquire_wait(deadline)) as lease:
            count = lease.key.count_tokens(lease.session, request, cut_timeout(*self._base_timeout, deadline))
        return count if count is not None else estimate_tokens(request.messages, request.system)

    def _counted_or_estimated(self, request: LLMRequest, deadline: Optional[float]) -> int:
        """For a reservation: the native count, or the estimate if counting
        fails (a count is an aid to the limiter, never a reason to fail)."""
        try:
            return self._native_count(request, deadline)
        except LLMError:
            return estimate_tokens(request.messages, request.system)

    def _cost(self, request: LLMRequest, deadline: Optional[float]) -> Cost:
        """What the rate limiter reserves: the input estimate (or the
        provider's own count) and max_tokens of output."""
        if self._native_counting:
            tokens = self._counted_or_estimated(request, deadline)
        else:
            tokens = estimate_tokens(request.messages, request.system)
        return Cost(tokens, request.max_tokens)

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
        batch settles (nothing in flight is abandoned)."""
        items = list(items)
        for index, item in enumerate(items):
            try:
                self._check(item, kwargs)
            except LLMValidationError as exc:
                raise LLMValidationError(f"items[{index}]: {exc.message}") from None
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise LLMValidationError(f"max_workers must be a positive integer, got {max_workers!r}")
        if not items:
            return []
        workers = min(len(items), max_workers or self._pool.max_size)
        report = _progress_reporter(progress, len(items))
        results: list[Any] = [None] * len(items)
        done = 0
        done_lock = threading.Lock()

        def run(index: int) -> None:
            nonlocal done
            try:
                results[index] = self.complete(items[index], **kwargs)
            except Exception as exc:  # kept in place: a batch never drops a result
                results[index] = exc
            with done_lock:
                done += 1
                report(done)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-sync-batch") as executor:
            for future in [executor.submit(run, i) for i in range(len(items))]:
                future.result()
        report(len(items), final=True)
        if not return_exceptions:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    # --- internals ------------------------------------------------------
    def _check(self, messages: MessagesInput, kwargs: dict[str, Any]) -> None:
        """Validate a ``complete`` call's arguments without making it."""
        self._request(messages, kwargs.get("model"), kwargs.get("max_tokens", 1024), kwargs.get("temperature"),
                      kwargs.get("system"), kwargs.get("stop"), False,
                      {k: v for k, v in kwargs.items() if k not in _CALL_ARGS})
        self._deadline(kwargs.get("timeout"))
        _check_retry_args(kwargs.get("max_retries"), kwargs.get("retry_budget"))

    def _request(self, messages: MessagesInput, model: Optional[str], max_tokens: Any, temperature: Any,
                 system: Any, stop: Any, stream: bool, extras: dict[str, Any]) -> LLMRequest:
        """Validate every argument and build the request (no I/O)."""
        model = self.model if model is None else model
        if not isinstance(model, str) or not model.strip():
            raise LLMValidationError(f"model must be a non-empty string, got {model!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise LLMValidationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if temperature is not None:
            low, high = self._provider.temperature_range
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                    or not low <= temperature <= high:
                raise LLMValidationError(
                    f"temperature must be a number from {low} to {high} for {self.provider}, got {temperature!r}"
                )
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise LLMValidationError(f"system must be a non-empty string, got {system!r}")
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

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                raise LLMValidationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        total = timeout if timeout is not None else self._timeout.total
        return None if total is None else time.monotonic() + total

    def _acquire_wait(self, deadline: Optional[float]) -> Optional[float]:
        return None if deadline is None else max(0.0, deadline - time.monotonic())


_CALL_ARGS = frozenset({"model", "max_tokens", "temperature", "system", "stop", "timeout", "max_retries",
                        "retry_budget"})


def _has_native_counting(provider: Provider) -> bool:
    return type(provider).count_tokens is not Provider.count_tokens


def _check_retry_args(max_retries: Any, retry_budget: Any) -> None:
    if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(max_retries, int)
                                    or max_retries < 0):
        raise LLMValidationError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    if retry_budget is not None and (isinstance(retry_budget, bool) or not isinstance(retry_budget, (int, float))
                                     or retry_budget <= 0):
        raise LLMValidationError(f"retry_budget must be a positive number of seconds, got {retry_budget!r}")


def _stop_list(stop: Any) -> Optional[list[str]]:
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise LLMValidationError(f"stop must be a string or a list of non-empty strings, got {stop!r}")
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
