"""Checks of a call's arguments: every one is refused here, with a clear
LLMValidationError, before anything is sent."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping, Optional, Union

from .call import UNSET, Unset
from .content import ContentBlock, TextBlock, parse_blocks
from .errors import LLMValidationError
from .providers.base import Provider, with_query
from .sendable import HEADER_NAME, header_value_problem, utf8_problem
from .structured import response_schema
from .tools import Tool, ToolChoice, normalize_tool_choice, normalize_tools

__all__ = ["MAX_TOKENS_LIMIT", "shown", "check_timeout", "check_max_retries", "check_retry_budget",
           "check_headers", "check_query", "check_body", "stop_list", "CONTROL", "check_system",
           "check_tools"]

# Far above any model's output limit, and what a server's 32-bit field holds.
MAX_TOKENS_LIMIT = 2**31 - 1


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message: clipped, and never failing (an int of
    5,000 digits has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        return f"an {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _seconds(value: Any) -> Optional[float]:
    """``value`` as positive, finite seconds; None if it is not that (an
    int too large for a float included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if 0 < seconds < math.inf else None


def check_timeout(timeout: Any) -> Union[float, None, Unset]:
    if timeout is UNSET or timeout is None:
        return timeout
    seconds = _seconds(timeout)
    if seconds is None:
        raise LLMValidationError(
            f"timeout must be a positive, finite number of seconds (or None), got {shown(timeout)}")
    return seconds


def check_max_retries(value: Any) -> Union[int, Unset]:
    if value is UNSET:
        return value
    if value is None:  # the seed's habit: None means "the configured number"
        return UNSET
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LLMValidationError(f"max_retries must be a non-negative integer, got {shown(value)}")
    return value


def check_retry_budget(value: Any) -> Union[float, None, Unset]:
    if value is UNSET or value is None:
        return value
    seconds = _seconds(value)
    if seconds is None:
        raise LLMValidationError(f"retry_budget must be a positive number of seconds (or None), got {shown(value)}")
    return seconds


def check_headers(headers: Any, provider: Provider) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise LLMValidationError(f"extra_headers must be a mapping of names to strings, got {type(headers).__name__}")
    auth = _KEY_HEADERS | {name.lower() for name in provider.auth_headers("")}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise LLMValidationError(f"extra_headers: {shown(name)} is not a valid header name")
        if name.lower() in auth:
            raise LLMValidationError(f"extra_headers: {name} carries the API key; configure keys in api_keys")
        problem = header_value_problem(value)
        if problem:
            raise LLMValidationError(f"extra_headers: the value of {name} {problem}")
        out[name] = value
    return out


def check_query(query: Any) -> dict[str, Any]:
    if query is None:
        return {}
    if not isinstance(query, Mapping) or not all(isinstance(k, str) and k for k in query):
        raise LLMValidationError("extra_query must be a mapping with non-empty string keys")
    for name, value in query.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            raise LLMValidationError(f"extra_query: {shown(name)} must be a string or number (or a list of them)")
    try:  # as the provider will, on every attempt
        with_query("", query).encode("ascii")
    except (ValueError, UnicodeError) as exc:  # a lone surrogate, an int too long to print
        raise LLMValidationError(f"extra_query cannot be put in a URL: {type(exc).__name__}") from None
    return dict(query)


def check_body(body: Any, what: str) -> dict[str, Any]:
    """A JSON object the server can read: refused now, never sent broken."""
    if body is None or (type(body) is dict and not body):  # nothing to check (every plain call's extras)
        return {}
    if not isinstance(body, Mapping) or not all(isinstance(k, str) for k in body):
        raise LLMValidationError(f"{what} must be a mapping with string keys")
    if what == "extra_body" and "stream" in body:
        raise LLMValidationError("extra_body cannot set stream: use stream() or stream_complete()")
    try:  # ensure_ascii=False: a lone surrogate fails here, not as an escape the server refuses
        json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise LLMValidationError(f"{what} cannot be sent as JSON: {type(exc).__name__}") from None
    return dict(body)


# Headers that carry credentials: keys belong in api_keys, where they are
# kept secret, never in per-call headers that middleware and logs can see.
_KEY_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
# A model name goes into logs and metric labels: one line, no control characters.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def stop_list(stop: Any) -> Optional[list[str]]:
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise LLMValidationError(f"stop must be a string or a list of non-empty strings, got {shown(stop)}")
    for index, text in enumerate(stops):
        if utf8_problem(text):
            raise LLMValidationError(f"stop[{index}] {utf8_problem(text)}")
    return list(stops) or None


def check_system(system: Any) -> Union[str, list[ContentBlock], None]:
    """A system prompt: a non-empty string, or a list of text blocks (typed
    or native dicts; ``cache_control`` on them is kept)."""
    if system is None:
        return None
    if isinstance(system, str):
        if not system.strip():
            raise LLMValidationError("system must not be empty")
        if utf8_problem(system):
            raise LLMValidationError(f"system {utf8_problem(system)}")
        return system
    if not isinstance(system, (list, tuple)) or not system:
        raise LLMValidationError(f"system must be a non-empty string or a list of text blocks, got {shown(system)}")
    try:
        blocks = parse_blocks(system)
    except LLMValidationError as exc:
        raise LLMValidationError(f"system: {exc.message}") from None
    for index, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            raise LLMValidationError(f"system[{index}]: a system prompt holds text blocks only, got {block.type}")
        if not block.text.strip():
            raise LLMValidationError(f"system[{index}]: a text block must not be empty")
        if utf8_problem(block.text):
            raise LLMValidationError(f"system[{index}] {utf8_problem(block.text)}")
    return blocks


# Body fields each typed argument sets: given both ways, one would silently
# overwrite the other (extra_body is merged last), so both are refused.
_RAW_FIELDS = {
    "tools": ("tools", "functions"),
    "tool_choice": ("tool_choice", "function_call"),
    "response_model": ("response_format", "tools", "tool_choice"),
}


def check_tools(tools: Any, tool_choice: Any, response_model: Any, stream: bool,
                raw_keys: Iterable[str]) -> tuple[list[Tool], Optional[ToolChoice],
                                                  Optional[tuple[str, dict[str, Any]]]]:
    """``(tools, tool_choice, response_schema)`` for the request."""
    normalized = normalize_tools(tools)
    if tool_choice is not None and not normalized:
        raise LLMValidationError("tool_choice needs tools: pass the tools it chooses from in tools=[...]")
    choice = normalize_tool_choice(tool_choice, normalized)
    schema = None
    if response_model is not None:
        if stream:
            raise LLMValidationError(
                "response_model is not supported by stream(): a partial answer cannot be validated and a "
                "repair needs a second call; use complete(..., response_model=...)")
        if tool_choice is not None:
            raise LLMValidationError("response_model decides the tool choice (Anthropic forces its tool): "
                                     "do not pass tool_choice with it")
        schema = response_schema(response_model)
        if schema[0] in {tool.name for tool in normalized}:
            raise LLMValidationError(f"tools: a tool is named {schema[0]}, like the response_model's schema")
    given = {"tools": bool(normalized), "tool_choice": choice is not None, "response_model": schema is not None}
    keys = set(raw_keys)
    for argument, fields in _RAW_FIELDS.items():
        clash = sorted(keys.intersection(fields)) if given[argument] else []
        if clash:
            raise LLMValidationError(f"{clash[0]} is set both by {argument}= and as a raw body field "
                                     f"(extra_body or a provider extra): pass it one way only")
    return normalized, choice, schema
