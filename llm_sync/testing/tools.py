"""What the simulator answers beyond plain text, decided from markers in the prompt.

Markers are read from the text of the last message when it is a user turn
(not a turn of tool results), in this order:

``REFUSE``
    The model refuses: Anthropic ``stop_reason: "refusal"`` (with a short
    text block); OpenAI ``message.refusal`` (streamed ``delta.refusal``) and
    ``content: null``.
``CALL:name{json}``
    With ``tools`` in the request, a call of tool ``name`` with that JSON
    object as input (``CALL:name`` alone: ``{}``). Several markers are
    parallel calls, in order. Markers naming a tool the request does not
    declare, or with ``tool_choice`` none, are ignored.
``THINK``
    Reasoning first: an Anthropic ``thinking`` block with a ``signature``
    when the request enables ``thinking``; OpenAI ``reasoning_content``
    (as some compatible servers send it) and
    ``completion_tokens_details.reasoning_tokens``.
``BADJSON``
    The structured answer (forced tool, ``response_format`` json_schema) is
    invalid the first time this simulator sees that prompt text (invalid
    JSON arguments / content for OpenAI; an input of the wrong types for
    Anthropic); later requests carrying the same text (a repair) are valid.

Independently of markers: a forced tool (Anthropic ``{"type":"tool",
"name":N}``, OpenAI ``{"type":"function","function":{"name":N}}``) is called
with input generated from its schema (required properties only: strings
``"x"``, integers and numbers ``1``, booleans ``true``, the first ``enum``
value, nested objects and one-item arrays); ``any`` / ``required`` without a
marker calls the first tool the same way; OpenAI ``response_format``
json_schema answers JSON generated from the schema. A conversation ending in
tool results is answered by the reply function, whose default says
``"Result: <content>"`` (see :func:`.replies.default_reply`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .blocks import BlockError
from .replies import content_text, count_tokens

__all__ = [
    "Answer",
    "Call",
    "anthropic_tools",
    "find_calls",
    "openai_tools",
    "sample",
    "signature",
    "wrong_types",
]

_CALL = re.compile(r"CALL:([A-Za-z0-9_-]{1,64})")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REFUSAL_TEXT = "I can't help with that request."
_SAMPLE_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "x@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


@dataclass
class Call:
    """One tool call of an answer; ``arguments`` is the JSON text sent."""

    name: str
    arguments: str

    @property
    def input(self) -> Any:
        try:
            return json.loads(self.arguments)
        except ValueError:
            return {}

    @property
    def tokens(self) -> int:
        return count_tokens(self.name) + count_tokens(self.arguments)


@dataclass
class Answer:
    """Everything but the text of a reply, as the markers decided it."""

    calls: list[Call] = field(default_factory=list)
    refusal: bool = False
    thinking: str | None = None
    structured: str | None = None  # the whole content, for response_format

    @property
    def extra_tokens(self) -> int:
        tokens = sum(call.tokens for call in self.calls)
        return tokens + (count_tokens(self.thinking) if self.thinking else 0)


def signature(thinking: str) -> str:
    """The simulator's (deterministic) signature of a thinking text."""
    return base64.b64encode(hashlib.sha256(b"sim-thinking:" + thinking.encode()).digest()).decode()


def _deref(schema: Any, root: dict[str, Any]) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node
    return schema


