"""Simulation of OpenAI's Chat Completions API (``/v1/chat/completions``).

Clients written against the real API must work unchanged here, so bodies,
headers, error shapes and the ``data:`` chunk stream follow OpenAI's format.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .faults import FaultKind
from .limits import Admission, format_duration, whole_seconds
from .replies import Completion, complete, count_input_tokens, split_chunks

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["DEFAULT_MAX_TOKENS", "chat_completions", "models", "sample_body", "validate"]

DEFAULT_MAX_TOKENS = 1024
MODELS = ("gpt-sim-1", "gpt-sim-mini")
_ROLES = ("system", "developer", "user", "assistant")
_FINGERPRINT = "fp_sim"
_LIMIT_WORDS = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _content_problem(content: Any, role: Any, where: str) -> str | None:
    if isinstance(content, str) or (content is None and role == "assistant"):
        return None
    if not isinstance(content, list):
        return f"Invalid type for '{where}': expected a string or an array of text parts."
    for index, part in enumerate(content):
        if (
            not isinstance(part, dict)
            or part.get("type") != "text"
            or not isinstance(part.get("text"), str)
        ):
            return f"Invalid value for '{where}[{index}]': the simulator accepts only text parts."
    return None


def validate(body: Any) -> tuple[str, str | None] | None:
    """Return (message, param) saying why a chat body is invalid, or None if fine."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array.", "messages"
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return f"Invalid type for '{where}': expected an object.", where
        role = message.get("role")
        if role not in _ROLES:
            supported = ", ".join(_ROLES)
            return f"Invalid value: '{role}'. Supported roles: {supported}.", where + ".role"
        problem = _content_problem(message.get("content"), role, where + ".content")
        if problem:
            return problem, where + ".content"
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None and not _positive_int(body[name]):
            return f"Invalid '{name}': expected an integer of at least 1.", name
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 2
    ):
        return "Invalid 'temperature': expected a number between 0 and 2.", "temperature"
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            return "Invalid 'stop': expected a string or an array of up to 4 strings.", "stop"
    if not isinstance(body.get("stream", False), bool):
        return "Invalid 'stream': expected a boolean.", "stream"
    options = body.get("stream_options")
    if options is not None:
        if not body.get("stream"):
            return (
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        if not isinstance(options, dict):
            return "Invalid 'stream_options': expected an object.", "stream_options"
    return None


def _admit(exchange: Exchange) -> bool:
    """Check the bearer key and the body; answer the request if either is wrong."""
    if exchange.key_index is None:
        if "authorization" not in exchange.headers:
            exchange.send_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code=None,
            )
        else:
            exchange.send_error(401, "Incorrect API key provided.", code="invalid_api_key")
        return False
    if not exchange.body_ok:
        exchange.send_error(400, "We could not parse the JSON body of your request.", code=None)
        return False
    problem = validate(exchange.body)
    if problem:
        exchange.send_error(400, problem[0], param=problem[1], code=None)
        return False
    return True


def chat_completions(exchange: Exchange) -> None:
    """``POST /v1/chat/completions``: a deterministic reply, rate limited per key."""
    if not _admit(exchange):
        return
    body = exchange.body
    max_tokens: int = (
        body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    )
    prompt_tokens = count_input_tokens(body["messages"])
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    reply = exchange.sim._reply(body["messages"])
    done = complete(reply, max_tokens=max_tokens, stop_sequences=stops)
    assert exchange.key_index is not None
    admission = exchange.sim._limiter(exchange.key_index).acquire_openai(prompt_tokens + max_tokens)
    if not admission.allowed:
        _reject(exchange, admission)
        return
    usage = exchange.usage({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": done.output_tokens,
        "total_tokens": prompt_tokens + done.output_tokens,
    })
    if body.get("stream"):
        _stream(exchange, done, usage, admission.headers)
        return
    exchange.send_json(
        200,
        {
            "id": f"chatcmpl-sim-{exchange.number}",
            "object": "chat.completion",
            "created": int(exchange.sim._wall_clock()),
            "model": body["model"],
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text},
                    "logprobs": None,
                    "finish_reason": _finish_reason(done),
                }
            ],
            "usage": usage,
        },
        admission.headers,
    )


def _finish_reason(done: Completion) -> str:
    return "length" if done.finish == "max_tokens" else "stop"


def _reject(exchange: Exchange, admission: Admission) -> None:
    """Answer 429 with retry-after and retry-after-ms; nothing was charged."""
    kind = admission.exceeded or "requests"
    wait = admission.retry_after
    message = (
        f"Rate limit reached for {exchange.body['model']} in organization org-sim on "
        f"{_LIMIT_WORDS.get(kind, kind)}: Limit {admission.limit:g}, Used {admission.used:.0f}, "
        f"Requested {admission.requested:g}. Please try again in {format_duration(wait)}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    headers = {
        "retry-after": str(whole_seconds(wait)),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000 - 1e-9))),
        **admission.headers,
    }
    exchange.send_error(
        429, message, error_type=kind, code="rate_limit_exceeded", headers=headers
    )


def _stream(
    exchange: Exchange, done: Completion, usage: dict[str, int], headers: dict[str, str]
) -> None:
    """Send the reply as OpenAI's chunk stream, honouring stream faults."""
    body = exchange.body
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage"))
    created = int(exchange.sim._wall_clock())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": f"chatcmpl-sim-{exchange.number}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
            "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return data

    fault = exchange.take_stream_fault()
    exchange.start_stream(headers)
    exchange.sse(None, chunk({"role": "assistant", "content": ""}))
    pieces = split_chunks(done.text)
    sent = len(pieces) if fault is None else min(fault.after_chunks, len(pieces))
    for piece in pieces[:sent]:
        exchange.sse(None, chunk({"content": piece}))
    if fault is not None:
        if fault.kind is FaultKind.STREAM_ERROR:
            exchange.sse(
                None,
                {
                    "error": {
                        "message": "The server had an error while processing your request. "
                        "Sorry about that!",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            exchange.end_stream()
        else:
            exchange.abort()
        return
    exchange.sse(None, chunk({}, _finish_reason(done)))
    if include_usage:
        final = chunk({})
        final["choices"] = []
        final["usage"] = usage
        exchange.sse(None, final)
    exchange.sse(None, "[DONE]")
    exchange.end_stream()


def models(exchange: Exchange) -> None:
    """``GET /v1/models`` in OpenAI's list shape."""
    if exchange.key_index is None:
        exchange.send_error(401, "Incorrect API key provided.", code="invalid_api_key")
        return
    data = [
        {"id": model, "object": "model", "created": 1_735_689_600, "owned_by": "llm-sync-sim"}
        for model in MODELS
    ]
    exchange.send_json(200, {"object": "list", "data": data})


def sample_body(exchange: Exchange) -> dict[str, Any]:
    """A plausible completion body, used (cut in half) by the invalid-JSON fault."""
    model = exchange.body.get("model") if isinstance(exchange.body, dict) else None
    return {
        "id": f"chatcmpl-sim-{exchange.number}",
        "object": "chat.completion",
        "created": int(exchange.sim._wall_clock()),
        "model": model or MODELS[0],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Simulated reply"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 2},
    }
