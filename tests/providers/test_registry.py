"""The provider registry: a third party registers a kind and configures
endpoints of it like the built-in ones."""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

import pytest
import responses

from llm_sync import LLMConfigError, LLMManager, LLMProvider, LLMProviderError
from llm_sync.config import load_config
from llm_sync.providers import (
    AnthropicProvider,
    OpenAIProvider,
    Provider,
    StreamDecoder,
    create_provider,
    provider_class,
    provider_kinds,
    register_provider,
    unregister_provider,
)
from llm_sync.providers.base import LLMRequest
from llm_sync.sse import SSEEvent
from llm_sync.models import LLMResponse, Usage

KEY = "sk-test-SECRET-registry-01"


class AcmeProvider(OpenAIProvider):
    """An OpenAI-compatible service with its own defaults and a header."""

    default_base_url = "https://llm.acme.test/api"
    default_model = "acme-small"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-acme-key": key}


class _EchoStream(StreamDecoder):
    def feed(self, event: SSEEvent) -> Optional[str]:
        self.done = True
        return str(self.load(event).get("text", ""))


class EchoProvider(Provider):
    """A wire format of its own: ``POST {base}/generate {"prompt"}`` → ``{"text"}``."""

    kind = "echo"
    request_id_header = "x-echo-id"
    completion_path = "/generate"
    refunds_output = False
    temperature_range = (0.0, 1.0)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Token {key}"}

    def build_body(self, request: LLMRequest) -> dict[str, Any]:
        return {"model": request.model, "prompt": request.messages[-1].content, "limit": request.max_tokens}

    def parse_body(self, data: dict[str, Any]) -> LLMResponse:
        return LLMResponse(content=data["text"], model=data.get("model", ""), stop_reason="end_turn",
                           usage=Usage(input_tokens=data["in"], output_tokens=data["out"]), raw=data)

    def stream_decoder(self) -> StreamDecoder:
        return _EchoStream()

    def error_fields(self, body: Any) -> tuple[Optional[str], Optional[str], Optional[str]]:
        return (body.get("problem"), "echo_error", None) if isinstance(body, dict) else (None, None, None)

    def is_quota_error(self, body: Any, error_type: Optional[str], code: Optional[str]) -> bool:
        return False


@pytest.fixture
def registered() -> Iterator[None]:
    register_provider("acme", AcmeProvider)
    register_provider("Echo", EchoProvider)
    yield
    unregister_provider("acme")
    unregister_provider("echo")


def test_builtin_kinds() -> None:
    assert provider_kinds() == ["anthropic", "openai"]
    assert provider_class("anthropic") is AnthropicProvider
    assert provider_class(LLMProvider.OPENAI) is OpenAIProvider
    assert provider_class("OpenAI") is OpenAIProvider


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(LLMConfigError, match="unknown provider kind 'gemini'.*anthropic, openai"):
        provider_class("gemini")


def test_register_and_unregister(registered: None) -> None:
    assert provider_kinds() == ["acme", "anthropic", "echo", "openai"]
    assert provider_class("ECHO") is EchoProvider
    register_provider("acme", AcmeProvider)  # the same class again: a no-op
    unregister_provider("acme")
    assert "acme" not in provider_kinds()
    unregister_provider("acme")  # idempotent


def test_a_taken_kind_needs_replace(registered: None) -> None:
    with pytest.raises(ValueError, match="already registered to AcmeProvider"):
        register_provider("acme", EchoProvider)
    with pytest.raises(ValueError, match="already registered"):
        register_provider("openai", AcmeProvider)
    register_provider("openai", AcmeProvider, replace=True)
    try:
        assert provider_class("openai") is AcmeProvider
    finally:
        unregister_provider("openai")  # a built-in goes back to its own class
    assert provider_class("openai") is OpenAIProvider


@pytest.mark.parametrize("kind", ["", "1abc", "a b", "ä"])
def test_bad_kind_names(kind: str) -> None:
    with pytest.raises(ValueError, match="must be letters"):
        register_provider(kind, AcmeProvider)


