"""Streams over real sockets: leases come back however a stream ends."""

from __future__ import annotations

import gc

import pytest

from llm_sync import LLMConnectionError, LLMError, LLMProviderError, LLMStreamError, Message, MessageRole

PROMPT = [Message(MessageRole.USER, "Write a long story about a lighthouse keeper and the sea")]


def _full(manager, provider):
    status = manager.get_status(provider)
    return status["available_clients"] == status["total_clients"]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_abandoned_after_first_chunk_returns_lease(make_manager, provider):
    manager = make_manager(max_size=2)
    client = manager.get_client(provider)
    for chunk in client.stream_complete(PROMPT, max_tokens=50):
        assert chunk
        break
    gc.collect()
    assert _full(manager, provider)
    # and the pool still works afterwards
    assert client.complete("again").content == "Simulated reply to: again"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_stream_response_after_exhaustion(make_manager, provider):
    manager = make_manager()
    client = manager.get_client(provider)
    with client.stream(PROMPT, max_tokens=5) as stream:
        chunks = list(stream)
        assert not _full(manager, provider) or stream.closed
    response = stream.response
    assert "".join(chunks) == response.content == "Simulated reply to: Write"  # ":" is a token
    assert response.stop_reason == "max_tokens"
    assert response.usage.output_tokens == 5 and response.usage.input_tokens > 0
    assert response.client_id.startswith(provider)
    assert _full(manager, provider)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_explicit_close_mid_stream(make_manager, provider):
    manager = make_manager(max_size=1)
    stream = manager.get_client(provider).stream_complete(PROMPT)
    next(stream)
    assert manager.get_status(provider)["available_clients"] == 0
    stream.close()
    stream.close()
    assert _full(manager, provider)
    assert next(stream, None) is None  # closed: nothing more
    with pytest.raises(LLMError, match="only once"):
        list(stream)  # a second pass is refused, not silently empty


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_midstream_error_is_typed_and_carries_partial_text(make_manager, llm_simulator, provider):
    manager = make_manager()
    llm_simulator.inject_stream_error(after_chunks=2)
    received = []
    with pytest.raises(LLMProviderError) as info:
        for chunk in manager.get_client(provider).stream_complete(PROMPT):
            received.append(chunk)
    assert received and info.value.partial_text == "".join(received)
    assert _full(manager, provider)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_truncated_stream_is_an_error_not_a_short_answer(make_manager, llm_simulator, provider):
    manager = make_manager()
    llm_simulator.inject_truncated_stream(after_chunks=2)
    received = []
    with pytest.raises(LLMConnectionError) as info:
        for chunk in manager.get_client(provider).stream_complete(PROMPT):
            received.append(chunk)
    assert isinstance(info.value, LLMStreamError)
    assert info.value.partial_text == "".join(received) != ""
    assert _full(manager, provider)


def test_stream_http_error_raises_at_open_and_returns_lease(make_manager, llm_simulator):
    manager = make_manager(max_size=1)
    llm_simulator.inject(status=400)
    with pytest.raises(LLMProviderError) as info:
        manager.get_client("anthropic").stream_complete(PROMPT)
    assert info.value.status_code == 400
    assert _full(manager, "anthropic")
