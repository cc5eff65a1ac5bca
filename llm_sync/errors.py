"""The exception tree, and the one table that maps HTTP statuses to it.

    LLMError
    ├── LLMConfigError            bad configuration (names the field)
    ├── LLMValidationError        bad input to a call, raised before any I/O
    ├── LLMPoolExhaustedError     no lease free within acquire_timeout
    ├── LLMTransportError         no usable response ("no response" failures)
    │   ├── LLMConnectionError    connect/reset/truncated stream
    │   └── LLMTimeoutError       connect or read timeout, deadline passed
    └── LLMProviderError          the server answered with an error status
        ├── LLMAuthenticationError  401 / 403
        ├── LLMRateLimitError       429 that means "slow down" (.retry_after)
        └── LLMQuotaExceededError   429 that means "pay up" (never retried)

Every error is picklable (they cross ``concurrent.futures`` and process
boundaries) and none ever carries an API key: messages are built from
server text that is scrubbed by :func:`redact` before it is stored.
"""

from __future__ import annotations

import re
from typing import Any, Optional

__all__ = [
    "LLMError",
    "LLMConfigError",
    "LLMValidationError",
    "LLMPoolExhaustedError",
    "LLMTransportError",
    "LLMConnectionError",
    "LLMTimeoutError",
    "LLMProviderError",
    "LLMAuthenticationError",
    "LLMRateLimitError",
    "LLMQuotaExceededError",
    "LLMStreamError",
    "error_class_for_status",
    "redact",
    "RETRYABLE_STATUSES",
]

# Strings that look like provider keys (sk-..., sk-ant-..., long tokens after
# "Bearer") are masked in any text an error keeps. Known keys are masked too
# by ``redact(text, secrets)``.
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{2})[A-Za-z0-9_\-]+|(Bearer\s+)\S+")


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Mask API keys in ``text``: the given secrets, then anything key-like."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class LLMError(Exception):
    """Base of every llm_sync error. Attributes beyond the message are kept
    in ``_attrs`` too, so pickling round-trips them."""

    partial_text: str

    def __init__(self, message: str = "", **attrs: Any) -> None:
        message = redact(str(message))
        super().__init__(message)
        self.message = message
        for name, value in attrs.items():
            setattr(self, name, value)
        self._attrs = attrs

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
    """A call's arguments are invalid; raised before anything is sent."""


class LLMPoolExhaustedError(LLMError):
    """No lease became free within ``pool.acquire_timeout``."""


class LLMTransportError(LLMError):
    """No usable response arrived. ``sent`` says whether the request may
    have reached the server (False: safe to retry, nothing was charged)."""

    sent: bool

    def __init__(self, message: str = "", *, sent: bool = True, **attrs: Any) -> None:
        super().__init__(message, sent=sent, **attrs)


class LLMConnectionError(LLMTransportError):
    """Connecting failed, the connection dropped, or a stream ended early."""


class LLMTimeoutError(LLMTransportError):
    """The connect or read timeout, or the call's deadline, passed."""


class LLMStreamError(LLMConnectionError):
    """A stream failed after text was already yielded; ``partial_text``
    holds what the caller received before the failure. ``cancelled`` is
    True when the caller closed the stream early (no failure then)."""

    partial_text: str

    def __init__(self, message: str = "", *, partial_text: str = "", **attrs: Any) -> None:
        super().__init__(message, partial_text=partial_text, **attrs)


class LLMProviderError(LLMError):
    """The server answered with an error status (or an error event)."""

    status_code: Optional[int]
    error_type: Optional[str]
    request_id: Optional[str]
    provider: Optional[str]
    retry_after: Optional[float]
    headers: dict[str, str]

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        provider: str | None = None,
        retry_after: float | None = None,
        **attrs: Any,
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            error_type=error_type,
            request_id=request_id,
            provider=provider,
            retry_after=retry_after,
            **attrs,
        )

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.error_type:
            parts.append(f"type={self.error_type}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts[:1]) + (f" ({', '.join(parts[1:])})" if parts[1:] else "")


class LLMAuthenticationError(LLMProviderError):
    """The key was rejected (401) or lacks permission (403)."""


class LLMRateLimitError(LLMProviderError):
    """Slow down: a 429, or a local limit that would not clear before the
    caller's deadline. ``retry_after`` is seconds until it may succeed."""


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


class LLMClosedError(LLMError):
    """A call on a manager, pool or client after ``close()``."""
