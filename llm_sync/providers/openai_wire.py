"""OpenAI Chat Completions shapes: content blocks, tools and structured
output to the wire, and an answer's message back to typed pieces.

Pure functions of values (no I/O, no state); :mod:`.openai` uses them to
build bodies and parse answers, streamed or not.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..content import (
    ContentBlock,
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ..errors import LLMValidationError
from ..models import Message, MessageRole, Usage
from ..tokens import plausible_count
from ..tools import Tool, ToolCall, ToolChoice, parse_arguments

__all__ = ["wire_messages", "wire_tools", "wire_tool_choice", "wire_response_format", "strict_schema",
           "usage_from", "text_field", "AnswerParts", "parse_message", "tool_call"]

# An is_error tool result is sent with this prefix: OpenAI's tool message
# has no error flag.
ERROR_PREFIX = "Error: "
SYSTEM_SEPARATOR = "\n\n"  # between the text blocks of a system prompt


def text_field(value: Any) -> Optional[str]:
    """A text field of the answer: a string or null, nothing else."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"a text field holds {type(value).__name__}")


# --- request -------------------------------------------------------------
def wire_messages(system: Union[str, list[ContentBlock], None], messages: list[Message]) -> list[dict[str, Any]]:
    """The ``messages`` array: the system prompt first, then each turn. A
    turn whose content is a string stays a string on the wire. Tool
    messages go directly after the assistant turn that made their calls
    (OpenAI requires it; a portable history may hold a user turn between)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": _system_content(system)})
    for index, message in enumerate(messages):
        try:
            out += _turn(message)
        except LLMValidationError as exc:
            raise LLMValidationError(f"messages[{index}]: {exc.message}") from None
    return _results_after_calls(out)


def _results_after_calls(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each tool message moved up to follow the (nearest earlier) assistant
    turn that made its call, after that turn's other results; the order
    is otherwise kept. A result whose call is not found stays put."""
    owner: dict[int, int] = {}  # index of a tool message -> index of its assistant turn
    made: dict[str, int] = {}  # call id -> index of the latest assistant turn that made it
    for index, turn in enumerate(turns):
        if turn["role"] == "assistant":
            for call in turn.get("tool_calls") or ():
                made[call["id"]] = index
        elif turn["role"] == "tool" and turn["tool_call_id"] in made:
            owner[index] = made[turn["tool_call_id"]]
    results: dict[int, list[dict[str, Any]]] = {}
    for index, owner_index in owner.items():
        results.setdefault(owner_index, []).append(turns[index])
    ordered: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        if index in owner:
            continue
        ordered.append(turn)
        ordered += results.get(index, [])
    return ordered


def _system_content(system: Union[str, list[ContentBlock]]) -> str:
    if isinstance(system, str):
        return system
    parts = []
    for block in system:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, DocumentBlock) and block.text is not None:
            parts.append(block.text)
        elif not isinstance(block, ThinkingBlock):
            raise LLMValidationError(f"a system prompt holds text only on this endpoint kind, not {block.type}")
    return SYSTEM_SEPARATOR.join(parts)


def _turn(message: Message) -> list[dict[str, Any]]:
    role = message.role
    if isinstance(message.content, str):
        if role is MessageRole.TOOL:
            raise LLMValidationError("a tool message needs a tool result block: use Message.tool_result(...)")
        return [{"role": role.value, "content": message.content}]
    blocks = message.content
    if role is MessageRole.SYSTEM:
        return [{"role": "system", "content": _system_content(blocks)}]
    if role is MessageRole.ASSISTANT:
        return [_assistant(blocks)]
    # USER or TOOL: tool results become tool messages, the rest one user turn after them.
    out = [_tool_message(b) for b in blocks if isinstance(b, ToolResultBlock)]
    parts = [_part(b) for b in blocks if not isinstance(b, (ToolResultBlock, ThinkingBlock))]
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _part(block: ContentBlock) -> dict[str, Any]:
    """A user content part."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        url = block.url if block.url is not None else f"data:{block.media_type};base64,{block.data}"
        image: dict[str, Any] = {"url": url}
        detail = getattr(block, "detail", None)
        if detail is not None:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    if isinstance(block, DocumentBlock):
        if block.text is not None:
            return {"type": "text", "text": block.text}
        if block.data is None:
            raise LLMValidationError("a document by URL cannot be sent to this endpoint kind (send its bytes)")
        filename = block.title or ("document.pdf" if block.media_type == "application/pdf" else "document")
        return {"type": "file", "file": {"file_data": f"data:{block.media_type};base64,{block.data}",
                                         "filename": filename}}
    raise LLMValidationError(f"a user turn cannot hold a {block.type} block (an assistant turn can)")


def _assistant(blocks: list[ContentBlock]) -> dict[str, Any]:
    """Text joined into ``content`` (null when there is none but tool
    calls), tool use blocks as ``tool_calls``; thinking is dropped."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": _arguments(block.input)}})
        elif not isinstance(block, ThinkingBlock):
            raise LLMValidationError(f"an assistant turn cannot hold a {block.type} block on this endpoint kind")
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        turn["tool_calls"] = calls
    return turn


