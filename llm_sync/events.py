"""Typed stream events: what ``Stream.events()`` yields as a reply arrives.

Text-only callers keep iterating the stream for text chunks; callers that
need tool calls, reasoning or refusals as they arrive read these instead.
Both views come from the same decoder, so they never disagree.

Threading contract: immutable values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .tools import ToolCall

__all__ = ["TextDelta", "ThinkingDelta", "RefusalDelta", "ToolCallDelta", "ToolCallDone", "StreamEvent"]


@dataclass(frozen=True)
class TextDelta:
    """More answer text (exactly what text iteration yields)."""

    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """More of the model's reasoning (Anthropic ``thinking_delta``,
    ``reasoning_content`` on compatible servers)."""

    text: str


@dataclass(frozen=True)
class RefusalDelta:
    """More of a refusal (OpenAI ``delta.refusal``)."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A fragment of tool call ``index``: its ``id`` and ``name`` when they
    first appear, then pieces of its JSON ``arguments``."""

    index: int
    id: Optional[str] = None
    name: Optional[str] = None
    arguments: str = ""


@dataclass(frozen=True)
class ToolCallDone:
    """Tool call ``index`` is complete: its arguments parsed."""

    index: int
    tool_call: ToolCall


StreamEvent = Union[TextDelta, ThinkingDelta, RefusalDelta, ToolCallDelta, ToolCallDone]
