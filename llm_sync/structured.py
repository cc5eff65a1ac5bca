"""Structured output: an answer validated as a pydantic model.

``complete(..., response_model=M)`` puts M's JSON schema on the request
(``LLMRequest.response_schema``: OpenAI kind sends ``response_format``
json_schema, Anthropic kind forces a tool named after the schema) and
validates the answer as M. The answer is read from whichever the response
holds: the arguments of the tool call named after the schema, or the JSON
text of ``content`` (a Markdown code fence around it is tolerated).

An answer that does not validate gets **one** repair attempt: a second,
ordinary call whose history adds the invalid answer (as the assistant's
text) and a user turn listing the validation errors, asking for corrected
JSON only. It shares the caller's ``timeout`` with the first call. If that
answer is invalid too, :class:`~llm_sync.errors.LLMStructuredOutputError`
carries its raw text and errors.

An answer given as a call of the schema's tool (Anthropic kind) is
returned as a text answer of its JSON: that call leaves ``tool_calls`` and
``blocks``, so ``to_message()`` continues the conversation validly. Next to
the caller's own tools the Anthropic kind asks for *any* tool (the schema's
or theirs) rather than forcing the schema's.

Two answers are returned unparsed (``parsed`` None), never repaired: a
refusal (``refusal`` set: asking again will not help) and a call of one of
the caller's own tools (the model chose a tool over answering: the caller
runs it and continues the round trip).

Threading contract: functions without shared state.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from typing import Any, Callable, Optional

from pydantic import BaseModel, ValidationError

from .call import CallOptions
from .content import TextBlock, ThinkingBlock, ToolUseBlock
from .errors import LLMStructuredOutputError, LLMValidationError
from .models import LLMResponse, Message, MessageRole
from .providers.base import LLMRequest

__all__ = ["response_schema", "parse_answer", "repair_request", "complete_structured", "MAX_ERRORS_SHOWN"]

# Validation errors listed in a repair prompt and on the error (the rest are counted).
MAX_ERRORS_SHOWN = 20
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)

REPAIR_PROMPT = (
    "Your previous answer is not valid for the required JSON schema {name}:\n{errors}\n"
    "Answer again with the corrected JSON only: one JSON object that follows the schema, and no other text."
)

Send = Callable[[LLMRequest, CallOptions], LLMResponse]


def schema_name(model: type[BaseModel]) -> str:
    """The schema's (and the forced tool's) name: the model's class name,
    kept to what both providers accept (1-64 of ``A-Za-z0-9_-``)."""
    return _NAME_CHARS.sub("_", model.__name__)[:64] or "response"


def response_schema(model: Any) -> tuple[str, dict[str, Any]]:
    """``(name, JSON schema)`` for ``LLMRequest.response_schema``;
    LLMValidationError unless ``model`` is a pydantic model class."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise LLMValidationError(
            f"response_model must be a pydantic BaseModel subclass, got {type(model).__name__}"
            if not isinstance(model, type) else
            f"response_model must be a pydantic BaseModel subclass, got the class {model.__name__}")
    try:
        schema = model.model_json_schema()
    except Exception as exc:  # a field type pydantic cannot describe
        raise LLMValidationError(f"response_model {model.__name__} has no JSON schema: {exc}") from None
    return schema_name(model), schema


def parse_answer(response: LLMResponse, model: type[BaseModel],
                 name: str) -> tuple[Optional[BaseModel], str, list[str]]:
    """``(instance, raw_text, errors)`` from a response: the call of tool
    ``name`` first, else the JSON text of the content. ``instance`` is None
    when neither holds a valid ``model`` (then ``errors`` says why)."""
    instance, raw, errors, _ = _parse(response, model, name)
    return instance, raw, errors


def _parse(response: LLMResponse, model: type[BaseModel],
           name: str) -> tuple[Optional[BaseModel], str, list[str], Optional[str]]:
    """parse_answer's result and the id of the tool call the instance came
    from (None: from the text, or no instance)."""
    candidates: list[tuple[str, Optional[str]]] = [
        (_arguments_text(call.arguments), call.id) for call in response.tool_calls if call.name == name]
    if response.content.strip():
        candidates.append((_unfenced(response.content), None))
    if not candidates:
        return None, "", [f"the answer holds no JSON: no text, and no call of the tool {name}"], None
    first: Optional[tuple[str, list[str]]] = None
    for raw, call_id in candidates:
        try:
            return model.model_validate_json(raw), raw, [], call_id
        except ValidationError as exc:
            first = first or (raw, _error_lines(exc))
    assert first is not None
    return None, first[0], first[1], None


