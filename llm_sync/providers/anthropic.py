"""Anthropic Messages API (``POST /v1/messages``): request bodies, answers,
stream events and errors. Content blocks, tools and system prompts are
translated by :mod:`.anthropic_blocks`; streams are decoded by
:mod:`.anthropic_stream`."""

from __future__ import annotations

import json
from typing import Any, Optional

import requests

from ..errors import LLMProviderError
from ..models import LLMResponse
from ..transport import HTTPRequest
from .anthropic_blocks import parse_content, text_field, tools_and_choice, usage_of, wire_messages, wire_system
from .anthropic_stream import AnthropicStream
from .base import COUNT_UNSUPPORTED, LLMRequest, Provider, StreamDecoder, join_url, with_query

__all__ = ["AnthropicProvider", "COUNT_UNSUPPORTED"]

ANTHROPIC_VERSION = "2023-06-01"
# error_type of the error parse_count raises when the server has no
# count_tokens endpoint (an Anthropic-compatible server): the caller falls
# back to the local estimate. status_code stays the server's (404, 405, 501).
# Where a request id may be found when ``request-id`` is absent (gateways,
# compatible servers), in order.


def _body_id(data: Any) -> Optional[str]:
    """An answer's own id (``request_id``, else the message ``id``)."""
    if not isinstance(data, dict):
        return None
    for name in ("request_id", "id"):
        if isinstance(data.get(name), str) and data[name]:
            return str(data[name])
    return None


class AnthropicProvider(Provider):
    kind = "anthropic"
    request_id_headers = ("request-id", "x-request-id", "anthropic-request-id", "x-amzn-requestid")
    completion_path = "/v1/messages"
    # Whether the server refunds unused max_tokens when the reply ends.
    refunds_output = True
    cache_reads_in_input = False  # cache_read_input_tokens come apart from input_tokens
    temperature_range = (0.0, 1.0)

    def __init__(self, base_url: str, headers: Optional[dict[str, str]] = None, *,
                 endpoint: Optional[str] = None) -> None:
        super().__init__(base_url, {"anthropic-version": ANTHROPIC_VERSION, **(headers or {})}, endpoint=endpoint)
        self.count_url = join_url(self.base_url, "/v1/messages/count_tokens")

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def _conversation(self, request: LLMRequest) -> dict[str, Any]:
        """Model, system (top level), user/assistant turns, tools."""
        body: dict[str, Any] = {"model": request.model, "messages": wire_messages(request.messages)}
        system = wire_system(request)
        if system:
            body["system"] = system
        body.update(tools_and_choice(request))
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
        content = data.get("content")
        usage = data.get("usage")
        if not isinstance(content, list) or not isinstance(usage, (dict, type(None))):
            raise TypeError("content must be a list and usage an object")
        parsed = parse_content(content)
        stop_reason = text_field(data.get("stop_reason"))
        return LLMResponse(
            content=parsed.text,
            model=text_field(data.get("model")) or "",
            stop_reason=self.normalize_stop_reason(stop_reason),
            usage=usage_of(usage),
            request_id=_body_id(data),  # the fallback: a request-id header wins (annotate)
            raw=data,
            tool_calls=parsed.tool_calls,
            refusal=parsed.refusal(stop_reason),
            thinking=parsed.thinking,
            blocks=parsed.blocks,
        )

    def error_fields(self, body: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, str):  # {"error": "message"} (some compatible servers)
            return error, None, None
        if not isinstance(error, dict):
            detail = body.get("detail") if isinstance(body, dict) else None  # FastAPI-style servers
            return (detail if isinstance(detail, str) else None), None, None
        details = error.get("details")
        details = details if isinstance(details, dict) else {}
        return error.get("message"), error.get("type"), details.get("error_code")

    def is_quota_error(self, body: Any, error_type: Optional[str], code: Optional[str]) -> bool:
        if code == "enforced_spend_limit_reached":
            return True
        message, _, _ = self.safe_error_fields(body)
        return error_type == "rate_limit_error" and "usage limit" in (message or "").lower()

    def error_from_response(self, http: requests.Response, content: bytes) -> LLMProviderError:
        """Also reads an error sent as server-sent events with an error
        status (``event: error`` + ``data: {...}``)."""
        return super().error_from_response(http, sse_error_json(content))

    def stream_decoder(self) -> StreamDecoder:
        return AnthropicStream(self)

    def count_request(self, request: LLMRequest) -> Optional[HTTPRequest]:
        body = self._conversation(request)
        body.update({k: v for k, v in request.extras.items() if k in ("tools", "tool_choice", "thinking")})
        headers = {**self.default_headers, **request.headers}
        return HTTPRequest("POST", with_query(self.count_url, request.extra_query), body, headers)

    def parse_count(self, http: requests.Response, content: bytes) -> int:
        """The count; an error for anything else. A server without the
        endpoint (404 that is not about the model, 405, 501) raises an
        :class:`LLMProviderError` whose ``error_type`` is
        :data:`COUNT_UNSUPPORTED`: estimate locally instead."""
        try:
            data = self.json_object(http, content)
        except LLMProviderError as error:
            if _no_count_endpoint(error):
                error.error_type = COUNT_UNSUPPORTED
            raise
        tokens = data.get("input_tokens")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise self._invalid(http, "a count without input_tokens")
        return tokens


def _no_count_endpoint(error: LLMProviderError) -> bool:
    if error.status_code in (405, 501):
        return True
    # Anthropic answers 404 not_found_error "model: …" for an unknown model:
    # that is not a missing endpoint, and estimating would hide it.
    return error.status_code == 404 and not (error.message or "").lower().startswith("model")


def sse_error_json(content: bytes) -> bytes:
    """The JSON of the first ``data:`` line of an SSE body that carries an
    error object, else ``content`` unchanged."""
    if b"data:" not in content[:4096] or content.lstrip()[:1] in (b"{", b"["):
        return content
    for line in content.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict) and "error" in value:
            return data
    return content
