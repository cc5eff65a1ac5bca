"""Bad call arguments raise LLMValidationError naming the argument, before any I/O."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import responses

from llm_sync import LLMManager, Message
from llm_sync.errors import LLMValidationError

BASES = {"anthropic": "https://api.anthropic.test", "openai": "https://api.openai.test"}
KEYS = {"anthropic": "sk-ant-test-SECRET-0001", "openai": "sk-test-SECRET-0002"}


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({
        "providers": {name: {"api_keys": [KEYS[name]], "base_url": BASES[name], "max_retries": 0} for name in BASES},
        "pool": {"max_size": 2},
    }) as m:
        yield m


# (kwargs, word the message must contain)
COMMON_BAD = [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": None}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"stop": [1]}, "stop"),
    ({"stop": ["ok", None]}, "stop"),
    ({"stop": ""}, "stop"),
    ({"stop": 5}, "stop"),
    ({"stop": {"a"}}, "stop"),
    ({"model": ""}, "model"),
    ({"model": "   "}, "model"),
    ({"model": 3}, "model"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"timeout": "30"}, "timeout"),
    ({"system": ""}, "system"),
    ({"system": 42}, "system"),
    ({"stream": True}, "stream"),
    ({"stream_options": {"include_usage": False}}, "stream_options"),
]
PROVIDER_BAD = {
    "anthropic": [({"temperature": 1.5}, "temperature"), ({"temperature": 2.5}, "temperature")],
    "openai": [({"temperature": 2.5}, "temperature"), ({"temperature": -1}, "temperature")],
}
CASES = [(p, kw, word) for p in BASES for kw, word in COMMON_BAD + PROVIDER_BAD[p]]


def case_id(case: Any) -> str:
    return repr(case)[:40]


def assert_nothing_sent(mock: responses.RequestsMock, manager: LLMManager, provider: str) -> None:
    assert len(mock.calls) == 0
    status = manager.get_status(provider)
    assert status["available_clients"] == status["total_clients"]
    assert status["client_statuses"][0]["total_requests"] == 0


@pytest.mark.parametrize("provider, kwargs, word", CASES, ids=case_id)
def test_complete_rejects_bad_argument(mock, manager, provider, kwargs, word):
    with pytest.raises(LLMValidationError) as info:
        manager.get_client(provider).complete("Hi", **kwargs)
    assert word in str(info.value)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider, kwargs, word", CASES, ids=case_id)
def test_stream_rejects_bad_argument(mock, manager, provider, kwargs, word):
    client = manager.get_client(provider)
    with pytest.raises(LLMValidationError) as info:
        client.stream("Hi", **kwargs)
    assert word in str(info.value)
    with pytest.raises(LLMValidationError):
        client.stream_complete("Hi", **kwargs)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider, kwargs, word", CASES, ids=case_id)
def test_submit_rejects_at_once(mock, manager, provider, kwargs, word):
    with pytest.raises(LLMValidationError) as info:
        manager.get_client(provider).submit("Hi", **kwargs)
    assert word in str(info.value)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider", list(BASES))
@pytest.mark.parametrize("kwargs, word", [({"max_tokens": 0}, "max_tokens"), ({"stop": [1]}, "stop"),
                                          ({"timeout": -1}, "timeout")])
def test_complete_batch_rejects_before_any_call(mock, manager, provider, kwargs, word):
    with pytest.raises(LLMValidationError) as info:
        manager.get_client(provider).complete_batch(["a", "b"], **kwargs)
    assert word in str(info.value)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider", list(BASES))
@pytest.mark.parametrize("reserved", ["messages", "stream", "stream_options"])
def test_complete_batch_rejects_reserved_extras(mock, manager, provider, reserved):
    # ``messages`` is complete()'s own parameter, so only batch kwargs can carry it as an extra.
    with pytest.raises(LLMValidationError) as info:
        manager.get_client(provider).complete_batch(["a"], **{reserved: [{"role": "user", "content": "x"}]})
    assert reserved in str(info.value)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider", list(BASES))
def test_complete_batch_names_bad_item(mock, manager, provider):
    with pytest.raises(LLMValidationError) as info:
        manager.get_client(provider).complete_batch(["fine", [{"role": "robot", "content": "x"}], "fine"])
    assert "items[1]" in str(info.value)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider", list(BASES))
@pytest.mark.parametrize("max_workers", [0, -2, 1.5, "4"])
def test_complete_batch_bad_max_workers(mock, manager, provider, max_workers):
    with pytest.raises(LLMValidationError) as info:
        manager.get_client(provider).complete_batch(["a"], max_workers=max_workers)
    assert "max_workers" in str(info.value)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider", list(BASES))
@pytest.mark.parametrize("messages", [[], "", "   ", None, 42, [{"role": "bot", "content": "x"}],
                                      [{"role": "user", "content": ""}], [Message("system", "only system")]])
def test_bad_messages(mock, manager, provider, messages):
    client = manager.get_client(provider)
    with pytest.raises(LLMValidationError) as info:
        client.complete(messages)
    assert "message" in str(info.value) or "content" in str(info.value)
    with pytest.raises(LLMValidationError):
        client.stream(messages)
    with pytest.raises(LLMValidationError):
        client.count_tokens(messages)
    assert_nothing_sent(mock, manager, provider)


@pytest.mark.parametrize("provider", list(BASES))
def test_count_tokens_rejects_bad_model(mock, manager, provider):
    with pytest.raises(LLMValidationError) as info:
        manager.get_client(provider).count_tokens("Hi", model="")
    assert "model" in str(info.value)
    assert_nothing_sent(mock, manager, provider)


def test_validation_error_message_never_holds_key(mock, manager):
    key = KEYS["anthropic"]
    with pytest.raises(LLMValidationError) as info:
        manager.get_client("anthropic").complete("Hi", model=123, system=key)
    assert key not in str(info.value)
    with pytest.raises(LLMValidationError) as info:
        manager.get_client("anthropic").complete("Hi", stop=[key, 5])
    assert key not in str(info.value) and key not in repr(info.value)
    assert len(mock.calls) == 0


@pytest.mark.parametrize("provider, temperature", [("anthropic", 0), ("anthropic", 1), ("openai", 2), ("openai", 0.0)])
def test_boundary_temperatures_are_accepted(mock, manager, provider, temperature):
    url = BASES[provider] + ("/v1/messages" if provider == "anthropic" else "/v1/chat/completions")
    body = ({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn"} if provider == "anthropic"
            else {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})
    mock.add(responses.POST, url, json=body)
    assert manager.get_client(provider).complete("Hi", temperature=temperature, max_tokens=1).content == "ok"
    assert len(mock.calls) == 1
