"""Tools in one provider-neutral form, and the calls a model makes.

A tool is given per call as a :class:`Tool`, a pydantic model class (its
JSON schema is the input schema, its docstring the description) or a dict
in either provider's native shape; :func:`normalize_tools` turns each into
a :class:`Tool`, which every endpoint kind maps to its wire format.
``tool_choice`` is ``"auto"``, ``"required"``, ``"none"`` or a tool name.

Threading contract: immutable values, shared freely.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import LLMValidationError

__all__ = ["Tool", "ToolCall", "ToolsInput", "normalize_tools", "normalize_tool_choice", "ToolChoice"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Tool(BaseModel):
    """A tool the model may call: ``Tool(name, description, input_schema)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    # An Anthropic prompt-cache breakpoint ({"type": "ephemeral"}): caches
    # the tools up to this one. Ignored by OpenAI, which caches by itself.
    cache_control: Optional[dict[str, Any]] = None

    def __init__(self, name: Any = None, description: Any = None, input_schema: Any = None, /,
                 **data: Any) -> None:
        for key, value in (("name", name), ("description", description), ("input_schema", input_schema)):
            if value is not None:
                data[key] = value
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise LLMValidationError(f"invalid Tool: {exc.errors()[0]['msg']}") from None
        if not _NAME.match(self.name):
            raise LLMValidationError(f"tool name must be 1-64 letters, digits, _ or -, got {self.name[:70]!r}")
        if self.input_schema.get("type", "object") != "object":
            raise LLMValidationError(f"tool {self.name}: input_schema must describe an object")

    @classmethod
    def from_model(cls, model: type[BaseModel], name: Optional[str] = None,
                   description: Optional[str] = None) -> "Tool":
        """A tool whose input is ``model`` (its JSON schema)."""
        schema = model.model_json_schema()
        doc = (model.__doc__ or "").strip()
        return cls(name or model.__name__, description if description is not None else doc,
                   {k: v for k, v in schema.items() if k != "title"})


class ToolCall(BaseModel):
    """A call the model made: ``id``, tool ``name``, parsed ``arguments``."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def parse(self, model: type[BaseModel]) -> BaseModel:
        """The arguments validated as ``model`` (LLMValidationError if not)."""
        try:
            return model.model_validate(self.arguments)
        except ValidationError as exc:
            raise LLMValidationError(f"tool call {self.name}: {exc.errors()[0]['msg']}") from None


ToolsInput = list[Union[Tool, type[BaseModel], dict[str, Any]]]
# Internal: "auto" | "required" | "none" | ("tool", name)
ToolChoice = Union[str, tuple[str, str]]


def normalize_tools(tools: Any) -> list[Tool]:
    """Every accepted tool shape → :class:`Tool` (LLMValidationError else)."""
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise LLMValidationError(f"tools must be a list, got {type(tools).__name__}")
    out: list[Tool] = []
    for index, tool in enumerate(tools):
        try:
            out.append(_one_tool(tool))
        except LLMValidationError as exc:
            raise LLMValidationError(f"tools[{index}]: {exc.message}") from None
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise LLMValidationError("tools: two tools have the same name")
    return out


def _one_tool(tool: Any) -> Tool:
    if isinstance(tool, Tool):
        return tool
    if isinstance(tool, type) and issubclass(tool, BaseModel):
        return Tool.from_model(tool)
    if isinstance(tool, dict):
        kind = tool.get("type")
        if kind == "function" and isinstance(tool.get("function"), dict):  # OpenAI
            fn = tool["function"]
            return Tool(fn.get("name"), fn.get("description") or "", fn.get("parameters") or None)
        if kind not in (None, "custom", "function"):
            # web_search_20250305, code_execution, bash_..., OpenAI's web_search, ...
            raise LLMValidationError(f"tool type {str(kind)[:60]!r}: server tools are not supported yet; "
                                     "pass them via extra_body")
        if "name" in tool and kind != "function":  # Anthropic
            return Tool(tool.get("name"), tool.get("description") or "", tool.get("input_schema") or None,
                        cache_control=tool.get("cache_control"))
    raise LLMValidationError("a tool is a Tool, a pydantic model class, or a dict in Anthropic or OpenAI shape")


def normalize_tool_choice(choice: Any, tools: list[Tool]) -> Optional[ToolChoice]:
    if choice is None:
        return None
    if choice in ("auto", "required", "none"):
        return str(choice)
    if choice == "any":  # Anthropic's word for required
        return "required"
    if isinstance(choice, dict):  # native shapes
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        kind = choice.get("type")
        if name:
            choice = name
        elif kind in ("auto", "none"):
            return str(kind)
        elif kind == "any":
            return "required"
    if isinstance(choice, str):
        if choice not in {t.name for t in tools}:
            raise LLMValidationError(f"tool_choice {choice[:70]!r} names no tool given in tools")
        return ("tool", choice)
    raise LLMValidationError("tool_choice must be 'auto', 'required', 'none' or a tool name")


def parse_arguments(text: str) -> dict[str, Any]:
    """A tool call's JSON arguments (OpenAI sends a string): a dict, or
    LLMValidationError-free fallback ``{}`` plus the raw text kept aside."""
    try:
        value = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_value": value}
