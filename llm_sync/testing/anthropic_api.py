"""Simulation of Anthropic's Messages API (``/v1/messages`` and friends).

Clients written against the real API must work unchanged here, so bodies,
headers, error shapes and the SSE event sequence follow Anthropic's format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .faults import FaultKind
from .limits import Admission, KeyLimiter, whole_seconds
from .replies import Completion, complete, count_input_tokens, count_tokens, split_chunks

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["count_tokens_endpoint", "messages", "models", "sample_body", "validate"]

MODELS = ("claude-sim-1", "claude-sim-fast")
_STOP_REASONS = {"end": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence"}
_BUCKET_WORDS = {
    "requests": "requests",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
}


def _blocks_problem(value: Any, where: str) -> str | None:
    """Why ``value`` is not a string or a list of text blocks, if it is not."""
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return f"{where}: Input should be a valid string or a list of text blocks"
    for index, block in enumerate(value):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            return (
                f"{where}.{index}: the simulator accepts only "
                '{"type": "text", "text": ...} blocks'
            )
    return None


def validate(body: Any, *, count_only: bool = False) -> str | None:
    """Return why a Messages (or count_tokens) body is invalid, or None if it is fine."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required (a non-empty string)"
    if not count_only:
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return "max_tokens: Field required (a positive integer)"
        if not isinstance(body.get("stream", False), bool):
            return "stream: Input should be a valid boolean"
        stops = body.get("stop_sequences")
        if stops is not None and (
            not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
        ):
            return "stop_sequences: Input should be a list of strings"
        temperature = body.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not 0 <= temperature <= 1
        ):
            return "temperature: Input should be a number between 0 and 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty list)"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{index}: Input should be an object"
        role = message.get("role")
        if role == "system":
            return (
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        problem = _blocks_problem(message.get("content"), f"messages.{index}.content")
        if problem:
            return problem
    if body.get("system") is not None:
        return _blocks_problem(body["system"], "system")
    return None


def _admit(exchange: Exchange, *, count_only: bool) -> bool:
    """Check key, version header and body; answer the request if any is wrong."""
    if exchange.key_index is None:
        exchange.send_error(401, "invalid x-api-key")
        return False
    if not exchange.headers.get("anthropic-version"):
        exchange.send_error(400, "anthropic-version: header is required")
        return False
    if not exchange.body_ok:
        exchange.send_error(400, "There was an error parsing the body: invalid JSON")
        return False
    problem = validate(exchange.body, count_only=count_only)
    if problem:
        exchange.send_error(400, problem)
        return False
    return True


def count_tokens_endpoint(exchange: Exchange) -> None:
    """``POST /v1/messages/count_tokens``: the input tokens a message call would use."""
    if _admit(exchange, count_only=True):
        body = exchange.body
        tokens = count_input_tokens(body["messages"], body.get("system"))
        exchange.send_json(200, {"input_tokens": tokens})


def messages(exchange: Exchange) -> None:
    """``POST /v1/messages``: a deterministic reply, rate limited per key."""
    if not _admit(exchange, count_only=False):
        return
    body = exchange.body
    max_tokens: int = body["max_tokens"]
    input_tokens = count_input_tokens(body["messages"], body.get("system"))
    reply = exchange.sim._reply(body["messages"])
    done = complete(reply, max_tokens=max_tokens, stop_sequences=body.get("stop_sequences") or ())
    assert exchange.key_index is not None
    limiter = exchange.sim._limiter(exchange.key_index)
    admission = limiter.acquire_anthropic(input_tokens, max_tokens)
    if not admission.allowed:
        _reject(exchange, admission)
        return
    if body.get("stream"):
        _stream(exchange, limiter, input_tokens, done, admission.headers)
        return
    limiter.refund_output(max_tokens - done.output_tokens)
    exchange.send_json(
        200,
        {
            "id": f"msg_sim_{exchange.number}",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": done.text}],
            "model": body["model"],
            "stop_reason": _STOP_REASONS[done.finish],
            "stop_sequence": done.stop_sequence,
            "usage": exchange.usage({"input_tokens": input_tokens, "output_tokens": done.output_tokens}),
        },
        admission.headers,
    )


def _reject(exchange: Exchange, admission: Admission) -> None:
    """Answer 429 with retry-after; nothing was charged."""
    what = _BUCKET_WORDS.get(admission.exceeded or "", "requests")
    limit = int(admission.limit) if float(admission.limit).is_integer() else admission.limit
    message = (
        f"This request would exceed the rate limit for your organization of {limit} "
        f"{what} per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits."
    )
    headers = {"retry-after": str(whole_seconds(admission.retry_after)), **admission.headers}
    exchange.send_error(429, message, headers=headers)


def _stream(
    exchange: Exchange,
    limiter: KeyLimiter,
    input_tokens: int,
    done: Completion,
    headers: dict[str, str],
) -> None:
    """Send the reply as Anthropic's SSE event sequence, honouring stream faults."""
    body = exchange.body
    max_tokens: int = body["max_tokens"]
    fault = exchange.take_stream_fault()
    exchange.start_stream(headers)
    exchange.sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": f"msg_sim_{exchange.number}",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": body["model"],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": exchange.usage({"input_tokens": input_tokens, "output_tokens": 1}),
            },
        },
    )
    exchange.sse("ping", {"type": "ping"})
    exchange.sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    chunks = split_chunks(done.text)
    sent = len(chunks) if fault is None else min(fault.after_chunks, len(chunks))
    for chunk in chunks[:sent]:
        exchange.sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": chunk},
            },
        )
    if fault is not None:
        limiter.refund_output(max_tokens - count_tokens("".join(chunks[:sent])))
        if fault.kind is FaultKind.STREAM_ERROR:
            exchange.sse(
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
            exchange.end_stream()
        else:
            exchange.abort()
        return
    limiter.refund_output(max_tokens - done.output_tokens)
    exchange.sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    exchange.sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASONS[done.finish],
                "stop_sequence": done.stop_sequence,
            },
            "usage": exchange.usage({"output_tokens": done.output_tokens}),
        },
    )
    exchange.sse("message_stop", {"type": "message_stop"})
    exchange.end_stream()


def models(exchange: Exchange) -> None:
    """``GET /v1/models`` in Anthropic's paginated list shape."""
    if exchange.key_index is None:
        exchange.send_error(401, "invalid x-api-key")
        return
    data = [
        {
            "type": "model",
            "id": model,
            "display_name": f"Simulated {model}",
            "created_at": "2025-01-01T00:00:00Z",
        }
        for model in MODELS
    ]
    exchange.send_json(
        200, {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
    )


def sample_body(exchange: Exchange) -> dict[str, Any]:
    """A plausible message body, used (cut in half) by the invalid-JSON fault."""
    model = exchange.body.get("model") if isinstance(exchange.body, dict) else None
    return {
        "id": f"msg_sim_{exchange.number}",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Simulated reply"}],
        "model": model or MODELS[0],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 3},
    }
