"""The one call pipeline: reserve → lease → key's chain → provider → settle.

Every call — ``complete``, ``stream``, each item of ``complete_batch``,
each ``submit`` — runs here:

1. **reserve**: the rate limiter picks the key that admits the call
   soonest and charges its estimate (waiting in line if need be);
2. **lease** a Session for that key from the pool;
3. run that key's **middleware chain** (policy: logging, metrics, retry,
   pauses, user middleware) around the **terminal step**, which sends:
   provider builds the HTTP request → transport sends and reads →
   provider parses;
4. **settle** each send's reservation with what happened.

Retry and requeue are mechanics of this module, not of any middleware:
a re-send on the same key (RetryMiddleware's policy) is admitted here on
that key anew; a server 429 (or a re-send that finds its key paused)
leaves the chain as :class:`~llm_sync.call.Requeue` and the call goes back
to step 1, onto whichever key can take it soonest. Every reservation is
owned by one :class:`Sends` object, which ends each exactly once, so the
accounting stays right whichever middleware a user removes.

Threading contract: a Pipeline is shared by every client and thread of an
endpoint and keeps no per-call state; per-call state lives in the call's
:class:`CallContext`, :class:`CallBudget` and :class:`Sends`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Optional, TypeVar, Union, cast

import requests

from .budget import CallBudget, cut_timeout
from .call import CallContext, CallOptions, Requeue, Unset
from .cancel import cancelled
from .errors import (
    LLMClosedError,
    LLMError,
    LLMProviderError,
    LLMRateLimitError,
    LLMTransportError,
)
from .keys import PooledKey
from .middleware.ratelimit import RateLimitMiddleware
from .models import LLMResponse, Usage
from .pool import KeyPool, Lease
from .prompt_cache import CacheCost, PromptCacheTracker, breakpoints
from .providers.base import COUNT_UNSUPPORTED, LLMRequest, Provider
from .ratelimit.limiter import Cost, ProviderLimiter, Reservation
from .streaming import Stream
from .tokens import estimate_tokens
from .transport import BODY_READ_ERRORS, HTTPRequest, deadline_error, read_error, send
from .wire import DeadlineWatch

__all__ = ["Pipeline", "Sends", "exchange", "usage_reported", "reported_fields"]

HTTPTimeout = tuple[float, Optional[float]]
_T = TypeVar("_T")
Terminal = Callable[[Lease, "Sends", LLMRequest, CallContext], _T]
Result = Union[LLMResponse, Stream]


def exchange(session: requests.Session, http_request: HTTPRequest, lease_auth: Any,
             timeout: HTTPTimeout, deadline: Optional[float] = None) -> tuple[requests.Response, bytes]:
    """The transport step of a non-streamed call: send, read the whole
    body, close. Transport failures arrive translated (llm_sync errors).
    The body is read under the call's ``deadline`` (a DeadlineWatch), not
    only a per-read socket timeout, so a trickling body cannot outlast it;
    a body not read to its end closes its connection (never pooled)."""
    with DeadlineWatch(deadline) as watch:
        http = send(session, replace(http_request, stream=True), lease_auth, timeout, watch)
        return _drain(http, watch)


class Sends:
    """The reservations of one pass (one trip through one key's chain):
    the pipeline's reservation for the first send, a fresh one on the same
    key for each re-send. The sole owner that ends them: each is settled,
    refunded or released exactly once, here."""

    __slots__ = ("_pipeline", "_key", "_context", "_first", "current", "_costs", "_wake_owed")

    def __init__(self, pipeline: "Pipeline", key: PooledKey, context: CallContext,
                 first: Reservation, first_cost: Optional[Cost] = None) -> None:
        self._pipeline = pipeline
        self._key = key
        self._context = context
        self._first: Optional[Reservation] = first
        self.current: Optional[Reservation] = None
        # What each send was charged for: a prompt-cache discount is
        # recorded and calibrated at settle time (at most one per send).
        self._costs: list[tuple[Reservation, Cost]] = [] if first_cost is None else [(first, first_cost)]
        # A 429's refund leaves the line asleep until its key is paused (by
        # RateLimitMiddleware, which wakes it); if nothing pauses it, the
        # pass wakes the line when it ends.
        self._wake_owed = False

    def _cost_of(self, reservation: Reservation) -> Optional[Cost]:
        for held, cost in self._costs:
            if held is reservation:
                return cost
        return None

    def take(self, request: LLMRequest) -> Reservation:
        """The reservation for the send about to happen. A re-send on a
        key another call's 429 has paused goes back to the pool instead of
        waiting (another key may take it now); otherwise it waits in line
        for this key."""
        limiter = self._pipeline.limiter
        if self._first is not None:
            self.current, self._first = self._first, None
            return self.current
        scope = limiter.keys[self._key.index]
        cost = self._pipeline.cost_estimate(request)
        if self._context.pooled:
            # Never wait for capacity while holding a lease (another call
            # may hold the capacity and wait for a lease: a deadlock). If
            # this key cannot take the re-send now — paused, out of
            # capacity, still probing — the call goes back to the pool,
            # which places it on whichever key can take it soonest.
            self._pipeline.pool.check_fork()
            try:
                self.current = limiter.reserve(cost, limiter.clock(), only=scope)
            except LLMRateLimitError as error:
                raise Requeue(None, error.retry_after) from None
            self._costs.append((self.current, cost))
            return self.current
        budget = self._context.budget
        deadline = budget.wait_deadline() if budget is not None else None
        self.current = limiter.reserve(cost, deadline, only=scope)
        self._costs.append((self.current, cost))
        return self.current

    def settle(self, reservation: Reservation, response: LLMResponse) -> None:
        """Correct the charges to the answer's usage; sync from headers."""
        limiter = self._pipeline.limiter
        usage = response.usage
        if usage_reported(response):
            # Writing a prompt to Anthropic's cache counts toward its input
            # limit; reading it does not (OpenAI's cached tokens are already
            # part of its prompt tokens). A figure the server left out is
            # None: the estimate stands for it (not a charge of 0).
            reported = reported_fields(usage)
            output = usage.output_tokens if "output_tokens" in reported else None
            if "input_tokens" not in reported:
                limiter.settle(reservation, None, output, response.headers)
                return
            counted = usage.input_tokens + (usage.cache_creation_input_tokens or 0)
            reads_apart = not self._pipeline.provider.cache_reads_in_input
            if reads_apart and self._pipeline.cache_reads_counted:  # an endpoint that does count them
                counted += usage.cache_read_input_tokens or 0
            # The estimate counted the whole prompt, cached part included:
            # calibrate it against the whole prompt, not against the charge.
            prompt = counted + (usage.cache_read_input_tokens or 0) \
                if reads_apart and not self._pipeline.cache_reads_counted else counted
            limiter.settle(reservation, counted, output, response.headers, prompt_tokens=prompt)
            cost = self._cost_of(reservation)
            if isinstance(cost, CacheCost) and cost.tracker is not None \
                    and (usage.cache_creation_input_tokens or usage.cache_read_input_tokens):
                # Cached for the key's scope as it is now (the answer may
                # have moved it to its organisation's): the next call there
                # is charged for the rest of the prompt only.
                cost.tracker.record(limiter.scope_for(reservation.key, cost.model).id, cost.marks)
        else:  # a server that reports no usage (many compatible servers' streams): keep the estimate
            limiter.release(reservation, response.headers)

    def fail(self, reservation: Reservation, error: BaseException) -> None:
        """End a reservation whose send failed, by what the failure proves."""
        limiter = self._pipeline.limiter
        headers = getattr(error, "headers", None) or None
        mid_stream = getattr(error, "mid_stream", False)
        if reservation.sent_at is None:
            limiter.refund(reservation, answered=False)  # never sent
        elif not isinstance(error, (LLMTransportError, LLMProviderError)):
            # Refused before anything went out (a header or URL that cannot
            # be sent, a closed pool): nothing reached the server.
            limiter.refund(reservation, answered=False)
        elif isinstance(error, LLMTransportError) and not error.sent:
            limiter.refund(reservation, answered=False)  # never reached the server
        elif _is_server_429(error):
            # Refused, nothing counted. The line wakes once the key is
            # paused, not before: a waiter must not slip onto it meanwhile.
            pauses = self._key.middleware_chain.get_middleware(RateLimitMiddleware) is not None
            limiter.refund(reservation, headers, wake=not pauses)
            self._wake_owed = self._wake_owed or pauses
        elif isinstance(error, LLMProviderError) and error.status_code is not None \
                and error.status_code < 500 and not mid_stream:
            limiter.refund(reservation, headers, keep_request=True)
        else:  # sent and the outcome is unknown (5xx, read timeout, cut stream): keep the charges
            limiter.release(reservation, headers)

    def close(self) -> None:
        """End whatever is still open: the pass is over (a bug below us,
        a middleware that answered without sending, a requeue)."""
        limiter = self._pipeline.limiter
        for reservation in (self._first, self.current):
            if reservation is not None and not reservation.done:
                if reservation.sent_at is None:
                    limiter.refund(reservation, answered=False)
                else:
                    limiter.release(reservation)
        if self._wake_owed:  # in case no middleware paused the key after all
            self._wake_owed = False
            limiter.wake()

    def requeue_or_raise(self, error: LLMError) -> None:
        """A server 429 on a pooled call: send the call on through the pool
        when the server allows it, the wait fits the time left and a
        re-send is left. Otherwise the error stands (caller raises it)."""
        budget = self._context.budget
        if not self._context.pooled or budget is None or not _is_server_429(error):
            return
        assert isinstance(error, LLMRateLimitError)
        if _should_retry_header(error) == "false":
            return
        if (error.retry_after or 0.0) < budget.time_left() and budget.spend():
            raise Requeue(error, error.retry_after) from error


def usage_reported(response: LLMResponse) -> bool:
    """Whether the server said what the call used: a Usage left at its
    zeros (no usage sent) is not a report of zero tokens, and must not
    "correct" the limiter's charge to nothing."""
    usage = response.usage
    return bool(usage.input_tokens or usage.output_tokens or usage.cache_creation_input_tokens
                or usage.cache_read_input_tokens)


def reported_fields(usage: Usage) -> frozenset[str]:
    """The figures of ``usage`` the server sent: the fields set on it
    (providers set only the figures an answer holds; a field left at its
    default was not reported, whatever its value)."""
    return frozenset(usage.model_fields_set)


def _is_server_429(error: BaseException) -> bool:
    return isinstance(error, LLMRateLimitError) and error.status_code == 429 \
        and not getattr(error, "mid_stream", False)


def _should_retry_header(error: BaseException) -> str:
    return str((getattr(error, "headers", None) or {}).get("x-should-retry", "")).strip().lower()


class Pipeline:
    """Runs calls for one endpoint (see the module docstring)."""

    def __init__(self, pool: KeyPool, provider: Provider, limiter: ProviderLimiter, *,
                 connect_timeout: float, read_timeout: Optional[float], total_timeout: Optional[float],
                 max_retries: int, retry_budget: Optional[float], native_counting: bool = False,
                 cache_reads_counted: Optional[bool] = None) -> None:
        self.pool = pool
        self.provider = provider
        self.limiter = limiter
        self.base_timeout: HTTPTimeout = (connect_timeout, read_timeout)
        self.total_timeout = total_timeout
        self.max_retries = max_retries
        self.retry_budget = retry_budget
        self.native_counting = native_counting and provider.count_request(_PROBE) is not None
        # Whether prompt-cache reads count toward input limits: the kind's
        # default (OpenAI yes, Anthropic's current models no), or the
        # endpoint's ``cache_reads_count_toward_limits``.
        self.cache_reads_counted = provider.cache_reads_in_input if cache_reads_counted is None \
            else cache_reads_counted
        # Cache-aware estimates where reads are not counted: see
        # llm_sync.prompt_cache. Tests may replace it (a fake clock).
        self.prompt_cache: Optional[PromptCacheTracker] = \
            None if self.cache_reads_counted else PromptCacheTracker()

    def __repr__(self) -> str:
        return f"<Pipeline {self.provider.endpoint}>"

    # --- the calls --------------------------------------------------------
    def complete(self, request: LLMRequest, options: CallOptions) -> LLMResponse:
        return self._run(request, options, self._send)

    def stream(self, request: LLMRequest, options: CallOptions) -> Stream:
        return self._run(request, options, self._open)

    def count_tokens(self, request: LLMRequest, options: CallOptions) -> int:
        """The provider's native count, or the local estimate where the
        endpoint has no counting endpoint (also a compatible server that
        answers the counting URL with 404)."""
        if self.provider.count_request(request) is None:
            return estimate_tokens(request.messages, request.system, request.tools)
        try:
            return self._native_count(request, self.deadline(options))
        except LLMProviderError as error:
            if error.error_type != COUNT_UNSUPPORTED:
                raise  # a real failure (an unknown model's 404 included)
            return estimate_tokens(request.messages, request.system, request.tools)

    # --- budget and cost -------------------------------------------------
    def deadline(self, options: CallOptions) -> Optional[float]:
        total = self.total_timeout if isinstance(options.timeout, Unset) else options.timeout
        return None if total is None else time.monotonic() + total

    def budget(self, options: CallOptions) -> CallBudget:
        retries = self.max_retries if isinstance(options.max_retries, Unset) else options.max_retries
        seconds = self.retry_budget if isinstance(options.retry_budget, Unset) else options.retry_budget
        return CallBudget(retries, self.deadline(options), None if seconds is None else time.monotonic() + seconds)

    def cost_estimate(self, request: LLMRequest, prompt_tokens: Optional[int] = None) -> Cost:
        """What a send charges: the input estimate (``prompt_tokens``, the
        provider's own count, when given) and ``max_tokens`` of output.
        Where the provider does not count cache reads as input, a request
        whose longest ``cache_control`` prefix was recently cached on its
        scope is charged only for the rest (plus a small allowance): a
        :class:`~llm_sync.prompt_cache.CacheCost`."""
        total = estimate_tokens(request.messages, request.system, request.tools)
        base = total if prompt_tokens is None else prompt_tokens
        tracker = self.prompt_cache
        if tracker is None:
            return Cost(base, request.max_tokens, request.model)
        marks = breakpoints(request.messages, request.system, request.tools)
        if not marks:
            return Cost(base, request.max_tokens, request.model)
        # Discounted per candidate key when the limiter chooses one: the
        # server's cache is per organisation.
        return CacheCost(base, request.max_tokens, request.model, total=total, marks=marks, tracker=tracker)

    def _cost(self, request: LLMRequest, deadline: Optional[float]) -> Cost:
        """What the first reservation charges: the input estimate (or the
        provider's own count: an aid, never a reason to fail) and
        ``max_tokens`` of output."""
        if self.native_counting:
            try:
                return self.cost_estimate(request, self._native_count(request, deadline))
            except LLMError:
                pass
        return self.cost_estimate(request)

    # --- the loop: reserve → lease → chain, requeued while allowed --------
    def _run(self, request: LLMRequest, options: CallOptions, terminal: Terminal[_T]) -> _T:
        budget = self.budget(options)
        cost = self._cost(request, budget.deadline)
        wait_until = budget.deadline  # the first pass may wait its whole timeout
        while True:
            reservation, lease = self._reserve_and_lease(cost, wait_until)
            try:
                return self._pass(request, lease, reservation, budget, terminal, cost)
            except Requeue:
                wait_until = budget.wait_deadline()  # a re-send waits within the retry budget

    def _reserve_and_lease(self, cost: Cost, until: Optional[float]) -> tuple[Reservation, Lease]:
        """Reserve on the key that admits the call soonest, then lease a
        Session bound to it. The reservation is refunded if no lease comes."""
        self.pool.check_fork()  # before the limiter: a forked child rebuilds both first
        if self.pool.closed:
            raise LLMClosedError(f"the {self.pool.name} pool is closed")
        # Each wait is bounded by the call's deadline, or else by
        # acquire_timeout (a call over the limits for longer fails fast with
        # retry_after). The wait for a lease is measured after the wait for
        # capacity, so one never eats the other.
        left = None if until is None else max(0.0, until - time.monotonic())
        capacity_wait, _ = self.pool.wait_limit(left)
        reservation = self.limiter.reserve(cost, self.limiter.clock() + capacity_wait)
        try:
            timeout = None if until is None else max(0.0, until - time.monotonic())
            wait, by_caller = self.pool.wait_limit(timeout)
            lease = self.pool.lease(self.pool.clock() + wait, by_caller, self.pool.keys[reservation.key.index])
        except BaseException:
            self.limiter.refund(reservation, answered=False)
            raise
        return reservation, lease

    def _pass(self, request: LLMRequest, lease: Lease, reservation: Reservation, budget: CallBudget,
              terminal: Terminal[_T], cost: Optional[Cost] = None) -> _T:
        """One trip through the leased key's chain."""
        key = lease.key
        context = CallContext(endpoint=self.provider.endpoint, client_id=key.client_id, model=request.model,
                              stream=request.stream, budget=budget, pooled=True)
        sends = Sends(self, key, context, reservation, cost)
        try:
            result = key.middleware_chain.run(request, context,
                                              lambda req: cast(Result, terminal(lease, sends, req, context)))
        except Requeue as requeue:
            sends.close()
            lease.release()
            if requeue.cause is not None:
                key.record(requeue.cause, requeued=True)
            raise
        except BaseException as error:
            sends.close()
            lease.release()
            key.record(error)
            raise
        if isinstance(result, Stream):
            # Only now, with every finisher registered, does the stream own
            # the lease: a stream that already ended settles before it goes.
            result.attach(lease)
            lease.track(result)
            return cast(_T, result)
        sends.close()  # a middleware may have answered without sending
        lease.release()
        key.record(None)
        if request.stream:
            raise LLMError("a middleware answered a streamed call with a plain response")
        return cast(_T, result)

    # --- terminal steps: provider and transport ---------------------------
    def _send(self, lease: Lease, sends: Sends, request: LLMRequest, context: CallContext) -> LLMResponse:
        """Send one non-streamed request and parse the answer."""
        reservation = sends.take(request)
        try:
            http_request = self.provider.build_request(request)
            timeout = self._attempt_timeout(context)
            self.limiter.mark_sent(reservation)
            started = time.monotonic()
            http, content = exchange(lease.session, http_request, lease.key.auth, timeout, context.deadline)
            response = self.provider.parse_response(http, content, started, lease.key.client_id)
        except LLMError as error:
            sends.fail(reservation, error)
            self._raise_if_closed(error)
            sends.requeue_or_raise(error)
            raise
        except BaseException as error:
            sends.fail(reservation, error)
            raise
        sends.settle(reservation, response)
        return response

    def _open(self, lease: Lease, sends: Sends, request: LLMRequest, context: CallContext) -> Stream:
        """Open one streamed request and read up to its first text: an
        error before any text fails here, inside the chain, where it is
        retried like any other."""
        reservation = sends.take(request)
        key = lease.key
        watch = DeadlineWatch(context.deadline)  # the stream's to close once it owns it
        try:
            http_request = self.provider.build_request(request)
            timeout = self._attempt_timeout(context)
            self.limiter.mark_sent(reservation)
            started = time.monotonic()
            http = send(lease.session, http_request, key.auth, timeout, watch)
            if http.status_code != 200:
                _, content = _drain(http, watch)
                raise self.provider.error_from_response(http, content)
            stream = Stream(http, self.provider, key.client_id, started, deadline=context.deadline, watch=watch)
            self.limiter.observe(reservation, stream.headers)  # its key has answered
            stream.add_finisher(lambda response, error: self._finish(sends, reservation, response, error))
            stream.prime()
        except LLMError as error:
            watch.close()
            sends.fail(reservation, error)  # a no-op if the stream's finisher settled it
            self._raise_if_closed(error)
            sends.requeue_or_raise(error)
            raise
        except BaseException as error:
            watch.close()
            sends.fail(reservation, error)
            raise
        stream.context = context
        stream.add_finisher(lambda response, error: key.record(error))
        return stream

    @staticmethod
    def _finish(sends: Sends, reservation: Reservation, response: Optional[LLMResponse],
                error: Optional[LLMError]) -> None:
        if response is not None:
            sends.settle(reservation, response)
        elif error is not None:
            sends.fail(reservation, error)

    def _raise_if_closed(self, error: LLMError) -> None:
        """A send that failed because ``close()`` (or the cancelled scope
        of its thread: an interrupted batch) cut it: say so (never
        retried), rather than report a connection error."""
        if isinstance(error, LLMClosedError):
            return
        if self.pool.closed:
            raise LLMClosedError(f"the {self.pool.name} pool was closed while the call was in flight") from error
        if cancelled():
            raise LLMClosedError(f"the {self.pool.name} call was cancelled while in flight") from error

    def _attempt_timeout(self, context: CallContext) -> HTTPTimeout:
        """(connect, read) for this send: a re-send gets what the call has left."""
        budget = context.budget
        return budget.http_timeout(*self.base_timeout) if budget is not None else self.base_timeout

    def _native_count(self, request: LLMRequest, deadline: Optional[float]) -> int:
        """Ask the provider. Counting is free and limited apart from
        messages, so it takes a lease without a rate-limit reservation."""
        http_request = self.provider.count_request(request)
        assert http_request is not None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        with self.pool.acquire(timeout) as lease:
            try:
                http, content = exchange(lease.session, http_request, lease.key.auth,
                                         cut_timeout(*self.base_timeout, deadline), deadline)
            except LLMError as error:
                self._raise_if_closed(error)
                raise
        return self.provider.parse_count(http, content)


def _drain(http: requests.Response, watch: DeadlineWatch) -> tuple[requests.Response, bytes]:
    """Read a whole body, then close it: a body read to its end leaves its
    connection pooled; any other (failed, cut by the deadline) closes it.
    A body the watch cut may look complete (one read until close): the
    deadline is checked after the read, too."""
    try:
        content = http.content
        if watch.fired:
            raise deadline_error(http.url)
        return http, content
    except BODY_READ_ERRORS as exc:
        raise read_error(exc, http.url, watch) from exc
    finally:
        http.close()


# A request used once to ask a provider whether it can count tokens.
_PROBE = LLMRequest(messages=[], model="probe")