def _arguments(value: dict[str, Any]) -> str:
    """A call's arguments as the JSON string OpenAI sends; arguments that
    were not valid JSON when they arrived (kept as ``{"_raw": text}``) go
    back as the text they were."""
    if set(value) == {"_raw"} and isinstance(value["_raw"], str):
        return value["_raw"]
    return json.dumps(value, ensure_ascii=False)


def _tool_message(block: ToolResultBlock) -> dict[str, Any]:
    content = block.content
    if not isinstance(content, str):
        other = [b.type for b in content if not isinstance(b, (TextBlock, ThinkingBlock))
                 and not (isinstance(b, DocumentBlock) and b.text is not None)]
        if other:
            raise LLMValidationError(f"a tool result holds text only on this endpoint kind, not {other[0]}")
        content = "".join(b.text or "" for b in content if isinstance(b, (TextBlock, DocumentBlock)))
    if block.is_error:
        content = ERROR_PREFIX + content
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def wire_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = tool.input_schema
        out.append({"type": "function", "function": function})
    return out


def wire_tool_choice(choice: ToolChoice) -> Union[str, dict[str, Any]]:
    if isinstance(choice, tuple):
        return {"type": "function", "function": {"name": choice[1]}}
    return choice


def wire_response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": strict_schema(schema), "strict": True}}


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as OpenAI's strict mode requires it (as the official SDK
    does for a pydantic model): every object closed
    (``additionalProperties: false``) with all its properties required, and
    no ``default: null``. A schema already in that form is unchanged."""
    strict: dict[str, Any] = _strict(copy.deepcopy(schema))
    return strict


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    properties = node.get("properties")
    if node.get("type") == "object" or isinstance(properties, dict):
        node.setdefault("additionalProperties", False)
        if isinstance(properties, dict):
            node["required"] = list(properties)
    if "default" in node and node["default"] is None:
        del node["default"]
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(node.get(key), dict):
            node[key] = {name: _strict(sub) for name, sub in node[key].items()}
    for key in ("items", "anyOf", "allOf", "oneOf", "prefixItems", "not"):
        if key in node:
            node[key] = _strict(node[key])
    return node


# --- answer --------------------------------------------------------------
def usage_from(data: Any) -> Usage:
    """Usage figures; one that is not a plausible count (a string, a bool,
    negative, 10**15, ``1e999``) is left out (0 or None, and not among the
    Usage's set fields): unknown, the estimate stands. ``cached_tokens``
    are part of ``prompt_tokens``."""
    usage = Usage()
    if isinstance(data, dict):
        for wire_name, name in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
            value = plausible_count(data.get(wire_name))
            if value is not None:
                setattr(usage, name, value)
        prompt = data.get("prompt_tokens_details")
        if isinstance(prompt, dict):
            usage.cache_read_input_tokens = plausible_count(prompt.get("cached_tokens"))
        completion = data.get("completion_tokens_details")
        if isinstance(completion, dict):
            usage.reasoning_tokens = plausible_count(completion.get("reasoning_tokens"))
    return usage


def tool_call(index: int, call_id: Any, name: Any, arguments: Any) -> ToolCall:
    """A typed call from the wire's pieces; a server that sent no id gets
    ``call_<index>``, arguments as an object (some servers) are taken as
    they are."""
    if not isinstance(name, str) or not name:
        raise TypeError("a tool call without a function name")
    if isinstance(arguments, dict):
        parsed = arguments
    else:
        parsed = parse_arguments(text_field(arguments) or "")
    return ToolCall(id=call_id if isinstance(call_id, str) and call_id else f"call_{index}",
                    name=name, arguments=parsed)


@dataclass
class AnswerParts:
    """What an assistant message holds beyond ``content``."""

    tool_calls: list[ToolCall] = field(default_factory=list)
    refusal: Optional[str] = None
    thinking: Optional[str] = None

    def blocks(self, text: str) -> list[ContentBlock]:
        """The answer as blocks: its text, then one block per tool call."""
        blocks: list[ContentBlock] = [TextBlock(text)] if text else []
        blocks += [ToolUseBlock(c.id, c.name, c.arguments) for c in self.tool_calls]
        return blocks


def parse_message(message: dict[str, Any]) -> AnswerParts:
    """``tool_calls``, ``refusal`` and the reasoning text
    (``reasoning_content``; ``reasoning`` on some gateways) of a message."""
    calls = message.get("tool_calls")
    if not isinstance(calls, (list, type(None))):
        raise TypeError("tool_calls must be a list")
    parts = AnswerParts()
    for index, call in enumerate(calls or []):
        function = call.get("function")
        if not isinstance(function, dict):
            raise TypeError("a tool call without a function object")
        parts.tool_calls.append(tool_call(index, call.get("id"), function.get("name"), function.get("arguments")))
    parts.refusal = text_field(message.get("refusal")) or None
    thinking = message.get("reasoning_content")
    if thinking is None and isinstance(message.get("reasoning"), str):
        thinking = message["reasoning"]
    parts.thinking = text_field(thinking) or None
    return parts
