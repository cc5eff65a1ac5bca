"""Anthropic Messages API (``POST /v1/messages``)."""

from __future__ import annotations

import json
from typing import Any, Optional

import requests

from ..errors import LLMValidationError
from ..models import LLMResponse, MessageRole, Usage
from ..sse import SSEEvent
from ..tokens import plausible_count
from ..transport import HTTPRequest
from .base import LLMRequest, Provider, StreamDecoder, join_url, with_query

__all__ = ["AnthropicProvider"]

ANTHROPIC_VERSION = "2023-06-01"
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _usage(data: Any, into: Optional[Usage] = None) -> Usage:
    """Usage figures; one that is not a plausible count (a string, a bool,
    negative, 10**15) is left out, as if the server had not sent it."""
    usage = into or Usage()
    if isinstance(data, dict):
        for name in _USAGE_FIELDS:
            value = plausible_count(data.get(name))
            if value is not None:
                setattr(usage, name, value)
    return usage


def _text(value: Any) -> Optional[str]:
    """A text field of the answer: a string or absent, nothing else."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"a text field holds {type(value).__name__}")


class AnthropicProvider(Provider):
    kind = "anthropic"
    request_id_header = "request-id"
    completion_path = "/v1/messages"
    # Whether the server refunds unused max_tokens when the reply ends.
    refunds_output = True
    temperature_range = (0.0, 1.0)

    def __init__(self, base_url: str, headers: Optional[dict[str, str]] = None, *,
                 endpoint: Optional[str] = None) -> None:
        super().__init__(base_url, {"anthropic-version": ANTHROPIC_VERSION, **(headers or {})}, endpoint=endpoint)
        self.count_url = join_url(self.base_url, "/v1/messages/count_tokens")

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def _conversation(self, request: LLMRequest) -> dict[str, Any]:
        """System text goes top-level; only user/assistant turns stay."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [
                {"role": m.role.value, "content": _text_only(m.content)}
                for m in request.messages
                if m.role is not MessageRole.SYSTEM
            ],
        }
        system = request.system_text()
        if system:
            body["system"] = system
        return body

    def build_body(self, request: LLMRequest) -> dict[str, Any]:
        body = self._conversation(request)
        body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if request.stream:
            body["stream"] = True
        body.update(request.extras)
        return body

    def parse_body(self, data: dict[str, Any]) -> LLMResponse:
        blocks = data.get("content")
        usage = data.get("usage")
        if not isinstance(blocks, list) or not isinstance(usage, (dict, type(None))):
            raise TypeError("content must be a list and usage an object")
        texts: list[Any] = [b.get("text") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("a text block without text")
        text = "".join(texts)
        return LLMResponse(
            content=text,
            model=_text(data.get("model")) or "",
            stop_reason=self.normalize_stop_reason(_text(data.get("stop_reason"))),
            usage=_usage(data.get("usage")),
            request_id=None,
            raw=data,
        )

    def error_fields(self, body: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return None, None, None
        details = error.get("details")
        details = details if isinstance(details, dict) else {}
        return error.get("message"), error.get("type"), details.get("error_code")

    def is_quota_error(self, body: Any, error_type: Optional[str], code: Optional[str]) -> bool:
        if code == "enforced_spend_limit_reached":
            return True
        message, _, _ = self.safe_error_fields(body)
        return error_type == "rate_limit_error" and "usage limit" in (message or "").lower()

    def stream_decoder(self) -> StreamDecoder:
        return _AnthropicStream(self)

    def count_request(self, request: LLMRequest) -> Optional[HTTPRequest]:
        body = self._conversation(request)
        body.update({k: v for k, v in request.extras.items() if k in ("tools", "tool_choice", "thinking")})
        headers = {**self.default_headers, **request.headers}
        return HTTPRequest("POST", with_query(self.count_url, request.extra_query), body, headers)

    def parse_count(self, http: requests.Response, content: bytes) -> int:
        tokens = self.json_object(http, content).get("input_tokens")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise self._invalid(http, "a count without input_tokens")
        return tokens


class _AnthropicStream(StreamDecoder):
    """message_start → content blocks → message_delta → message_stop."""

    def __init__(self, provider: AnthropicProvider) -> None:
        super().__init__()
        self._provider = provider
        self._tool_inputs: dict[int, list[str]] = {}
        self._tool_blocks: dict[int, dict[str, Any]] = {}

    def feed(self, event: SSEEvent) -> Optional[str]:
        kind = event.event
        if kind == "ping":
            return None
        data = self.load(event)
        kind = data.get("type", kind) if isinstance(data, dict) and kind == "message" else kind
        if kind == "error":
            raise self._provider.error_from_event(data)
        if not isinstance(data, dict):
            return None
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return _text(delta.get("text")) or None
            if delta.get("type") == "input_json_delta":
                self._tool_inputs.setdefault(data.get("index", 0), []).append(delta.get("partial_json", ""))
            return None
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = _text(message.get("model")) or ""
            self.message_id = message.get("id") if isinstance(message.get("id"), str) else None
            _usage(message.get("usage"), self.usage)
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._tool_blocks[data.get("index", 0)] = dict(block)
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop_reason = _text(delta["stop_reason"])
            if delta.get("stop_sequence"):
                self.extra["stop_sequence"] = delta["stop_sequence"]
            _usage(data.get("usage"), self.usage)
        elif kind == "message_stop":
            self.done = True
            self._finish_tools()
        return None

    def _finish_tools(self) -> None:
        tools = []
        for index, block in sorted(self._tool_blocks.items()):
            text = "".join(self._tool_inputs.get(index, []))
            try:
                block["input"] = json.loads(text) if text else block.get("input", {})
            except ValueError:
                block["input_json"] = text
            tools.append(block)
        if tools:
            self.extra["tool_use"] = tools


def _text_only(content: Any) -> str:
    """Interim: content blocks are translated by a later change."""
    if not isinstance(content, str):
        raise LLMValidationError("content blocks are not supported by this endpoint kind yet")
    return content
