"""Simulation of OpenAI's Chat Completions API (``/v1/chat/completions``).

Clients written against the real API must work unchanged here, so bodies,
headers, error shapes and the ``data:`` chunk stream follow OpenAI's format.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .blocks import BlockError, Piece, check_openai_tool_ids, openai_pieces
from .limits import Admission, format_duration, whole_seconds
from .openai_stream import FINGERPRINT, reply_message, stream_chat
from .replies import Completion, complete, count_tokens
from .tools import REFUSAL_TEXT, openai_tools, plan

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["DEFAULT_MAX_TOKENS", "chat_completions", "models", "sample_body", "validate"]

DEFAULT_MAX_TOKENS = 1024
MODELS = ("gpt-sim-1", "gpt-sim-mini")
_ROLES = ("system", "developer", "user", "assistant", "tool")
_LIMIT_WORDS = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


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
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return "Invalid value for 'response_format.type'.", "response_format.type"
        spec = response_format.get("json_schema")
        if kind == "json_schema" and (
            not isinstance(spec, dict) or not isinstance(spec.get("name"), str)
            or not isinstance(spec.get("schema"), dict)
        ):
            return "Missing required parameter: 'response_format.json_schema' (name and schema).", \
                "response_format.json_schema"
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


def _prompt(exchange: Exchange) -> tuple[list[Piece], dict[str, Any], Any] | None:
    """Check tool ids, content and tools; answer 400 if any is wrong."""
    body = exchange.body
    try:
        check_openai_tool_ids(body["messages"])
        pieces = openai_pieces(body)
        schemas, choice = openai_tools(body)
    except BlockError as exc:
        exchange.send_error(400, exc.message, param=exc.param, code=None)
        return None
    return pieces, schemas, choice


def _response_schema(body: dict[str, Any]) -> Any:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["schema"]
    if response_format.get("type") == "json_object":
        return {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}
    return None


def chat_completions(exchange: Exchange) -> None:
    """``POST /v1/chat/completions``: a deterministic reply, rate limited per scope and model."""
    if not _admit(exchange):
        return
    checked = _prompt(exchange)
    if checked is None:
        return
    pieces, schemas, choice = checked
    body = exchange.body
    sim = exchange.sim
    max_tokens: int = (
        body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    )
    prompt_tokens = sum(piece.tokens for piece in pieces)
    assert exchange.key_index is not None
    cache = sim._prompt_cache.openai(f"openai:{sim._scope_name(exchange.key_index)}:{body['model']}", pieces)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    answer = plan(body["messages"], schemas, choice, thinking=True,
                  response_schema=_response_schema(body), bad_json=sim._bad_json_once)
    if answer.refusal:
        reply = REFUSAL_TEXT
    elif answer.calls:
        reply = ""
    else:
        reply = answer.structured if answer.structured is not None else sim._reply(body["messages"])
    done = complete(reply, max_tokens=max_tokens, stop_sequences=stops)
    limiter = sim._limiter(exchange.key_index, body["model"])
    admission = limiter.acquire_openai(prompt_tokens + max_tokens)  # cached tokens included
    if not admission.allowed:
        _reject(exchange, admission)
        return
    sim._prompt_cache.commit(cache)
    completion = done.output_tokens + answer.extra_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    if prompt_tokens >= sim._prompt_cache.min_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cache.read}
    if answer.thinking is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": count_tokens(answer.thinking)}
    usage = exchange.usage(usage)
    finish = "tool_calls" if answer.calls else _finish_reason(done)
    if body.get("stream"):
        stream_chat(exchange, answer, done.text, finish, usage, admission.headers)
        return
    exchange.send_json(
        200,
        {
            "id": f"chatcmpl-sim-{exchange.number}",
            "object": "chat.completion",
            "created": int(sim._wall_clock()),
            "model": body["model"],
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": reply_message(exchange, answer, done.text),
                    "logprobs": None,
                    "finish_reason": finish,
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