def _as_text_answer(response: LLMResponse, call_id: str, raw: str) -> None:
    """Turn an answer given as a call of the schema's tool into a text
    answer of its JSON: that call is dropped from ``tool_calls`` and
    ``blocks`` (thinking and other calls stay), so ``to_message()`` gives
    an assistant turn with no tool_use left unanswered (Anthropic rejects
    the next call of such a history)."""
    response.tool_calls = [call for call in response.tool_calls if call.id != call_id]
    thinking = [b for b in response.blocks if isinstance(b, ThinkingBlock)]
    calls = [b for b in response.blocks if isinstance(b, ToolUseBlock) and b.id != call_id]
    response.content = raw
    response.blocks = [*thinking, TextBlock(raw), *calls]


def repair_request(request: LLMRequest, raw_text: str, errors: list[str], name: str) -> LLMRequest:
    """The request for the repair attempt: the same call, its history
    extended by the invalid answer and a user turn listing its errors."""
    listed = "\n".join(f"- {line}" for line in errors) or "- it is not valid"
    messages = list(request.messages) + [
        Message(MessageRole.ASSISTANT, raw_text if raw_text.strip() else "(no answer)"),
        Message(MessageRole.USER, REPAIR_PROMPT.format(name=name, errors=listed)),
    ]
    return replace(request, messages=messages, headers=dict(request.headers),
                   extra_query=dict(request.extra_query), extra_body=dict(request.extra_body),
                   extras=dict(request.extras))


def complete_structured(send: Send, request: LLMRequest, options: CallOptions, model: type[BaseModel],
                        total_timeout: Optional[float],
                        clock: Callable[[], float] = time.monotonic) -> LLMResponse:
    """Send ``request`` and return the response with ``parsed`` set; one
    repair attempt within what is left of ``total_timeout`` (None: no
    limit), then LLMStructuredOutputError."""
    assert request.response_schema is not None
    name = request.response_schema[0]
    started = clock()
    # The repair's copy of the request is taken before the first send: a
    # middleware that changes the request in flight changes its own copy.
    pristine = replace(request, messages=list(request.messages))
    response = send(request, options)
    if _unparseable_on_purpose(response, name):
        return response
    parsed, raw, errors, call_id = _parse(response, model, name)
    if parsed is None:
        left = None if total_timeout is None else total_timeout - (clock() - started)
        if left is not None and left <= 0:
            raise _error(raw, errors, "and no time was left for a repair attempt")
        response = send(repair_request(pristine, raw, errors, name), replace(options, timeout=left))
        if _unparseable_on_purpose(response, name):
            return response
        parsed, raw, errors, call_id = _parse(response, model, name)
        if parsed is None:
            raise _error(raw, errors, "even after a repair attempt")
    if call_id is not None and name not in {tool.name for tool in request.tools}:
        _as_text_answer(response, call_id, raw)
    response.parsed = parsed
    return response


def _unparseable_on_purpose(response: LLMResponse, name: str) -> bool:
    """A refusal, or a call of the caller's own tools instead of an answer."""
    if response.refusal:
        return True
    ours = any(call.name == name for call in response.tool_calls)
    return bool(response.tool_calls) and not ours


def _error(raw: str, errors: list[str], when: str) -> LLMStructuredOutputError:
    summary = errors[0] if errors else "it is not valid"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return LLMStructuredOutputError(f"the answer does not match the response_model {when}: {summary}{more}",
                                    raw_text=raw, errors=tuple(errors))


def _arguments_text(arguments: dict[str, Any]) -> str:
    """A tool call's arguments as JSON text (arguments that were not a JSON
    object arrive as ``{"_raw": text}`` or ``{"_value": value}``)."""
    if set(arguments) == {"_raw"} and isinstance(arguments["_raw"], str):
        return arguments["_raw"]
    if set(arguments) == {"_value"}:
        return json.dumps(arguments["_value"], default=str)
    return json.dumps(arguments, default=str)


def _unfenced(text: str) -> str:
    """``text`` without a Markdown code fence around it."""
    text = text.strip()
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors()[:MAX_ERRORS_SHOWN]:
        location = ".".join(str(part) for part in error["loc"])
        lines.append(f"{location}: {error['msg']}" if location else str(error["msg"]))
    hidden = exc.error_count() - MAX_ERRORS_SHOWN
    if hidden > 0:
        lines.append(f"... and {hidden} more errors")
    return lines
