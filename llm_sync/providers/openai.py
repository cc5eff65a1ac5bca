"""OpenAI Chat Completions (``POST /v1/chat/completions``) and the servers
that speak it: vLLM, Ollama, LM Studio, llama.cpp, gateways."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

from ..errors import LLMValidationError
from ..models import LLMResponse, Usage
from ..sse import SSEEvent
from ..tokens import plausible_count
from .base import LLMRequest, Provider, StreamDecoder

__all__ = ["OpenAIProvider"]

# api.openai.com wants max_completion_tokens; compatible servers mostly
# still expect the older max_tokens. Either can be forced through extras.
_OFFICIAL_HOSTS = {"api.openai.com"}


def _usage(data: Any) -> Usage:
    """Usage figures; one that is not a plausible count (a string, a bool,
    negative, 10**15, ``1e999``) is left at 0: unknown, the estimate stands."""
    usage = Usage()
    if isinstance(data, dict):
        usage.input_tokens = plausible_count(data.get("prompt_tokens")) or 0
        usage.output_tokens = plausible_count(data.get("completion_tokens")) or 0
    return usage


def _text(value: Any) -> Optional[str]:
    """A text field of the answer: a string or null, nothing else."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"a text field holds {type(value).__name__}")


class OpenAIProvider(Provider):
    kind = "openai"
    request_id_header = "x-request-id"
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
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role.value, "content": _text_only(m.content)} for m in request.messages]
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        if not ({"max_tokens", "max_completion_tokens"} & request.extras.keys()):
            body[self.max_tokens_field] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
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
        return LLMResponse(
            content=_text(message.get("content")) or "",
            model=_text(data.get("model")) or "",
            stop_reason=self.normalize_stop_reason(_text(choice.get("finish_reason"))),
            usage=_usage(data.get("usage")),
            raw=data,
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
        return "insufficient_quota" in (error_type, code)

    def stream_decoder(self) -> StreamDecoder:
        return _OpenAIStream(self)


class _OpenAIStream(StreamDecoder):
    """``data:`` chunks until ``[DONE]``. A finish_reason also counts as a
    complete answer: several compatible servers end without ``[DONE]``."""

    def __init__(self, provider: OpenAIProvider) -> None:
        super().__init__()
        self._provider = provider

    def feed(self, event: SSEEvent) -> Optional[str]:
        if event.data.strip() == "[DONE]":
            self.done = True
            return None
        data = self.load(event)
        if not isinstance(data, dict):
            return None
        if "error" in data:
            raise self._provider.error_from_event(data)
        self.model = _text(data.get("model")) or self.model
        if isinstance(data.get("id"), str):  # an id is informative only: ignore one of another type
            self.message_id = data["id"] or self.message_id
        if isinstance(data.get("usage"), dict):
            self.usage = _usage(data["usage"])
        choices = data.get("choices")
        if not isinstance(choices, (list, type(None))):
            raise TypeError("choices must be a list")
        text = None
        for choice in choices or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = _text(delta.get("content")) or None
            if choice.get("finish_reason"):
                self.stop_reason = _text(choice["finish_reason"])
                self.done = True
        return text


def _text_only(content: Any) -> str:
    """Interim: content blocks are translated by a later change."""
    if not isinstance(content, str):
        raise LLMValidationError("content blocks are not supported by this endpoint kind yet")
    return content
