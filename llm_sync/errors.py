"""The exception tree, and the one table that maps HTTP statuses to it.

    LLMError                      base of every llm_sync error
    ├── LLMConfigError            bad configuration (names the field)
    ├── LLMValidationError        bad input to a call, raised before any I/O
    │                             (also a ValueError); never retried
    ├── LLMClosedError            a call after close() (manager, pool, client)
    ├── LLMStructuredOutputError  the answer did not validate against the
    │                             response_model, even after one repair
    │                             (.raw_text, .errors)
    ├── LLMTransportError         no usable response ("no response" failures)
    │   │                         .sent, .partial_text
    │   ├── LLMConnectionError    connect/reset/truncated body or stream
    │   │   └── LLMStreamError    a stream failed or was closed after text
    │   │                         was yielded (.partial_text, .cancelled)
    │   └── LLMTimeoutError       connect or read timeout, deadline passed
    │       │                     (.deadline_passed, .kind: "connect" |
    │       │                     "read" | "deadline" | "pool")
    │       └── LLMPoolExhaustedError  no lease free within acquire_timeout
    └── LLMProviderError          the server answered with an error status
        │                         .status_code, .error_type, .code,
        │                         .request_id, .provider, .retry_after,
        │                         .headers, .mid_stream, .partial_text
        ├── LLMAuthenticationError  401 / 403
        ├── LLMRateLimitError       429 that means "slow down" (.retry_after);
        │                           .local: raised by the client's own
        │                           limiter, no 429 was received
        └── LLMQuotaExceededError   429 that means "pay up" (never retried)

Every attribute an error carries is declared, with its type and default, on
the class that carries it. Passing an undeclared one to the constructor is
a ``TypeError``; setting one afterwards is an ``AttributeError``.

Every error is picklable (they cross ``concurrent.futures`` and process
boundaries) and none ever carries an API key: messages are built from
server text that is scrubbed by :func:`redact` before it is stored.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, ClassVar, Optional

__all__ = [
    "LLMError",
    "LLMConfigError",
    "LLMValidationError",
    "LLMClosedError",
    "LLMPoolExhaustedError",
    "LLMTransportError",
    "LLMConnectionError",
    "LLMTimeoutError",
    "LLMProviderError",
    "LLMAuthenticationError",
    "LLMRateLimitError",
    "LLMQuotaExceededError",
    "LLMStreamError",
    "LLMStructuredOutputError",
    "error_class_for_status",
    "redact",
    "RETRYABLE_STATUSES",
]

# Strings that look like provider keys (sk-..., sk-ant-..., long tokens after
# "Bearer") are masked in any text an error keeps. Known keys are masked too
# by ``redact(text, secrets)``.
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{2})[A-Za-z0-9_\-]+|(Bearer\s+)\S+")
# The user[:password]@ of a URL (``redis://:pw@host``, ``https://u:p@gw``):
# everything between ``scheme://`` and the last ``@`` before the path.
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")
# ... and credentials given as query parameters (``redis://host/0?password=pw``).
_QUERY_CREDENTIALS = re.compile(r"([?&](?:password|username|user|pass|pwd)=)[^&#\s]*", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Mask API keys in ``text``: the given secrets, then anything key-like,
    then the credentials of any URL (``scheme://***@host``, and
    ``?password=***`` in its query)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    # Each pattern is only run where it can match (most header values, on
    # every answer, contain neither): the same result, a tenth of the cost.
    if "sk-" in text or "Bearer" in text:
        text = _KEYLIKE.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    if "@" in text and "://" in text:
        text = _URL_CREDENTIALS.sub(r"\1***@", text)
    if "=" in text and "://" in text:
        text = _QUERY_CREDENTIALS.sub(r"\1***", text)
    return text


class LLMError(Exception):
    """Base of every llm_sync error.

    ``message`` is the redacted text. The other attributes are declared on
    each subclass as annotated class attributes with a default (the
    declaration is the whole contract: ``_fields`` lists them) and set by
    keyword: ``LLMTimeoutError("slow", sent=False)``.
    """

    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = list(cls._fields)  # the first base's, then any other LLMError base's
        for base in cls.__mro__[1:]:
            fields += [name for name in getattr(base, "_fields", ()) if name not in fields]
        for name, annotation in inspect.get_annotations(cls).items():
            if name.startswith("_") or str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            if name not in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{name} is declared without a default")
            if name not in fields:
                fields.append(name)
        cls._fields = tuple(fields)

    def __init__(self, message: str = "", **attrs: Any) -> None:
        unknown = [name for name in attrs if name not in self._fields]
        if unknown:
            declared = ", ".join(self._fields) or "none"
            raise TypeError(f"{type(self).__name__} has no attribute {', '.join(map(repr, unknown))} "
                            f"(declared: {declared})")
        message = redact(str(message))
        super().__init__(message)
        self.message = message
        for name, value in attrs.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "message" and not name.startswith("_") and name not in self._fields:
            raise AttributeError(f"{type(self).__name__} declares no attribute {name!r}")
        super().__setattr__(name, value)

    @property
    def _attrs(self) -> dict[str, Any]:
        """The declared attributes set on this instance (the rest keep their
        class default). Read-only view: set an attribute, not this dict."""
        return {name: value for name, value in vars(self).items() if name in self._fields}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.message, self._attrs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def _rebuild_error(cls: type[LLMError], message: str, attrs: dict[str, Any]) -> LLMError:
    error = cls.__new__(cls)
    LLMError.__init__(error, message, **attrs)
    return error


class LLMConfigError(LLMError):
    """The configuration is invalid; the message names the field path."""


class LLMValidationError(LLMError, ValueError):
    """A call's arguments are invalid; raised before anything is sent, and
    never retried."""


class LLMClosedError(LLMError):
    """A call on a manager, pool or client after its ``close()``."""


class LLMStructuredOutputError(LLMError):
    """``complete(..., response_model=M)`` got an answer that is not a
    valid ``M``, and so was the one repair attempt's. Never retried."""

    raw_text: str = ""
    """The last answer as received: the JSON text (or the tool call's
    arguments as JSON) that failed to validate."""
    errors: tuple[str, ...] = ()
    """What was wrong with it, one line per validation error."""


