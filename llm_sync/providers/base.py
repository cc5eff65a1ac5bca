"""The provider plug-in point: wire format only.

A provider turns an :class:`LLMRequest` into an :class:`HTTPRequest` and
turns the answer (a status, headers and JSON, SSE events or an error body)
into an :class:`LLMResponse` or a typed error. It does no I/O: the
pipeline's transport step sends and reads. It knows nothing of pools,
limits or retries. Instances are immutable after
construction and shared by every thread.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlencode, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from ..budget import DEFAULT_MAX_PAUSE
from ..errors import (
    LLMConnectionError,
    LLMProviderError,
    LLMQuotaExceededError,
    error_class_for_status,
    redact,
)
from ..models import LLMProvider, LLMResponse, Message, MessageRole, StopReason, Usage
from ..content import ContentBlock, blocks_text
from ..events import StreamEvent
from ..tools import Tool, ToolCall, ToolChoice
from ..sse import SSEEvent
from ..transport import HTTPRequest

__all__ = ["LLMRequest", "Provider", "StreamDecoder", "join_url", "with_query", "parse_retry_after",
           "DEFAULT_MAX_PAUSE"]

# The error_type of a counting answer that says the endpoint does not
# exist (an Anthropic-compatible server without count_tokens): the caller
# falls back to the local estimate.
COUNT_UNSUPPORTED = "count_tokens_unsupported"

# What a 200 of an unexpected shape raises while it is parsed: a field of
# the wrong type, JSON nested too deep, a number too large to convert.
SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError, OverflowError)


@dataclass
class LLMRequest:
    """One call as the middleware chain sees it. Middleware may change any
    field (or add ``headers``) in ``process_request``."""

    messages: list[Message]
    model: str
    max_tokens: int = 1024
    temperature: Optional[float] = None
    system: Union[str, list[ContentBlock], None] = None  # blocks may carry cache_control
    stop: Optional[list[str]] = None
    stream: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # extra_headers, and any middleware adds
    extra_query: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged over the built body, last
    tools: list[Tool] = field(default_factory=list)
    tool_choice: Optional[ToolChoice] = None  # "auto" | "required" | "none" | ("tool", name)
    # Structured output: (name, JSON schema) the answer must follow. OpenAI
    # kind sends response_format json_schema; Anthropic kind forces a tool
    # of that name and reads its input as the answer.
    response_schema: Optional[tuple[str, dict[str, Any]]] = None

    def system_text(self) -> Optional[str]:
        """The top-level system text plus any SYSTEM messages, in order."""
        parts = [blocks_text(self.system)] if self.system else []
        parts += [m.text for m in self.messages if m.role is MessageRole.SYSTEM]
        return "\n\n".join(parts) if parts else None


def join_url(base_url: str, path: str, default_prefix: str = "") -> str:
    """``base_url`` + ``path``. A base with no path of its own gets
    ``default_prefix`` first (OpenAI-kind: ``/v1``); a base already ending in
    ``/v1`` does not get a second one from ``path``. Any other path prefix
    (``/v1beta/openai``, ``/openai``) is kept as it is."""
    base = base_url.rstrip("/")
    if default_prefix and not urlsplit(base).path:
        base += default_prefix
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base + path


# Request headers whose values are credentials wherever they appear.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization",
                                "ocp-apim-subscription-key", "x-goog-api-key"})


def with_query(url: str, query: Mapping[str, Any]) -> str:
    """``url`` with ``query`` appended (per-call ``extra_query``)."""
    if not query:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(query, doseq=True)


def parse_retry_after(headers: Mapping[str, str], now: Optional[float] = None,
                      maximum: float = DEFAULT_MAX_PAUSE) -> Optional[float]:
    """Seconds to wait from ``retry-after-ms``, then ``retry-after`` as
    seconds or as an HTTP date; None when absent or unparsable (``nan``).

    Always finite and within ``[0, maximum]``: a server's hint steers how
    long a key rests, and ``1e9``, ``inf`` or a date in the year 9999 must
    not rest it for decades. A past date or a negative number is 0."""
    seconds: Optional[float] = None
    value = headers.get("retry-after-ms")
    if value:
        seconds = _seconds(value, 1000.0)
    value = headers.get("retry-after")
    if seconds is None and value:
        seconds = _seconds(value, 1.0)
        if seconds is None:
            from email.utils import parsedate_to_datetime

            try:
                seconds = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None:
        return None
    return min(max(0.0, seconds), maximum)


def _seconds(value: str, per_second: float) -> Optional[float]:
    try:
        seconds = float(value) / per_second
    except (ValueError, OverflowError):
        return None
    return None if math.isnan(seconds) else seconds


class StreamDecoder(ABC):
    """Turns one response's SSE events into text chunks and, at the end,
    the pieces of the final :class:`LLMResponse`. One per stream."""

    def __init__(self) -> None:
        self.done = False
        self.model = ""
        self.stop_reason: Optional[str] = None
        self.usage = Usage()
        self.message_id: Optional[str] = None
        self.extra: dict[str, Any] = {}
        # Typed events for Stream.events(), appended by feed() as they
        # arrive (TextDelta for every text chunk feed() returns, too).
        self.events: list[StreamEvent] = []
        # The final answer's pieces beyond text, filled by feed().
        self.tool_calls: list[ToolCall] = []
        self.refusal: Optional[str] = None
        self.thinking: Optional[str] = None
        self.blocks: list[ContentBlock] = []

    @abstractmethod
    def feed(self, event: SSEEvent) -> Optional[str]:
        """Text to yield for this event (None for none); raises a typed
        error for an error event."""

    def feed_text_chunk(self, chunk: bytes) -> Optional[list[str]]:
        """A fast path: ``chunk`` (raw body bytes, fed while the SSE parser
        is :attr:`~llm_sync.sse.SSEParser.idle`) parsed and fed at once,
        when it is nothing but whole, plain text-delta events. Returns each
        event's text, in order — what ``feed`` would have returned for
        them, with the same effect on this decoder, except that no
        TextDelta is appended to ``events`` (the Stream makes those it
        needs). None, with nothing changed, for any other chunk: it then
        goes through the parser and ``feed``. The default never applies."""
        return None

    @staticmethod
    def load(event: SSEEvent) -> Any:
        try:
            return json.loads(event.data)
        except ValueError:
            raise LLMConnectionError(f"stream sent an event that is not valid JSON ({event.event})") from None


class Provider(ABC):
    kind: str  # the wire format (registry key); ``endpoint`` is this instance's configured name
    # Where the request id travels, in order of preference: the provider's
    # own header first, then what gateways and compatible servers send
    # (a subclass may name just one, as ``request_id_header``).
    request_id_header: str = "x-request-id"
    request_id_headers: tuple[str, ...] = ()
    completion_path: str
    default_prefix: str = ""  # put between a base_url with no path and completion_path
    refunds_output: bool  # the server refunds unused max_tokens at the end
    # Whether usage.input_tokens already includes prompt-cache reads
    # (OpenAI: cached_tokens are part of prompt_tokens; Anthropic: apart).
    cache_reads_in_input: bool = True
    temperature_range: tuple[float, float]
    # The longest ``retry_after`` an error carries (the endpoint's
    # ``max_pause``; the manager sets it per endpoint).
    max_pause: float = DEFAULT_MAX_PAUSE

    def __init__(self, base_url: str, headers: Optional[Mapping[str, str]] = None, *,
                 endpoint: Optional[str] = None) -> None:
        self.endpoint = endpoint or self.kind
        self.base_url = base_url.rstrip("/")
        self.completion_url = join_url(self.base_url, self.completion_path, self.default_prefix)
        self.default_headers = {"content-type": "application/json", "accept": "application/json", **(headers or {})}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint} {redact(self.base_url)}>"

    # --- wire format, per provider -------------------------------------
    @abstractmethod
    def auth_headers(self, key: str) -> dict[str, str]:
        """Headers that carry ``key``; only ever placed in a KeyAuth."""

    @abstractmethod
    def build_body(self, request: LLMRequest) -> dict[str, Any]: ...

    @abstractmethod
    def parse_body(self, data: dict[str, Any]) -> LLMResponse: ...

    @abstractmethod
    def stream_decoder(self) -> StreamDecoder: ...

    @abstractmethod
    def error_fields(self, body: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
        """(message, error type, error code) from an error body."""

    @abstractmethod
    def is_quota_error(self, body: Any, error_type: Optional[str], code: Optional[str]) -> bool: ...

    def count_request(self, request: LLMRequest) -> Optional[HTTPRequest]:
        """The native token-counting request, or None where the provider
        has no such endpoint."""
        return None

    def parse_count(self, http: requests.Response, content: bytes) -> int:
        """The count from a counting answer (see :meth:`count_request`)."""
        raise NotImplementedError

    # --- shared mechanics ------------------------------------------------
    def build_request(self, request: LLMRequest) -> HTTPRequest:
        """The HTTP request for ``request``: body, headers, query. Per-call
        ``extra_headers`` win over the endpoint's headers; ``extra_body``
        is merged over the body last; ``extra_query`` is appended to the URL."""
        headers = {**self.default_headers, **request.headers}
        if request.stream:
            headers["accept"] = "text/event-stream"
        body = self.build_body(request)
        body.update(request.extra_body)
        return HTTPRequest("POST", with_query(self.completion_url, request.extra_query), body, headers,
                           request.stream)

    def parse_response(self, http: requests.Response, content: bytes, started: float,
                       client_id: Optional[str]) -> LLMResponse:
        """The answer to a non-streamed call: the response of a 200, the
        typed error for anything else (a 200 that is not a well-formed
        answer is a transient server fault, retried like a 5xx)."""
        body = self.json_object(http, content)
        try:
            response = self.parse_body(body)
        except SHAPE_ERRORS as exc:
            raise self._invalid(http, f"JSON of an unexpected shape ({type(exc).__name__})") from None
        self.annotate(response, http, started, client_id)
        return response

    def json_object(self, http: requests.Response, content: bytes) -> dict[str, Any]:
        """The JSON object of a 200, or the typed error for anything else."""
        if http.status_code != 200:
            raise self.error_from_response(http, content)
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):
            raise self._invalid(http, "a body that is not valid JSON") from None
        if not isinstance(data, dict):
            raise self._invalid(http, "JSON that is not an object")
        return data

    def _invalid(self, http: requests.Response, what: str) -> LLMProviderError:
        return LLMProviderError(
            f"the server answered 200 with {what}", status_code=502, error_type="invalid_response",
            request_id=self.request_id(http), provider=self.endpoint, headers=self.plain_headers(http),
        )

    def request_id(self, http: requests.Response, secrets: Optional[tuple[str, ...]] = None) -> Optional[str]:
        """The response's request id (the first of ``request_id_headers``
        it carries), scrubbed: a server may echo the key. ``secrets``:
        :meth:`sent_secrets` of ``http``, when the caller has them already."""
        for name in self.request_id_headers or (self.request_id_header,):
            value = http.headers.get(name)
            if value:
                return redact(value, self.sent_secrets(http) if secrets is None else secrets)
        return None

    def plain_headers(self, http: requests.Response, secrets: Optional[tuple[str, ...]] = None) -> dict[str, str]:
        """The response headers, names lower-cased, as errors and responses
        keep them: any header that echoes the key this request carried (or
        anything key-like) is masked, so no ``str``, ``repr`` or pickle of
        them shows it. ``secrets``: :meth:`sent_secrets` of ``http``, when
        the caller has them already."""
        if secrets is None:
            secrets = self.sent_secrets(http)
        return {redact(k.lower(), secrets): redact(v, secrets) for k, v in http.headers.items()}

    def safe_error_fields(self, body: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
        """:meth:`error_fields`, keeping only strings: a hostile error body
        (a number for a message, a list for a type) never breaks the
        translation into a typed error."""
        try:
            fields = self.error_fields(body)
        except SHAPE_ERRORS:
            return None, None, None
        return tuple(value if isinstance(value, str) else None for value in fields)  # type: ignore[return-value]

    def error_from_response(self, http: requests.Response, content: bytes) -> LLMProviderError:
        """The one translation from an error status to a typed error."""
        status = http.status_code
        try:
            body: Any = json.loads(content) if content else None
        except (ValueError, RecursionError):
            body = None
        message, error_type, code = self.safe_error_fields(body)
        if message is None:  # scrub before cutting, so no key straddles the cut
            text = redact(content.decode("utf-8", "replace"), self.sent_secrets(http))[:200].strip() if content else ""
            message = text or http.reason or "error"
        if 300 <= status < 400:
            message = f"redirect to another location refused (keys are never sent on): {message}"
            error_type = error_type or "redirect"
        cls = error_class_for_status(status)
        if status == 429 and self._is_quota(body, error_type, code):
            cls = LLMQuotaExceededError
        body_id = body.get("request_id") if isinstance(body, dict) else None
        return cls(
            redact(message, self.sent_secrets(http)),
            status_code=status,
            error_type=error_type or code,
            code=code,
            request_id=self.request_id(http) or (
                redact(body_id, self.sent_secrets(http)) if isinstance(body_id, str) else None),
            provider=self.endpoint,
            retry_after=parse_retry_after(http.headers, maximum=self.max_pause)
            if cls is not LLMQuotaExceededError else None,
            headers=self.plain_headers(http),
        )

    def _is_quota(self, body: Any, error_type: Optional[str], code: Optional[str]) -> bool:
        try:
            return self.is_quota_error(body, error_type, code)
        except SHAPE_ERRORS:
            return False

    def sent_secrets(self, http: requests.Response) -> tuple[str, ...]:
        """The key this request carried (and any other credential header,
        e.g. a gateway's token from the config), so an answer that echoes
        one is masked even when it does not look like a key (``token-abc``)."""
        sent = getattr(getattr(http, "request", None), "headers", None) or {}
        names = self.__dict__.get("_secret_names")
        if names is None:  # the same for every request of this provider: worked out once
            names = self.__dict__["_secret_names"] = tuple(sorted({*(name.lower() for name in self.auth_headers("")),
                                                                   *CREDENTIAL_HEADERS}))
        # requests' CaseInsensitiveDict keeps (name, value) under the
        # lower-cased name: read it there (the names above are lower-case).
        store = getattr(sent, "_store", None) if type(sent) is CaseInsensitiveDict else None
        secrets = []
        for name in names:
            if store is not None:
                found = store.get(name)
                value = found[1] if found is not None else ""
            else:
                value = sent.get(name)
            value = value or ""
            value = value[7:] if value[:7].lower() == "bearer " else value
            if value.strip():
                secrets.append(value.strip())
        return tuple(secrets)

    def error_from_event(self, body: Any) -> LLMProviderError:
        """An error that arrived inside a 200 stream."""
        message, error_type, code = self.safe_error_fields(body)
        status = _EVENT_STATUS.get(error_type or code or "", 500)
        cls: type[LLMProviderError] = error_class_for_status(status)
        if status == 429 and self._is_quota(body, error_type, code):
            cls = LLMQuotaExceededError
        return cls(redact(message or "error event in stream"), status_code=status,
                   error_type=error_type or code, code=code, provider=self.endpoint, mid_stream=True)

    def annotate(self, response: LLMResponse, http: requests.Response, started: float,
                 client_id: Optional[str]) -> None:
        response.provider = LLMProvider.for_kind(self.kind)
        response.endpoint = self.endpoint
        response.client_id = client_id
        secrets = self.sent_secrets(http)  # once for the request id and the headers
        fallback = response.request_id  # from the body (a stream's message id): scrubbed like a header
        response.request_id = self.request_id(http, secrets) or (
            None if fallback is None else redact(fallback, secrets))
        response.latency_ms = (time.monotonic() - started) * 1000.0
        response.headers = self.plain_headers(http, secrets)

    def stream_response(self, decoder: StreamDecoder, text: str, http: Optional[requests.Response],
                        started: float, client_id: Optional[str]) -> LLMResponse:
        """The final response of a finished stream."""
        response = LLMResponse(
            content=text,
            model=decoder.model,
            stop_reason=self.normalize_stop_reason(decoder.stop_reason),
            usage=decoder.usage,
            raw={"id": decoder.message_id, "stop_reason": decoder.stop_reason, **decoder.extra},
            request_id=decoder.message_id,  # kept unless a request-id header says otherwise
            tool_calls=decoder.tool_calls,
            refusal=decoder.refusal,
            thinking=decoder.thinking,
            blocks=decoder.blocks,
        )
        if http is not None:
            self.annotate(response, http, started, client_id)
        return response

    @staticmethod
    def normalize_stop_reason(reason: Optional[str]) -> Optional[str]:
        return _STOP_REASONS.get(reason, reason) if reason is not None else None


# Provider stop/finish reasons → API.md's normalised set.
_STOP_REASONS = {
    "end_turn": StopReason.END_TURN.value,
    "stop": StopReason.END_TURN.value,
    "max_tokens": StopReason.MAX_TOKENS.value,
    "length": StopReason.MAX_TOKENS.value,
    "stop_sequence": StopReason.STOP_SEQUENCE.value,
    "tool_use": StopReason.TOOL_USE.value,
    "tool_calls": StopReason.TOOL_USE.value,
    "function_call": StopReason.TOOL_USE.value,
}

# Error types that arrive inside a stream → the status they stand for.
_EVENT_STATUS = {
    "overloaded_error": 529,
    "api_error": 500,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "timeout_error": 408,
}

