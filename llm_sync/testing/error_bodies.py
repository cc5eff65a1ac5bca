"""Provider-shaped error bodies for the simulator.

Clients parse error bodies to decide whether and how to retry, so each
family's errors must look exactly like the real provider's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "anthropic_error",
    "anthropic_quota_error",
    "openai_error",
    "openai_quota_error",
]

ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ANTHROPIC_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "timeout_error": "Request timed out.",
    "conflict_error": "Conflict.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit.",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}

class _Default:
    """Marker type for "use the status's usual value"."""


DEFAULT = _Default()

# status -> (type, code, message) in OpenAI's error shape.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to do this."),
    404: ("invalid_request_error", None, "The requested resource does not exist."),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    529: ("server_error", None, "The server is overloaded or not ready yet."),
}


def anthropic_error(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Anthropic's ``{"type":"error","error":{...},"request_id":...}`` body for a status."""
    if error_type is None:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        error_type = ANTHROPIC_ERROR_TYPES.get(status, fallback)
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type, "message": message or _ANTHROPIC_MESSAGES[error_type]},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return body


def openai_error(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    code: str | None | _Default = DEFAULT,
    param: str | None = None,
) -> dict[str, Any]:
    """OpenAI's ``{"error":{"message","type","param","code"}}`` body for a status.

    ``code`` defaults to the status's usual code; pass ``None`` for ``"code": null``.
    """
    fallback = ("server_error", None, "Server error.") if status >= 500 else (
        "invalid_request_error",
        None,
        "Invalid request.",
    )
    default_type, default_code, default_message = _OPENAI_ERRORS.get(status, fallback)
    return {
        "error": {
            "message": message or default_message,
            "type": error_type or default_type,
            "param": param,
            "code": default_code if isinstance(code, _Default) else code,
        }
    }


def openai_quota_error() -> dict[str, Any]:
    """OpenAI's out-of-credit 429 body: retrying will not help."""
    return openai_error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        error_type="insufficient_quota",
        code="insufficient_quota",
    )


def anthropic_quota_error(now: float, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's spend-limit 429 body: no retry-after, access returns next month."""
    moment = datetime.fromtimestamp(now, tz=timezone.utc)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    body = anthropic_error(
        429,
        "You have reached your specified API usage limits. You will regain access on "
        f"{year:04d}-{month:02d}-01 at 00:00 UTC.",
        request_id=request_id,
    )
    body["error"]["details"] = {"error_code": "enforced_spend_limit_reached"}
    return body