def test_only_concrete_provider_classes() -> None:
    with pytest.raises(TypeError, match="not a subclass"):
        register_provider("dict", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="abstract"):
        register_provider("abstract", Provider)


def test_create_provider_sets_kind_and_endpoint(registered: None) -> None:
    acme = create_provider("acme", "https://a.test", endpoint="team-a")
    assert isinstance(acme, AcmeProvider)
    assert (acme.kind, acme.endpoint) == ("acme", "team-a")
    assert acme.completion_url == "https://a.test/v1/chat/completions"
    assert OpenAIProvider.kind == "openai"  # the class is left alone
    assert repr(acme) == "<AcmeProvider team-a https://a.test>"
    assert create_provider("openai", "http://h").endpoint == "openai"


def test_config_consults_the_registry(registered: None) -> None:
    config = load_config({"providers": {
        "acme": {"api_keys": [KEY]},
        "mine": {"kind": "ACME", "api_keys": [KEY], "base_url": "http://127.0.0.1:9"},
    }}, env={})
    assert config.kind_of("acme") == "acme" and config.kind_of("mine") == "acme"
    unregister_provider("acme")
    with pytest.raises(LLMConfigError, match=r"providers\.mine\.kind: .*unknown provider kind 'acme'"):
        load_config({"providers": {"mine": {"kind": "acme", "api_keys": [KEY]}}}, env={})


def test_a_kind_without_default_server_needs_base_url(registered: None) -> None:
    with pytest.raises(LLMConfigError, match=r"providers\.echo: .*base_url is required: kind 'echo'"):
        load_config({"providers": {"echo": {"api_keys": [KEY]}}}, env={})


def test_third_party_kind_end_to_end(mock: responses.RequestsMock, registered: None) -> None:
    mock.post("https://llm.acme.test/api/chat/completions", json={
        "id": "c1", "object": "chat.completion", "model": "acme-small",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "from acme"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    mock.post("https://echo.test/generate", json={"text": "echoed", "in": 4, "out": 1})
    config = {"providers": {
        "acme": {"api_keys": [KEY]},
        "local-echo": {"kind": "echo", "api_keys": [KEY], "base_url": "https://echo.test", "models": ["e1"]},
    }}
    with LLMManager(config) as manager:
        acme = manager.get_client("acme").complete("hi")
        assert (acme.content, acme.model, acme.provider, acme.endpoint) == ("from acme", "acme-small", "acme", "acme")
        assert acme.client_id == "acme-0"
        assert mock.calls[0].request.headers["x-acme-key"] == KEY
        assert "authorization" not in mock.calls[0].request.headers

        echo = manager.get_client("local-echo").complete("say this", max_tokens=7)
        assert (echo.content, echo.provider, echo.endpoint, echo.client_id) == \
            ("echoed", "echo", "local-echo", "local-echo-0")
        assert json.loads(mock.calls[1].request.body) == {"model": "e1", "prompt": "say this", "limit": 7}
        assert mock.calls[1].request.headers["authorization"] == f"Token {KEY}"
        assert manager.kind("local-echo") == "echo"
        assert manager.metrics("local-echo")["total_requests"] == 1


def test_third_party_errors_name_the_endpoint(mock: responses.RequestsMock, registered: None) -> None:
    mock.post("https://echo.test/generate", status=400, json={"problem": "bad prompt"})
    config = {"providers": {"mine": {"kind": "echo", "api_keys": [KEY], "base_url": "https://echo.test",
                                     "models": ["e1"], "max_retries": 0}}}
    with LLMManager(config) as manager:
        with pytest.raises(LLMProviderError, match="bad prompt") as info:
            manager.get_client("mine").complete("x")
    assert info.value.provider == "mine" and info.value.error_type == "echo_error"


def test_a_kind_without_default_model_needs_one(mock: responses.RequestsMock, registered: None) -> None:
    config = {"providers": {"e": {"kind": "echo", "api_keys": [KEY], "base_url": "https://echo.test"}}}
    with LLMManager(config) as manager:
        with pytest.raises(LLMConfigError, match=r"providers\.e\.models: kind 'echo' has no default model"):
            manager.get_client("e")
        assert manager.get_client("e", "e2").model == "e2"
