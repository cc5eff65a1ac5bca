"""Where each endpoint kind sends its requests (API.md "Endpoints",
PROTOCOL.md "Base URLs"): OpenAI-kind ``base_url`` is a prefix that
``/chat/completions`` is appended to (a bare host gets ``/v1``);
Anthropic-kind appends ``/v1/messages``; ``/v1`` is never doubled."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import responses

from llm_sync import LLMManager
from llm_sync.providers import create_provider
from llm_sync.providers.base import join_url

KEY = "sk-test-SECRET-url-0001"

OPENAI_URLS = [
    ("http://host", "http://host/v1/chat/completions"),
    ("http://host/", "http://host/v1/chat/completions"),
    ("http://host:8000", "http://host:8000/v1/chat/completions"),
    ("http://host/v1", "http://host/v1/chat/completions"),
    ("http://host/v1/", "http://host/v1/chat/completions"),
    ("https://api.openai.com", "https://api.openai.com/v1/chat/completions"),
    ("https://generativelanguage.googleapis.com/v1beta/openai",
     "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"),
    ("https://x/openai", "https://x/openai/chat/completions"),
    ("https://gw.test/team/llm/v1", "https://gw.test/team/llm/v1/chat/completions"),
]
ANTHROPIC_URLS = [
    ("http://host", "http://host/v1/messages"),
    ("http://host/", "http://host/v1/messages"),
    ("http://host/v1", "http://host/v1/messages"),
    ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
    ("https://gw.test/anthropic", "https://gw.test/anthropic/v1/messages"),
]


@pytest.mark.parametrize("base_url, expected", OPENAI_URLS)
def test_openai_kind_completion_url(base_url: str, expected: str) -> None:
    assert create_provider("openai", base_url).completion_url == expected


@pytest.mark.parametrize("base_url, expected", ANTHROPIC_URLS)
def test_anthropic_kind_completion_url(base_url: str, expected: str) -> None:
    assert create_provider("anthropic", base_url).completion_url == expected


def test_anthropic_count_tokens_url_follows_the_same_rule() -> None:
    assert create_provider("anthropic", "http://host/v1").count_url == "http://host/v1/messages/count_tokens"
    assert create_provider("anthropic", "https://gw/a").count_url == "https://gw/a/v1/messages/count_tokens"


def test_join_url() -> None:
    assert join_url("http://h/v1", "/v1/messages") == "http://h/v1/messages"
    assert join_url("http://h", "/chat/completions", "/v1") == "http://h/v1/chat/completions"
    assert join_url("http://h/p", "/chat/completions", "/v1") == "http://h/p/chat/completions"
    assert join_url("http://h/v1beta", "/v1/x") == "http://h/v1beta/v1/x"


def openai_answer(content: str = "ok") -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    config = {"providers": {
        "gemini": {"kind": "openai", "api_keys": [KEY], "models": ["gemini-2.0-flash"], "max_retries": 0,
                   "base_url": "https://generativelanguage.googleapis.com/v1beta/openai/"},
        "azure": {"kind": "openai", "api_keys": [KEY], "models": ["gpt-4o"], "max_retries": 0,
                  "base_url": "https://x.test/openai"},
        "vllm": {"kind": "openai", "api_keys": [KEY], "models": ["qwen"], "max_retries": 0,
                 "base_url": "http://10.0.0.5:8000"},
    }}
    with LLMManager(config) as manager:
        yield manager


@pytest.mark.parametrize("endpoint, url", [
    ("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"),
    ("azure", "https://x.test/openai/chat/completions"),
    ("vllm", "http://10.0.0.5:8000/v1/chat/completions"),
])
def test_requests_go_to_the_prefixed_url(mock: responses.RequestsMock, manager: LLMManager,
                                         endpoint: str, url: str) -> None:
    mock.post(url, json=openai_answer(endpoint))
    response = manager.get_client(endpoint).complete("hi")
    assert response.content == endpoint and response.endpoint == endpoint
    assert [call.request.url for call in mock.calls] == [url]
    assert mock.calls[0].request.headers["authorization"] == f"Bearer {KEY}"
