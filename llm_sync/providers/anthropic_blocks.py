"""Anthropic Messages wire format for content blocks, tools and system
prompts: typed blocks → the request's JSON, the answer's JSON → typed blocks.

Pure functions, no I/O; used by :mod:`llm_sync.providers.anthropic`.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from ..content import (
    ContentBlock,
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    parse_block,
)
from ..errors import LLMValidationError
from ..models import Message, MessageRole, Usage
from ..tokens import plausible_count
from ..tools import Tool, ToolCall, ToolChoice
from .base import LLMRequest

__all__ = ["wire_block", "wire_messages", "wire_system", "wire_tools", "wire_tool_choice", "tools_and_choice",
           "parse_content", "usage_of", "text_field", "REFUSAL_NOTE", "STRUCTURED_TOOL_DESCRIPTION"]

# LLMResponse.refusal when the model refused (stop_reason "refusal") without a word.
REFUSAL_NOTE = "the model declined to answer (stop_reason: refusal)"
STRUCTURED_TOOL_DESCRIPTION = "Give the answer by calling this tool; its input is the answer."
# Answer block types parse_content turns into typed blocks (others stay in ``raw``).
_KNOWN = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})

Wire = dict[str, Any]
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def usage_of(data: Any, into: Optional[Usage] = None) -> Usage:
    """Usage figures; one that is not a plausible count (a string, a bool,
    negative, 10**15) is left out, as if the server had not sent it."""
    usage = into or Usage()
    if isinstance(data, dict):
        for name in _USAGE_FIELDS:
            value = plausible_count(data.get(name))
            if value is not None:
                setattr(usage, name, value)
    return usage


def text_field(value: Any) -> Optional[str]:
    """A text field of the answer: a string or absent, nothing else."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"a text field holds {type(value).__name__}")


def _cached(wire: Wire, block: Any) -> Wire:
    """``wire`` with the block's (or tool's) ``cache_control``, if it has one
    (read with getattr: not every block type carries the field)."""
    control = getattr(block, "cache_control", None)
    if control is not None:
        wire["cache_control"] = dict(control)
    return wire


def _image_source(block: ImageBlock) -> Wire:
    if block.data is not None:
        return {"type": "base64", "media_type": block.media_type, "data": block.data}
    url = block.url or ""
    if url.startswith("data:"):  # Anthropic takes no data: URLs: send their bytes inline
        inline = parse_block({"type": "image_url", "image_url": {"url": url}})
        assert isinstance(inline, ImageBlock)
        return {"type": "base64", "media_type": inline.media_type, "data": inline.data}
    return {"type": "url", "url": url}


