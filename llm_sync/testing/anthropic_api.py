"""Simulation of Anthropic's Messages API (``/v1/messages`` and friends).

Clients written against the real API must work unchanged here, so bodies,
headers, error shapes and the SSE event sequence follow Anthropic's format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .anthropic_stream import content_blocks, stream_message
from .blocks import BlockError, Piece, anthropic_pieces, check_anthropic_tool_ids, check_anthropic_tools_defined
from .limits import Admission, whole_seconds
from .replies import complete
from .tools import REFUSAL_TEXT, anthropic_tools, plan

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["count_tokens_endpoint", "messages", "models", "sample_body", "validate"]

MODELS = ("claude-sim-1", "claude-sim-fast")
_STOP_REASONS = {"end": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence"}


@dataclass
class Prompt:
    """A checked request: its pieces (for tokens and caching), tools and thinking."""

    pieces: list[Piece]
    schemas: dict[str, Any]
    choice: Any
    thinking: bool

    @property
    def tokens(self) -> int:
        return sum(piece.tokens for piece in self.pieces)


_BUCKET_WORDS = {
    "requests": "requests",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
}


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


def _prompt(exchange: Exchange) -> Prompt | None:
    """Check and count the content, tools and thinking; answer 400 if any is wrong."""
    body = exchange.body
    try:
        pieces = anthropic_pieces(body)
        schemas, choice = anthropic_tools(body)
        check_anthropic_tool_ids(body["messages"])
        check_anthropic_tools_defined(body)
        thinking = _thinking(body, choice)
    except BlockError as exc:
        exchange.send_error(400, exc.message)
        return None
    return Prompt(pieces, schemas, choice, thinking)


def _thinking(body: dict[str, Any], choice: Any) -> bool:
    config = body.get("thinking")
    if config is None:
        return False
    kind = config.get("type") if isinstance(config, dict) else None
    if kind == "disabled":
        return False
    if kind != "enabled":
        raise BlockError("thinking.type: Input tag should be 'enabled' or 'disabled'")
    budget = config.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise BlockError("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if "max_tokens" in body and budget >= body["max_tokens"]:
        raise BlockError("`max_tokens` must be greater than `thinking.budget_tokens`.")
    if choice == "any" or isinstance(choice, tuple):
        raise BlockError("Thinking may not be enabled when tool_choice forces tool use.")
    return True


def count_tokens_endpoint(exchange: Exchange) -> None:
    """``POST /v1/messages/count_tokens``: the input tokens a message call would use."""
    if _admit(exchange, count_only=True):
        prompt = _prompt(exchange)
        if prompt is not None:
            exchange.send_json(200, {"input_tokens": prompt.tokens})


def messages(exchange: Exchange) -> None:
    """``POST /v1/messages``: a deterministic reply, rate limited per scope and model class.

    Cache writes are charged to the input-tokens bucket, cache reads are not."""
    if not _admit(exchange, count_only=False):
        return
    prompt = _prompt(exchange)
    if prompt is None:
        return
    body = exchange.body
    max_tokens: int = body["max_tokens"]
    assert exchange.key_index is not None
    sim = exchange.sim
    scope = f"anthropic:{sim._scope_name(exchange.key_index)}:{body['model']}"
    cache = sim._prompt_cache.anthropic(scope, prompt.pieces)
    input_tokens = prompt.tokens - cache.read - cache.created
    answer = plan(body["messages"], prompt.schemas, prompt.choice, thinking=prompt.thinking,
                  bad_json=sim._bad_json_once, bad_style="types")
    if answer.refusal:
        reply = REFUSAL_TEXT
    else:
        reply = "" if answer.calls else sim._reply(body["messages"])
    done = complete(reply, max_tokens=max_tokens, stop_sequences=body.get("stop_sequences") or ())
    limiter = sim._limiter(exchange.key_index, body["model"])
    admission = limiter.acquire_anthropic(input_tokens + cache.created, max_tokens)
    if not admission.allowed:
        _reject(exchange, admission)
        return
    sim._prompt_cache.commit(cache)
    usage = {"input_tokens": input_tokens, "output_tokens": done.output_tokens + answer.extra_tokens}
    if any(piece.ttl is not None for piece in prompt.pieces):
        usage.update(cache_creation_input_tokens=cache.created, cache_read_input_tokens=cache.read)
    if answer.refusal:
        stop_reason = "refusal"
    elif answer.calls:
        stop_reason = "tool_use"
    else:
        stop_reason = _STOP_REASONS[done.finish]
    reply_blocks = content_blocks(exchange, answer, done.text)
    if body.get("stream"):
        stream_message(exchange, limiter, reply_blocks, stop_reason, done, usage, admission.headers)
        return
    limiter.refund_output(max_tokens - usage["output_tokens"])
    exchange.send_json(
        200,
        {
            "id": f"msg_sim_{exchange.number}",
            "type": "message",
            "role": "assistant",
            "content": reply_blocks,
            "model": body["model"],
            "stop_reason": stop_reason,
            "stop_sequence": done.stop_sequence,
            "usage": exchange.usage(usage),
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