class LLMTransportError(LLMError):
    """No usable response arrived."""

    sent: bool = True
    """Whether the request may have reached the server. False: it provably
    did not (connect failure) — safe to retry, nothing was charged, and any
    rate-limit reservation can be refunded in full."""

    partial_text: str = ""
    """Text a stream had yielded before the failure ("" if none)."""


class LLMConnectionError(LLMTransportError):
    """Connecting failed, the connection dropped, or a body or stream ended
    early."""


class LLMTimeoutError(LLMTransportError):
    """The connect or read timeout, or the call's deadline, passed."""

    deadline_passed: bool = False
    """The call's own deadline passed (not just one read): no time is left
    for a retry."""

    kind: str = "deadline"
    """What ran out: ``"connect"`` (the connect timeout: nothing was sent),
    ``"read"`` (the read timeout: the server went quiet that long),
    ``"deadline"`` (a limit of the call itself: its ``timeout`` — then
    ``deadline_passed`` is True — or a wait bounded by it), ``"pool"`` (no
    lease within ``pool.acquire_timeout``)."""


class LLMPoolExhaustedError(LLMTimeoutError):
    """No lease became free within ``pool.acquire_timeout``: the call waited
    too long and nothing was sent."""

    sent = False
    kind = "pool"


class LLMStreamError(LLMConnectionError):
    """A stream failed after text was already yielded; ``partial_text``
    holds what the caller received before the failure."""

    cancelled: bool = False
    """The caller closed the stream early: no failure, just its end."""


class LLMProviderError(LLMError):
    """The server answered with an error status (or an error event)."""

    status_code: Optional[int] = None
    """The HTTP status (for an error event in a stream: the status its type
    stands for). None when no status was received (a local rate limit)."""
    error_type: Optional[str] = None
    """The provider's error type, else its error code."""
    code: Optional[str] = None
    """The provider's error code (OpenAI ``error.code``), if any."""
    request_id: Optional[str] = None
    provider: Optional[str] = None
    """The endpoint's provider kind (``"anthropic"``, ``"openai"``)."""
    retry_after: Optional[float] = None
    """Seconds the server (or the local limiter) says to wait; None if no hint."""
    headers: Optional[dict[str, str]] = None
    """The response headers, lower-cased; None when there was no response."""
    mid_stream: bool = False
    """The error arrived as an event inside a 200 stream."""
    partial_text: str = ""
    """Text a stream had yielded before the error event ("" if none)."""

    def __str__(self) -> str:
        parts = [f"{name}={value}" for name, value in (
            ("status", self.status_code), ("type", self.error_type), ("request_id", self.request_id))
            if value is not None and value != ""]
        return f"{self.message} ({', '.join(parts)})" if parts else self.message


class LLMAuthenticationError(LLMProviderError):
    """The key was rejected (401) or lacks permission (403)."""


class LLMRateLimitError(LLMProviderError):
    """Slow down: a 429 from the server, or a local limit that would not
    clear before the caller's deadline. ``retry_after`` is seconds until it
    may succeed."""

    local: bool = False
    """True when the client's own rate limiter refused the call (nothing was
    sent, ``status_code`` is None: build it with :meth:`local_limit`). False
    when a server answered 429 — also when the retry middleware gives up
    because the server's ``retry-after`` exceeds the call's budget (then
    ``status_code`` is the server's)."""

    @classmethod
    def local_limit(cls, message: str, retry_after: Optional[float] = None, *,
                    provider: Optional[str] = None) -> "LLMRateLimitError":
        """The error for a limit enforced locally: no request was sent."""
        return cls(message, retry_after=retry_after, provider=provider, local=True)


class LLMQuotaExceededError(LLMProviderError):
    """A 429 that needs billing action (OpenAI ``insufficient_quota``,
    Anthropic spend limit). Never retried."""


# Status → class. Statuses not listed map by range: other 4xx and all 5xx
# are plain LLMProviderError. Whether to retry is a separate, equally
# table-driven decision (RETRYABLE_STATUSES), made by the retry middleware.
_STATUS_CLASSES: dict[int, type[LLMProviderError]] = {
    401: LLMAuthenticationError,
    403: LLMAuthenticationError,
    429: LLMRateLimitError,
}

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def error_class_for_status(status: int) -> type[LLMProviderError]:
    return _STATUS_CLASSES.get(status, LLMProviderError)
