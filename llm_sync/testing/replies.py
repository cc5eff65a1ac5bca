"""Deterministic replies and token counting for the provider simulator.

Tests need answers and usage figures they can predict exactly, so the
simulator never imitates a real tokenizer; it uses one public rule instead.

Token counting rule (stable, public as :func:`count_tokens`)::

    count_tokens(text) == len(re.findall(r"\\w+|[^\\w\\s]", text))

Every run of word characters is one token and every other non-space
character is one token; whitespace is free.  ``"Hello, world!"`` is 4 tokens.

Input tokens of a request (:func:`count_input_tokens`)::

    count_tokens(system) + sum(count_tokens(text(m)) + 3 for m in messages) + 3

``text(m)`` joins the message's text blocks with newlines.  Anthropic's
top-level ``system`` is the ``system`` term (no +3); OpenAI system messages are
ordinary messages.  Output tokens are ``count_tokens`` of the emitted text.

Content blocks (images, documents, tools, tool calls and results) count
too; :func:`llm_sync.testing.count_input_tokens` applies the whole rule
(see :mod:`.blocks`).

Reply rule (:func:`default_reply`): a conversation ending in tool results
(Anthropic ``tool_result`` blocks, OpenAI ``tool`` messages) is answered
``"Result: <content>"`` (several joined by ``"; "``, an error result as
``"error: <content>"``). Otherwise, if an earlier user turn says "my name is X"
and the last user turn asks "what's my name" / "what is my name", the reply is
``"Your name is X."``; otherwise ``"Simulated reply to: <last user text>"``
with that text trimmed to its first 40 words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "TOKEN_PATTERN",
    "Completion",
    "complete",
    "content_text",
    "count_input_tokens",
    "count_tokens",
    "default_reply",
    "split_chunks",
]

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
_NAME_STATEMENT = re.compile(r"\bmy name is\s+(\w+)", re.IGNORECASE)
_NAME_QUESTION = re.compile(r"\bwhat(?:'s|\u2019s|\s+is)\s+my\s+name\b", re.IGNORECASE)
_CHUNK = re.compile(r"\s*\S+")
_REPLY_WORDS = 40
_PER_MESSAGE = 3
_PER_REQUEST = 3

FinishKind = Literal["end", "max_tokens", "stop_sequence"]


def count_tokens(text: str) -> int:
    """Count tokens with the simulator's documented rule (see module docstring)."""
    return sum(1 for _ in TOKEN_PATTERN.finditer(text))


def content_text(content: Any) -> str:
    """Flatten message content (a string or a list of text blocks) to plain text.

    Both providers accept either form; non-text parts contribute nothing.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable) and not isinstance(content, (bytes, Mapping)):
        parts = [
            block["text"]
            for block in content
            if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        ]
        return "\n".join(parts)
    return ""


def count_input_tokens(messages: Sequence[Mapping[str, Any]], system: Any = None) -> int:
    """Input tokens of a request: system text + per-message text + fixed overheads."""
    total = count_tokens(content_text(system)) + _PER_REQUEST
    for message in messages:
        total += count_tokens(content_text(message.get("content"))) + _PER_MESSAGE
    return total


def _tool_results(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tool results the conversation ends with, as text (empty if none)."""
    results: list[str] = []
    if messages and messages[-1].get("role") == "tool":
        index = len(messages)
        while index > 0 and messages[index - 1].get("role") == "tool":
            index -= 1
        return [content_text(message.get("content")) for message in messages[index:]]
    content = messages[-1].get("content") if messages and messages[-1].get("role") == "user" else None
    if isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "tool_result":
                text = content_text(block.get("content"))
                results.append(f"error: {text}" if block.get("is_error") else text)
    return results


def default_reply(messages: Sequence[Mapping[str, Any]]) -> str:
    """Answer a conversation deterministically: tool results, a stated name, an echo."""
    results = _tool_results(messages)
    if results:
        return "Result: " + "; ".join(results)
    user_texts = [
        content_text(message.get("content"))
        for message in messages
        if message.get("role") == "user"
    ]
    last = user_texts[-1] if user_texts else ""
    if _NAME_QUESTION.search(last):
        for earlier in reversed(user_texts[:-1]):
            names = _NAME_STATEMENT.findall(earlier)
            if names:
                return f"Your name is {names[-1]}."
    trimmed = " ".join(last.split()[:_REPLY_WORDS])
    return f"Simulated reply to: {trimmed}".rstrip()


@dataclass(frozen=True)
class Completion:
    """The part of a reply actually emitted, and why generation stopped."""

    text: str
    finish: FinishKind
    stop_sequence: str | None
    output_tokens: int


def complete(reply: str, *, max_tokens: int, stop_sequences: Iterable[str] = ()) -> Completion:
    """Cut ``reply`` at the earliest stop sequence, then to ``max_tokens`` tokens.

    Mirrors a real model: whichever limit is reached first wins.
    """
    text = reply
    finish: FinishKind = "end"
    matched: str | None = None
    best: int | None = None
    for sequence in stop_sequences:
        if not sequence:
            continue
        index = text.find(sequence)
        if index >= 0 and (best is None or index < best):
            best, matched = index, sequence
    if best is not None:
        text, finish = text[:best], "stop_sequence"
    tokens = list(TOKEN_PATTERN.finditer(text))
    if len(tokens) > max_tokens:
        text = text[: tokens[max_tokens - 1].end()] if max_tokens > 0 else ""
        finish, matched = "max_tokens", None
    return Completion(text, finish, matched, count_tokens(text))


def split_chunks(text: str) -> list[str]:
    """Split text into word-ish stream deltas whose concatenation is ``text``."""
    chunks = _CHUNK.findall(text)
    rest = text[sum(len(chunk) for chunk in chunks) :]
    if rest:
        if chunks:
            chunks[-1] += rest
        else:
            chunks.append(rest)
    return chunks
