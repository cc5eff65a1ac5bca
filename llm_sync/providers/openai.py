"""OpenAI Chat Completions (``POST /v1/chat/completions``) and the servers
that speak it: vLLM, Ollama, LM Studio, llama.cpp, gateways.

Content blocks, tools and structured output are translated by
:mod:`.openai_wire`; this module builds bodies, parses answers (streamed
or not) and turns the error shapes these servers send into typed errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

import requests

from ..errors import LLMProviderError, LLMQuotaExceededError, error_class_for_status, redact
from ..events import RefusalDelta, TextDelta, ThinkingDelta, ToolCallDelta, ToolCallDone
from ..models import LLMResponse
from ..sse import SSEEvent, SSEParser
from .base import LLMRequest, Provider, StreamDecoder
from .openai_wire import (
    AnswerParts,
    parse_message,
    text_field,
    tool_call,
    usage_from,
    wire_messages,
    wire_response_format,
    wire_tool_choice,
    wire_tools,
)

__all__ = ["OpenAIProvider"]

# api.openai.com wants max_completion_tokens; compatible servers mostly
# still expect the older max_tokens. Either can be forced through extras.
_OFFICIAL_HOSTS = {"api.openai.com"}
# Where OpenAI and compatible servers (gateways, Azure) put the request id,
# in order of preference. (cf-ray names a Cloudflare hop, not the request.)
# OpenAI's words for a quota that needs billing action, kept by gateways
# that rewrite the error type.
_QUOTA_MESSAGE = "exceeded your current quota"


class OpenAIProvider(Provider):
    kind = "openai"
    request_id_headers = ("x-request-id", "request-id", "openai-request-id", "apim-request-id")
    # base_url is a prefix (``/v1``, ``/v1beta/openai``, ``/openai``); a bare host gets /v1.
    completion_path = "/chat/completions"
    default_prefix = "/v1"
    # Whether the server refunds unused max_tokens when the reply ends.
    refunds_output = False
    temperature_range = (0.0, 2.0)

    def __init__(self, base_url: str, headers: Optional[dict[str, str]] = None, *,
                 endpoint: Optional[str] = None) -> None:
        super().__init__(base_url, headers, endpoint=endpoint)
        official = (urlsplit(self.base_url).hostname or "") in _OFFICIAL_HOSTS
        self.max_tokens_field = "max_completion_tokens" if official else "max_tokens"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def build_body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model, "messages": wire_messages(request.system, request.messages)}
        if not ({"max_tokens", "max_completion_tokens"} & request.extras.keys()):
            body[self.max_tokens_field] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        if request.tools:
            body["tools"] = wire_tools(request.tools)
            if request.tool_choice is not None:  # OpenAI refuses a tool_choice without tools
                body["tool_choice"] = wire_tool_choice(request.tool_choice)
        if request.response_schema is not None:
            body["response_format"] = wire_response_format(*request.response_schema)
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(request.extras)
        return body

    def parse_body(self, data: dict[str, Any]) -> LLMResponse:
        choices = data.get("choices")
        usage = data.get("usage")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
                or not isinstance(choices[0].get("message"), dict) or not isinstance(usage, (dict, type(None))):
            raise TypeError("choices[0].message must be an object and usage an object")
        choice = choices[0]
        message = choice["message"]
        content = text_field(message.get("content")) or ""
        parts = parse_message(message)
        return LLMResponse(
            content=content,
            model=text_field(data.get("model")) or "",
            stop_reason=self.normalize_stop_reason(_stop_reason(text_field(choice.get("finish_reason")),
                                                                parts.refusal)),
            usage=usage_from(usage),
            request_id=data["id"] if isinstance(data.get("id"), str) and data["id"] else None,
            raw=data,
            tool_calls=parts.tool_calls,
            refusal=parts.refusal,
            thinking=parts.thinking,
            blocks=parts.blocks(content),
        )

    def error_fields(self, body: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
        if not isinstance(body, dict):
            return None, None, None
        error = body.get("error", body.get("detail"))
        if isinstance(error, str):
            return error, None, None
        if not isinstance(error, dict):
            return None, None, None
        code = error.get("code")
        return error.get("message"), error.get("type"), str(code) if code is not None else None

    def is_quota_error(self, body: Any, error_type: Optional[str], code: Optional[str]) -> bool:
        if "insufficient_quota" in (error_type, code):
            return True
        message, _, _ = self.safe_error_fields(body)
        return _QUOTA_MESSAGE in (message or "").lower()

    def error_from_response(self, http: requests.Response, content: bytes) -> LLMProviderError:
        """Also for an error sent as SSE (``data: {"error": ...}``) with an
        error status, as some servers do for a streamed request."""
        return super().error_from_response(http, _sse_error_body(content))

    def error_from_event(self, body: Any) -> LLMProviderError:
        """An error inside a 200 stream. A numeric ``error.code`` (llama.cpp,
        OpenRouter: ``{"code": 400, ...}``) is the status it stands for, so a
        prompt that is too long is not retried as a server fault; a quota
        message is a quota error whatever type a gateway gave it."""
        message, error_type, code = self.safe_error_fields(body)
        quota = self._is_quota(body, error_type, code)
        status = _numeric_status(body)
        if status is None and not quota:
            return super().error_from_event(body)
        status = 429 if quota else status
        cls = LLMQuotaExceededError if quota else error_class_for_status(status or 500)
        return cls(redact(message or "error event in stream"), status_code=status,
                   error_type=error_type or code, code=code, provider=self.endpoint, mid_stream=True)

    def stream_decoder(self) -> StreamDecoder:
        return _OpenAIStream(self)


def _stop_reason(finish_reason: Optional[str], refusal: Optional[str]) -> Optional[str]:
    """A refusal ends with ``stop``; say ``refusal`` (Anthropic's word) so
    it never reads as an ordinary answer."""
    return "refusal" if refusal and finish_reason in ("stop", None) else finish_reason


def _numeric_status(body: Any) -> Optional[int]:
    """An error status given as ``error.code`` (a number, or digits)."""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) == 3:
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


def _sse_error_body(content: bytes) -> bytes:
    """The JSON of the first error event of an SSE body; other bodies as
    they are."""
    if not content.lstrip()[:6].startswith((b"data:", b"event:", b":")):
        return content
    for event in SSEParser().feed(content + b"\n\n"):
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict) and ("error" in data or "detail" in data):
            return event.data.encode("utf-8")
    return content


@dataclass
class _PartialCall:
    id: Optional[str] = None
    name: Optional[str] = None
    arguments: list[str] = field(default_factory=list)


class _OpenAIStream(StreamDecoder):
    """``data:`` chunks until ``[DONE]``. A finish_reason also counts as a
    complete answer: several compatible servers end without ``[DONE]``.
    Tool calls arrive as fragments keyed by ``index`` (several may
    interleave) and are complete when the choice finishes."""

    def __init__(self, provider: OpenAIProvider) -> None:
        super().__init__()
        self._provider = provider
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._thinking: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._last_index = 0
        self._finished = False

    def feed(self, event: SSEEvent) -> Optional[str]:
        if event.data.strip() == "[DONE]":
            self.done = True
            self._finish()
            return None
        data = self.load(event)
        if not isinstance(data, dict):
            return None
        if "error" in data:
            raise self._provider.error_from_event(data)
        self.model = text_field(data.get("model")) or self.model
        if isinstance(data.get("id"), str):  # an id is informative only: ignore one of another type
            self.message_id = data["id"] or self.message_id
        if isinstance(data.get("usage"), dict):
            self.usage = usage_from(data["usage"])
        choices = data.get("choices")
        if not isinstance(choices, (list, type(None))):
            raise TypeError("choices must be a list")
        text = None
        for choice in choices or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise TypeError("delta must be an object")
            text = self._delta(delta) or text
            if choice.get("finish_reason"):
                self.stop_reason = text_field(choice["finish_reason"])
                self.done = True
                self._finish()
        return text

    def _delta(self, delta: dict[str, Any]) -> Optional[str]:
        thinking = delta.get("reasoning_content")
        if thinking is None and isinstance(delta.get("reasoning"), str):
            thinking = delta["reasoning"]
        thinking = text_field(thinking)
        if thinking:
            self._thinking.append(thinking)
            self.events.append(ThinkingDelta(thinking))
        refusal = text_field(delta.get("refusal"))
        if refusal:
            self._refusal.append(refusal)
            self.events.append(RefusalDelta(refusal))
        if delta.get("tool_calls") is not None:
            self._tool_fragments(delta["tool_calls"])
        text = text_field(delta.get("content"))
        if text:
            self._text.append(text)
            self.events.append(TextDelta(text))
        return text or None

    def _tool_fragments(self, items: Any) -> None:
        if not isinstance(items, list):
            raise TypeError("tool_calls must be a list")
        for item in items:
            if not isinstance(item, dict):
                raise TypeError("a tool call fragment must be an object")
            call_id = item.get("id") if isinstance(item.get("id"), str) and item.get("id") else None
            index = item.get("index")
            if isinstance(index, bool) or not isinstance(index, int):
                index = self._index_of(call_id)
            function = item.get("function") or {}
            if not isinstance(function, dict):
                raise TypeError("a tool call fragment's function must be an object")
            name = text_field(function.get("name")) or None
            arguments = function.get("arguments")
            arguments = json.dumps(arguments) if isinstance(arguments, dict) else text_field(arguments) or ""
            call = self._calls.setdefault(index, _PartialCall())
            self._last_index = index
            call_id = call_id if call.id is None else None  # an id or name counts when it first appears
            name = name if call.name is None else None
            call.id = call.id or call_id
            call.name = call.name or name
            call.arguments.append(arguments)
            self.events.append(ToolCallDelta(index, call_id, name, arguments))

    def _index_of(self, call_id: Optional[str]) -> int:
        """The index of a fragment sent without one (some servers): a new
        id starts the next call, anything else continues the last."""
        if call_id is None:
            return self._last_index
        for index, call in self._calls.items():
            if call.id == call_id:
                return index
        return max(self._calls, default=-1) + 1

    def _finish(self) -> None:
        """The choice is complete: its tool calls, refusal, thinking and blocks."""
        if self._finished:
            return
        self._finished = True
        for index in sorted(self._calls):
            call = self._calls[index]
            done = tool_call(index, call.id, call.name, "".join(call.arguments))
            self.tool_calls.append(done)
            self.events.append(ToolCallDone(index, done))
        self.refusal = "".join(self._refusal) or None
        self.thinking = "".join(self._thinking) or None
        self.blocks = AnswerParts(self.tool_calls).blocks("".join(self._text))
        if self.stop_reason is not None or self.refusal:
            self.stop_reason = _stop_reason(self.stop_reason, self.refusal)