def sample(schema: Any, root: dict[str, Any] | None = None) -> Any:
    """A value that satisfies a simple JSON schema (see the module docstring)."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _deref(schema, root)
    if not isinstance(schema, dict):
        return {}
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if _deref(o, root).get("type") != "null"] or options
            return sample(usable[0], root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: sample(properties.get(name, {}), root) for name in schema.get("required") or []}
    if kind == "array":
        return [sample(schema.get("items", {}), root) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1 if "exclusiveMinimum" in schema else 1)
        return max(1, int(low)) if kind == "integer" or float(low).is_integer() else low
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _SAMPLE_FORMATS.get(schema.get("format", ""), "x")
    return text * max(1, int(schema.get("minLength", 1))) if text == "x" else text


def wrong_types(schema: Any) -> dict[str, Any]:
    """An object whose required properties all have the wrong type (a structured-output failure)."""
    schema = _deref(schema, schema if isinstance(schema, dict) else {})
    required = schema.get("required") if isinstance(schema, dict) else None
    names = required or list((schema.get("properties") or {}) if isinstance(schema, dict) else []) or ["value"]
    return {name: [["not", "what", "you", "asked"]] for name in names}


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise BlockError(f"{where}: Input should be a JSON schema of type 'object'", where)


def anthropic_tools(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(schemas by tool name, tool choice) of an Anthropic request; raises BlockError."""
    tools = body.get("tools")
    schemas: dict[str, Any] = {}
    if tools is not None:
        if not isinstance(tools, list):
            raise BlockError("tools: Input should be a valid list")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or not _NAME.match(str(tool.get("name", ""))):
                raise BlockError(f"tools.{index}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if tool.get("type") in (None, "custom"):
                _check_schema(tool.get("input_schema"), f"tools.{index}.input_schema")
            if tool["name"] in schemas:
                raise BlockError(f"tools: Tool names must be unique. Duplicate: {tool['name']}")
            schemas[tool["name"]] = tool.get("input_schema") or {"type": "object"}
    choice = body.get("tool_choice")
    if choice is None:
        return schemas, "auto"
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise BlockError("tool_choice: Input tag should be 'auto', 'any', 'tool' or 'none'")
    if kind != "none" and not schemas:
        raise BlockError("tool_choice may only be specified while providing tools.")
    if kind == "tool":
        if choice.get("name") not in schemas:
            raise BlockError(f"tool_choice.name: Tool '{str(choice.get('name'))[:64]}' not found in tools")
        return schemas, ("tool", choice["name"])
    return schemas, kind


def openai_tools(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(schemas by tool name, tool choice) of an OpenAI request; raises BlockError."""
    tools = body.get("tools")
    schemas: dict[str, Any] = {}
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            raise BlockError("Invalid 'tools': empty array. Expected an array with minimum length 1.", "tools")
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                raise BlockError(f"Missing required parameter: 'tools[{index}].function'.", f"tools[{index}]")
            if not _NAME.match(str(function.get("name", ""))):
                raise BlockError(f"Invalid 'tools[{index}].function.name': string does not match pattern.",
                                 f"tools[{index}].function.name")
            parameters = function.get("parameters", {"type": "object", "properties": {}})
            _check_schema(parameters, f"tools[{index}].function.parameters")
            schemas[function["name"]] = parameters
    choice = body.get("tool_choice")
    if choice is None:
        return schemas, "auto"
    if choice in ("auto", "required", "none"):
        if choice != "none" and not schemas:
            raise BlockError("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                             "are specified.", "tool_choice")
        return schemas, "any" if choice == "required" else choice
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict) or choice.get("type") != "function":
        raise BlockError("Invalid value for 'tool_choice'.", "tool_choice")
    if function.get("name") not in schemas:
        raise BlockError(f"Invalid value for 'tool_choice': no function named "
                         f"'{str(function.get('name'))[:64]}' was specified in the 'tools' parameter.",
                         "tool_choice")
    return schemas, ("tool", function["name"])


def find_calls(text: str, schemas: dict[str, Any]) -> list[Call]:
    """The ``CALL:name{json}`` markers of ``text`` that name a declared tool."""
    decoder = json.JSONDecoder()
    calls: list[Call] = []
    for match in _CALL.finditer(text):
        name = match.group(1)
        if name not in schemas:
            continue
        arguments: Any = {}
        if text[match.end():match.end() + 1] == "{":
            try:
                arguments, _ = decoder.raw_decode(text, match.end())
            except ValueError:
                arguments = {}
        calls.append(Call(name, json.dumps(arguments if isinstance(arguments, dict) else {})))
    return calls


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """Text of the last message if it is a user turn (not a turn of tool results)."""
    if not messages or messages[-1].get("role") != "user":
        return ""
    content = messages[-1].get("content")
    if isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    ):
        return ""
    return content_text(content)


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [content_text(m.get("content")) for m in messages if m.get("role") == "user"]


def plan(
    messages: list[dict[str, Any]],
    schemas: dict[str, Any],
    choice: Any,
    *,
    thinking: bool,
    response_schema: Any = None,
    bad_json: Any = None,
    bad_style: str = "json",
) -> Answer:
    """Decide an answer's calls, refusal, thinking and structured content.

    ``bad_json(text) -> bool`` says whether a ``BADJSON`` prompt is seen for
    the first time; ``bad_style`` is ``"json"`` (invalid JSON text, OpenAI)
    or ``"types"`` (valid JSON of the wrong types, Anthropic).
    """
    prompt = last_user_text(messages)
    answer = Answer()
    if "REFUSE" in prompt:
        answer.refusal = True
        return answer
    if thinking and "THINK" in prompt:
        answer.thinking = "Thinking about: " + " ".join(prompt.split()[:40])
    forced = choice[1] if isinstance(choice, tuple) else None
    structured = forced is not None or response_schema is not None
    marked = next((text for text in user_texts(messages) if "BADJSON" in text), None)
    bad = structured and marked is not None and bad_json is not None and bool(bad_json(marked))

    def generated(schema: Any) -> str:
        if not bad:
            return json.dumps(sample(schema))
        return json.dumps(wrong_types(schema)) if bad_style == "types" else '{"unfinished": '

    if forced is not None:
        answer.calls = [Call(forced, generated(schemas[forced]))]
    elif choice != "none" and schemas:
        answer.calls = find_calls(prompt, schemas)
        if not answer.calls and choice == "any":
            first = next(iter(schemas))
            answer.calls = [Call(first, json.dumps(sample(schemas[first])))]
    if response_schema is not None and not answer.calls:
        answer.structured = generated(response_schema)
    return answer
