"""LLMClient: the calls users make — complete, stream, batch, submit.

Threading contract: one LLMClient is shared freely between threads; every
call leases its own Session and key from the pool, so calls never share
mutable state. Argument checking happens here, before any network I/O.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from .config import TimeoutConfig
from .errors import LLMError, LLMTimeoutError, LLMValidationError
from .models import LLMResponse, MessagesInput, normalize_messages
from .pool import KeyPool
from .providers.base import LLMRequest, Provider
from .streaming import Stream
from .tokens import estimate_tokens

__all__ = ["LLMClient"]

# Body fields the client sets itself; passing them as extras is a mistake.
_RESERVED = frozenset({"messages", "stream", "stream_options"})
Progress = Union[bool, Callable[[int, int], Any]]


class LLMClient:
    def __init__(self, pool: KeyPool, provider: Provider, model: str, timeout: TimeoutConfig) -> None:
        self._pool = pool
        self._provider = provider
        self.model = model
        self._timeout = timeout
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_lock = threading.Lock()  # guards lazy creation of _executor
        self._closed = False

    def __repr__(self) -> str:
        return f"<LLMClient {self._provider.name.value} model={self.model!r}>"

    @property
    def provider(self) -> str:
        return self._provider.name.value

    @property
    def pool(self) -> KeyPool:
        return self._pool

    # --- single calls ---------------------------------------------------
    def complete(self, messages: MessagesInput, *, model: Optional[str] = None, max_tokens: int = 1024,
                 temperature: Optional[float] = None, system: Optional[str] = None,
                 stop: Union[str, Sequence[str], None] = None, timeout: Optional[float] = None,
                 **provider_extras: Any) -> LLMResponse:
        request = self._request(messages, model, max_tokens, temperature, system, stop, False, provider_extras)
        deadline = self._deadline(timeout)
        with self._pool.acquire(self._acquire_wait(deadline)) as lease:
            return lease.key.complete(lease.session, request, self._http_timeout(deadline))

    def stream(self, messages: MessagesInput, *, model: Optional[str] = None, max_tokens: int = 1024,
               temperature: Optional[float] = None, system: Optional[str] = None,
               stop: Union[str, Sequence[str], None] = None, timeout: Optional[float] = None,
               **provider_extras: Any) -> Stream:
        """Open a streamed call. The Stream iterates text chunks, is a
        context manager, and has ``.response`` once read to the end."""
        request = self._request(messages, model, max_tokens, temperature, system, stop, True, provider_extras)
        deadline = self._deadline(timeout)
        lease = self._pool.acquire(self._acquire_wait(deadline))
        try:
            return lease.key.open_stream(lease.session, request, self._http_timeout(deadline), lease.release)
        except BaseException:
            lease.release()
            raise

    def stream_complete(self, messages: MessagesInput, **kwargs: Any) -> Iterator[str]:
        """Text chunks as they arrive. Breaking out of the loop, ``close()``
        or garbage collection returns the lease and connection at once."""
        return self.stream(messages, **kwargs)

    def count_tokens(self, messages: MessagesInput, model: Optional[str] = None, *,
                     system: Optional[str] = None) -> int:
        """The provider's native count where it has one, else an estimate."""
        request = self._request(messages, model, 1, None, system, None, False, {})
        if type(self._provider).count_tokens is Provider.count_tokens:
            return estimate_tokens(request.messages, request.system)
        deadline = self._deadline(None)
        with self._pool.acquire(self._acquire_wait(deadline)) as lease:
            count = lease.key.count_tokens(lease.session, request, self._http_timeout(deadline))
        return count if count is not None else estimate_tokens(request.messages, request.system)

    # --- many calls -----------------------------------------------------
    def submit(self, messages: MessagesInput, **kwargs: Any) -> "Future[LLMResponse]":
        """Run ``complete`` on the client's worker threads; bad arguments
        raise here, at once, not inside the Future."""
        self._check(messages, kwargs)
        return self._workers().submit(self.complete, messages, **kwargs)

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
            except LLMError as exc:
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
    def _workers(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._closed:
                raise LLMError(f"the {self.provider} client is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._pool.max_size, thread_name_prefix=f"llm-sync-{self.provider}"
                )
            return self._executor

    def close(self) -> None:
        """Stop the worker threads (after running what was submitted)."""
        with self._executor_lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _check(self, messages: MessagesInput, kwargs: dict[str, Any]) -> None:
        """Validate a ``complete`` call's arguments without making it."""
        self._request(messages, kwargs.get("model"), kwargs.get("max_tokens", 1024), kwargs.get("temperature"),
                      kwargs.get("system"), kwargs.get("stop"), False,
                      {k: v for k, v in kwargs.items() if k not in _CALL_ARGS})
        self._deadline(kwargs.get("timeout"))

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

    def _http_timeout(self, deadline: Optional[float]) -> tuple[float, Optional[float]]:
        connect, read = self._timeout.connect, self._timeout.read
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LLMTimeoutError("the call's deadline passed before it could be sent", sent=False)
            connect, read = min(connect, remaining), min(read, remaining)
        return connect, read


_CALL_ARGS = frozenset({"model", "max_tokens", "temperature", "system", "stop", "timeout"})


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
