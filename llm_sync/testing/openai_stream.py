"""The message of an OpenAI answer, whole or as its ``data:`` chunk stream.

Streams send a first chunk with the role, then ``reasoning_content``,
``content`` or ``refusal`` deltas, then tool calls as
``delta.tool_calls[{index, ...}]``: one chunk per call with its ``id``,
``type`` and ``name`` (``arguments: ""``), then the arguments in several
fragments, the calls interleaved (call 0 fragment 1, call 1 fragment 1, ...).
A stream fault fires after that many deltas of any kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .anthropic_stream import json_fragments
from .faults import FaultKind
from .replies import split_chunks
from .tools import REFUSAL_TEXT, Answer

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["FINGERPRINT", "reply_message", "stream_chat"]

FINGERPRINT = "fp_sim"


def _call_id(exchange: Exchange, index: int) -> str:
    return f"call_sim_{exchange.number}_{index}"


def reply_message(exchange: Exchange, answer: Answer, text: str) -> dict[str, Any]:
    """``choices[0].message`` of a whole answer."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if answer.thinking is not None:
        message["reasoning_content"] = answer.thinking
    if answer.refusal:
        message.update(content=None, refusal=REFUSAL_TEXT)
    elif answer.calls:
        message["content"] = text or None
        message["tool_calls"] = [
            {"id": _call_id(exchange, index), "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for index, call in enumerate(answer.calls)
        ]
    return message


def _deltas(exchange: Exchange, answer: Answer, text: str) -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = []
    if answer.thinking is not None:
        deltas += [{"reasoning_content": chunk} for chunk in split_chunks(answer.thinking)]
    if answer.refusal:
        return deltas + [{"refusal": chunk} for chunk in split_chunks(REFUSAL_TEXT)]
    deltas += [{"content": chunk} for chunk in split_chunks(text)]
    fragments = []
    for index, call in enumerate(answer.calls):
        deltas.append({"tool_calls": [{"index": index, "id": _call_id(exchange, index), "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]})
        fragments.append(json_fragments(call.arguments))
    for round_ in range(max((len(parts) for parts in fragments), default=0)):
        for index, parts in enumerate(fragments):
            if round_ < len(parts):
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": parts[round_]}}]})
    return deltas


def stream_chat(
    exchange: Exchange, answer: Answer, text: str, finish: str, usage: dict[str, Any], headers: dict[str, str]
) -> None:
    """Send the answer as OpenAI's chunk stream, honouring stream faults."""
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
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return data

    fault = exchange.take_stream_fault()
    exchange.start_stream(headers)
    first: dict[str, Any] = {"role": "assistant", "content": ""}
    if answer.refusal:
        first.update(content=None, refusal="")
    elif answer.calls and not text:
        first["content"] = None
    exchange.sse(None, chunk(first))
    deltas = _deltas(exchange, answer, text)
    sent = len(deltas) if fault is None else min(fault.after_chunks, len(deltas))
    for delta in deltas[:sent]:
        exchange.sse(None, chunk(delta))
    if fault is not None:
        if fault.kind is FaultKind.STREAM_ERROR:
            exchange.sse(None, {"error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error", "param": None, "code": None,
            }})
            exchange.end_stream()
        else:
            exchange.abort()
        return
    exchange.sse(None, chunk({}, finish))
    if include_usage:
        final = chunk({})
        final["choices"] = []
        final["usage"] = usage
        exchange.sse(None, final)
    exchange.sse(None, "[DONE]")
    exchange.end_stream()
