"""Review 9: a usage figure the server left out (or sent as null) is not a
report of 0 tokens: the limiter keeps its estimate for it."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import pytest
import responses

from llm_sync import LLMManager
from llm_sync.providers.anthropic_blocks import usage_of
from llm_sync.providers.openai_wire import usage_from

BASES = {"anthropic": "https://api.anthropic.test", "openai": "https://api.openai.test"}
URLS = {"anthropic": BASES["anthropic"] + "/v1/messages", "openai": BASES["openai"] + "/v1/chat/completions"}


def body(provider: str, usage: dict[str, Any]) -> dict[str, Any]:
    if provider == "anthropic":
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "usage": usage}
    return {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": usage}


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({"providers": {name: {"api_keys": ["sk-test-AAAA-0001"], "base_url": BASES[name],
                                                    "max_retries": 0} for name in BASES}}) as m:
        yield m


def settled_with(manager: LLMManager, provider: str, mock: responses.RequestsMock,
                 usage: dict[str, Any]) -> list[tuple[Optional[int], Optional[int]]]:
    limiter = manager.pool(provider).limiter
    calls: list[tuple[Optional[int], Optional[int]]] = []
    original = limiter.settle

    def spy(reservation: Any, input_tokens: Optional[int], output_tokens: Optional[int], headers: Any = None,
            **kwargs: Any) -> None:
        calls.append((input_tokens, output_tokens))
        original(reservation, input_tokens, output_tokens, headers, **kwargs)

    limiter.settle = spy  # type: ignore[method-assign]
    mock.add(responses.POST, URLS[provider], json=body(provider, usage))
    manager.get_client(provider).complete("Hi")
    return calls


@pytest.mark.parametrize("provider, usage, expected", [
    ("openai", {"completion_tokens": 5}, (None, 5)),
    ("openai", {"prompt_tokens": None, "completion_tokens": 5}, (None, 5)),
    ("openai", {"prompt_tokens": 7, "completion_tokens": None}, (7, None)),
    ("openai", {"prompt_tokens": 7, "completion_tokens": 5}, (7, 5)),
    ("anthropic", {"output_tokens": 5}, (None, 5)),
    ("anthropic", {"input_tokens": None, "output_tokens": 5}, (None, 5)),
    ("anthropic", {"input_tokens": 7, "cache_creation_input_tokens": 3}, (10, None)),
    ("anthropic", {"input_tokens": 7, "output_tokens": 5}, (7, 5)),
])
def test_a_missing_figure_settles_as_none(mock, manager, provider, usage, expected):
    assert settled_with(manager, provider, mock, usage) == [expected]


def test_reported_fields_are_the_figures_sent():
    from llm_sync.pipeline import reported_fields

    assert reported_fields(usage_from({"completion_tokens": 5, "prompt_tokens": "x"})) == {"output_tokens"}
    assert reported_fields(usage_of({"input_tokens": 3, "output_tokens": -1})) == {"input_tokens"}
