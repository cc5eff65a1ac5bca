"""The content of an Anthropic answer, whole or as its SSE event sequence.

Streams send every block as ``content_block_start``, deltas
(``text_delta``; ``thinking_delta`` then one ``signature_delta``;
``input_json_delta`` fragments — an empty one first, as the real API does,
then the JSON text in several pieces) and ``content_block_stop``.
A stream fault fires after that many deltas of any kind.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from .faults import FaultKind
from .limits import KeyLimiter
from .replies import Completion, count_tokens, split_chunks
from .tools import Answer, signature

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["content_blocks", "json_fragments", "stream_message"]

_JSON_PIECES = 3


def content_blocks(exchange: Exchange, answer: Answer, text: str) -> list[dict[str, Any]]:
    """The answer's content blocks: thinking, text, then tool calls."""
    blocks: list[dict[str, Any]] = []
    if answer.thinking is not None:
        blocks.append({"type": "thinking", "thinking": answer.thinking, "signature": signature(answer.thinking)})
    if text or not answer.calls:
        blocks.append({"type": "text", "text": text})
    for index, call in enumerate(answer.calls):
        blocks.append({"type": "tool_use", "id": f"toolu_sim_{exchange.number}_{index}",
                       "name": call.name, "input": call.input})
    return blocks


def json_fragments(text: str, pieces: int = _JSON_PIECES) -> list[str]:
    """``text`` cut into up to ``pieces`` consecutive fragments (at least two when it can be)."""
    size = max(1, math.ceil(len(text) / pieces))
    return [text[start:start + size] for start in range(0, len(text), size)] or [""]


def _deltas(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the block as content_block_start shows it, its deltas)."""
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": ""}, [
            {"type": "text_delta", "text": chunk} for chunk in split_chunks(block["text"])
        ]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": c} for c in split_chunks(block["thinking"])]
        return {"type": "thinking", "thinking": ""}, [
            *deltas, {"type": "signature_delta", "signature": block["signature"]}
        ]
    arguments = json.dumps(block["input"])
    fragments = ["", *json_fragments(arguments)]
    return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": f} for f in fragments]


def _delta_tokens(delta: dict[str, Any]) -> int:
    text = delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""
    return count_tokens(text)


def stream_message(
    exchange: Exchange,
    limiter: KeyLimiter,
    blocks: list[dict[str, Any]],
    stop_reason: str,
    done: Completion,
    usage: dict[str, int],
    headers: dict[str, str],
) -> None:
    """Send the answer as Anthropic's SSE event sequence, honouring stream faults."""
    body = exchange.body
    max_tokens: int = body["max_tokens"]
    fault = exchange.take_stream_fault()
    exchange.start_stream(headers)
    cache = {k: v for k, v in usage.items() if k.startswith("cache_")}
    exchange.sse("message_start", {
        "type": "message_start",
        "message": {
            "id": f"msg_sim_{exchange.number}", "type": "message", "role": "assistant", "content": [],
            "model": body["model"], "stop_reason": None, "stop_sequence": None,
            "usage": exchange.usage({"input_tokens": usage["input_tokens"], "output_tokens": 1, **cache}),
        },
    })
    exchange.sse("ping", {"type": "ping"})
    budget = None if fault is None else fault.after_chunks
    spent = 0
    for index, block in enumerate(blocks):
        start, deltas = _deltas(block)
        exchange.sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        for delta in deltas:
            if budget is not None and budget <= 0:
                break
            exchange.sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            spent += _delta_tokens(delta)
            budget = None if budget is None else budget - 1
        if fault is not None and budget is not None and (budget <= 0 or index == len(blocks) - 1):
            limiter.refund_output(max_tokens - spent)
            if fault.kind is FaultKind.STREAM_ERROR:
                exchange.sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                exchange.end_stream()
            else:
                exchange.abort()
            return
        exchange.sse("content_block_stop", {"type": "content_block_stop", "index": index})
    limiter.refund_output(max_tokens - usage["output_tokens"])
    exchange.sse("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": done.stop_sequence},
        "usage": exchange.usage({"output_tokens": usage["output_tokens"], **cache}),
    })
    exchange.sse("message_stop", {"type": "message_stop"})
    exchange.end_stream()