def wire_block(block: ContentBlock) -> Wire:
    """One typed block in Anthropic's shape."""
    if isinstance(block, TextBlock):
        return _cached({"type": "text", "text": block.text}, block)
    if isinstance(block, ImageBlock):
        return _cached({"type": "image", "source": _image_source(block)}, block)
    if isinstance(block, DocumentBlock):
        url = getattr(block, "url", None)
        if block.data is not None:
            source: Wire = {"type": "base64", "media_type": block.media_type, "data": block.data}
        elif block.text is None and url is not None:
            source = {"type": "url", "url": url}
        else:
            source = {"type": "text", "media_type": "text/plain", "data": block.text}
        wire: Wire = {"type": "document", "source": source}
        if block.title:
            wire["title"] = block.title
        return _cached(wire, block)
    if isinstance(block, ToolUseBlock):
        return _cached({"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}, block)
    if isinstance(block, ToolResultBlock):
        content: Any = block.content if isinstance(block.content, str) else [
            wire_block(b) for b in block.content]
        wire = {"type": "tool_result", "tool_use_id": block.tool_use_id, "content": content}
        if block.is_error:
            wire["is_error"] = True
        return _cached(wire, block)
    if isinstance(block, ThinkingBlock):
        if block.redacted is not None:
            return {"type": "redacted_thinking", "data": block.redacted}
        wire = {"type": "thinking", "thinking": block.thinking}
        if block.signature is not None:
            wire["signature"] = block.signature
        return wire
    raise LLMValidationError(f"a {type(block).__name__} cannot be sent to an Anthropic endpoint")


def _turn_blocks(message: Message) -> list[Wire]:
    """A turn's blocks on the wire. Anthropic rejects text blocks that are
    empty or whitespace only (an answer may hold one, e.g. "\n\n" before
    its tool_use, and to_message() keeps it): they are dropped unless they
    carry a cache breakpoint. In a user turn the tool_result blocks come
    first (Anthropic requires it)."""
    blocks = [wire_block(b) for b in message.blocks]
    kept = [b for b in blocks if not _blank_text(b)] or blocks
    if message.role is not MessageRole.ASSISTANT:
        kept = _results_first(kept)
    return kept


def _blank_text(block: Wire) -> bool:
    return block["type"] == "text" and not block["text"].strip() and "cache_control" not in block


def _results_first(blocks: list[Wire]) -> list[Wire]:
    """tool_result blocks first, each group in its order."""
    return [b for b in blocks if b["type"] == "tool_result"] + [b for b in blocks if b["type"] != "tool_result"]


def wire_messages(messages: list[Message]) -> list[Wire]:
    """The ``messages`` array: user/assistant turns only (system goes top
    level). A TOOL message becomes a user turn of its tool_result blocks;
    a user turn next to one is merged with it, tool results first, since
    Anthropic wants the results of one assistant turn in the next user turn
    (and alternating roles)."""
    turns: list[Wire] = []
    for message in messages:
        if message.role is MessageRole.SYSTEM:
            continue
        if message.role is MessageRole.TOOL:
            if not all(isinstance(b, ToolResultBlock) for b in message.blocks):
                raise LLMValidationError("a tool message holds tool_result blocks only (use Message.tool_result)")
            turn: Wire = {"role": "user", "content": _turn_blocks(message), "_tool": True}
        else:
            content: Any = message.content if isinstance(message.content, str) else _turn_blocks(message)
            turn = {"role": message.role.value, "content": content, "_tool": False}
        previous = turns[-1] if turns else None
        if previous is not None and previous["role"] == turn["role"] == "user" and (previous["_tool"] or turn["_tool"]):
            merged = _as_blocks(previous["content"]) + _as_blocks(turn["content"])
            previous["content"] = _results_first([b for b in merged if not _blank_text(b)] or merged)
            previous["_tool"] = True
        else:
            turns.append(turn)
    for turn in turns:
        del turn["_tool"]
    return turns


def _as_blocks(content: Any) -> list[Wire]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def wire_system(request: LLMRequest) -> Union[str, list[Wire], None]:
    """The top-level ``system``: ``request.system`` then SYSTEM messages. A
    string when it is plain text; a list of text blocks when any block
    carries ``cache_control`` (a prompt-cache breakpoint)."""
    sources: list[Union[str, list[ContentBlock]]] = [request.system] if request.system else []
    sources += [m.content for m in request.messages if m.role is MessageRole.SYSTEM]
    blocks: list[TextBlock] = []
    for source in sources:
        if isinstance(source, str):
            blocks.append(TextBlock(source))
            continue
        for block in source:
            if not isinstance(block, TextBlock):
                raise LLMValidationError(f"a system prompt holds text blocks only, not {block.type}")
            blocks.append(block)
    if not blocks:
        return None
    if all(b.cache_control is None for b in blocks):
        return request.system_text()
    return [wire_block(b) for b in blocks if b.text or b.cache_control is not None]


def wire_tools(tools: list[Tool]) -> list[Wire]:
    out = []
    for tool in tools:
        wire: Wire = {"name": tool.name}
        if tool.description:
            wire["description"] = tool.description
        wire["input_schema"] = dict(tool.input_schema)
        out.append(_cached(wire, tool))
    return out


def wire_tool_choice(choice: ToolChoice) -> Wire:
    if isinstance(choice, tuple):
        return {"type": "tool", "name": choice[1]}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}


def tools_and_choice(request: LLMRequest) -> Wire:
    """``tools`` and ``tool_choice`` for the body. Structured output
    (``response_schema``) adds a tool of that name and forces it, unless the
    caller chose otherwise; next to the caller's own tools the choice is
    ``any`` (some tool must be called: one of theirs, or the schema's, so
    theirs stay callable); with extended thinking on (which allows no
    forced tool) the choice is ``auto``."""
    tools = list(request.tools)
    choice: Optional[ToolChoice] = request.tool_choice
    if request.response_schema is not None:
        name, schema = request.response_schema
        if name not in {t.name for t in tools}:
            tools.append(Tool(name, STRUCTURED_TOOL_DESCRIPTION, schema))
        if choice is None:
            if _thinking_on(request):
                choice = "auto"
            elif any(t.name != name for t in request.tools):
                choice = "required"
            else:
                choice = ("tool", name)
    out: Wire = {}
    if tools:
        out["tools"] = wire_tools(tools)
        if choice is not None:
            out["tool_choice"] = wire_tool_choice(choice)
    return out


def _thinking_on(request: LLMRequest) -> bool:
    thinking = {**request.extras, **request.extra_body}.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


class ParsedContent:
    """An answer's ``content`` array, typed."""

    def __init__(self, blocks: list[ContentBlock]) -> None:
        self.blocks = blocks
        self.text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
        self.tool_calls = [ToolCall(id=b.id, name=b.name, arguments=dict(b.input))
                           for b in blocks if isinstance(b, ToolUseBlock)]
        thoughts = [b.thinking for b in blocks if isinstance(b, ThinkingBlock) and b.redacted is None]
        self.thinking: Optional[str] = "".join(thoughts) if thoughts else None

    def refusal(self, stop_reason: Optional[str]) -> Optional[str]:
        if stop_reason != "refusal":
            return None
        return self.text or REFUSAL_NOTE


def parse_content(content: list[Any]) -> ParsedContent:
    """Typed blocks from an answer's ``content``; block types this client
    does not model (server tools, web search results) are skipped (they stay
    in ``raw``). A known block of the wrong shape raises (a ValueError)."""
    blocks = []
    for item in content:
        if not isinstance(item, dict):
            raise TypeError("a content block is not an object")
        if item.get("type") in _KNOWN:
            if item["type"] == "text" and not isinstance(item.get("text"), str):
                raise TypeError("a text block without text")
            blocks.append(parse_block(item))
    return ParsedContent(blocks)
