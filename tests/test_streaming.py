"""Streams end to end over mocked HTTP (every SSE fixture), the Stream
object's lifecycle, and the providers' stream decoders under random splits."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sync import LLMManager, LLMProvider, Stream
from llm_sync.errors import (
    LLMConnectionError,
    LLMError,
    LLMProviderError,
    LLMRateLimitError,
    LLMStreamError,
)
from llm_sync.providers import create_provider
from llm_sync.providers.base import Provider
from llm_sync.sse import SSEParser

FIXTURES = Path(__file__).parent / "fixtures" / "sse"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text("utf-8"))
NAMES = sorted(EXPECTED)
OK_NAMES = [n for n in NAMES if EXPECTED[n]["error"] is None]
ERROR_NAMES = [n for n in NAMES if EXPECTED[n]["error"] is not None]

BASES = {"anthropic": "https://api.anthropic.test", "openai": "https://api.openai.test"}
URLS = {"anthropic": f"{BASES['anthropic']}/v1/messages", "openai": f"{BASES['openai']}/v1/chat/completions"}
REQUEST_ID_HEADER = {"anthropic": "request-id", "openai": "x-request-id"}
KEYS = {"anthropic": "sk-ant-test-SECRET-0001", "openai": "sk-test-SECRET-0002"}
POOL_SIZE = 2


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def provider_of(name: str) -> str:
    return EXPECTED[name]["provider"]


def normalised(reason: Optional[str]) -> Optional[str]:
    return {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}.get(reason, reason)


def expected_tokens(value: Optional[int]) -> int:
    return 0 if value is None else value  # not reported by the stream: Usage stays 0


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({
        "providers": {
            name: {"api_keys": [KEYS[name]], "base_url": BASES[name], "max_retries": 0} for name in BASES
        },
        "pool": {"max_size": POOL_SIZE, "acquire_timeout": 1},
    }) as m:
        yield m


def serve(mock: responses.RequestsMock, name: str, body: Optional[bytes] = None) -> str:
    provider = provider_of(name)
    mock.add(
        responses.POST, URLS[provider], status=200,
        body=raw(name) if body is None else body,
        content_type="text/event-stream",
        headers={REQUEST_ID_HEADER[provider]: "req_stream_1"},
    )
    return provider


def available(manager: LLMManager, provider: str) -> int:
    return manager.get_status(provider)["available_clients"]


def assert_pool_full(manager: LLMManager, provider: str) -> None:
    status = manager.get_status(provider)
    assert status["available_clients"] == status["total_clients"] == POOL_SIZE
    assert status["in_flight"] == 0


# --- every fixture through the client -------------------------------------------------------


@pytest.mark.parametrize("name", OK_NAMES)
def test_stream_complete_yields_fixture_text(mock, manager, name):
    provider = serve(mock, name)
    chunks = list(manager.get_client(provider).stream_complete("Hi"))
    assert "".join(chunks) == EXPECTED[name]["text"]
    assert all(isinstance(c, str) and c for c in chunks)
    assert len(mock.calls) == 1
    assert_pool_full(manager, provider)


@pytest.mark.parametrize("name", OK_NAMES)
def test_stream_response_matches_fixture(mock, manager, name):
    provider = serve(mock, name)
    expected = EXPECTED[name]
    with manager.get_client(provider).stream("Hi") as stream:
        assert available(manager, provider) == POOL_SIZE - 1
        text = "".join(stream)
        response = stream.response
    assert text == expected["text"]
    assert response.content == expected["text"]
    assert response.stop_reason == normalised(expected["stop_reason"])
    assert response.usage.input_tokens == expected_tokens(expected["input_tokens"])
    assert response.usage.output_tokens == expected_tokens(expected["output_tokens"])
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.provider is LLMProvider(provider)
    assert response.client_id == f"{provider}-0"
    assert response.request_id == "req_stream_1"
    assert response.model
    assert response.latency_ms >= 0
    assert stream.closed
    assert_pool_full(manager, provider)
    statuses = manager.get_status(provider)["client_statuses"][0]
    assert (statuses["total_requests"], statuses["failed_requests"]) == (1, 0)


def test_stream_tool_use_is_kept_in_raw(mock, manager):
    serve(mock, "anthropic_tool_use.sse")
    with manager.get_client("anthropic").stream("weather?") as stream:
        stream.read()
    tools = stream.response.raw["tool_use"]
    assert tools[0]["name"] == "get_weather"
    assert tools[0]["input"] == {"location": "San Francisco, CA", "unit": "fahrenheit"}


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_stream_errors_are_typed_and_carry_partial_text(mock, manager, name):
    provider = serve(mock, name)
    expected = EXPECTED[name]
    received: list[str] = []
    with pytest.raises(LLMError) as info:
        for chunk in manager.get_client(provider).stream_complete("Hi"):
            received.append(chunk)
    error = info.value
    assert "".join(received) == expected["text"]
    assert error.partial_text == expected["text"]
    if expected["error"] == "midstream":
        assert isinstance(error, LLMProviderError)
        assert error.provider == provider
        assert error.mid_stream is True
        if provider == "anthropic":
            assert (error.status_code, error.error_type) == (529, "overloaded_error")
        else:
            assert (error.status_code, error.error_type) == (500, "server_error")
    else:
        assert isinstance(error, LLMConnectionError)
        assert isinstance(error, LLMStreamError)  # text had been received
    assert_pool_full(manager, provider)
    statuses = manager.get_status(provider)["client_statuses"][0]
    assert (statuses["total_requests"], statuses["failed_requests"]) == (1, 1)


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_stream_error_via_context_manager_has_no_response(mock, manager, name):
    provider = serve(mock, name)
    with manager.get_client(provider).stream("Hi") as stream:
        with pytest.raises(LLMError):
            stream.read()
        assert stream.text == EXPECTED[name]["text"]
        with pytest.raises(LLMError):
            stream.response  # noqa: B018
    assert stream.closed
    assert_pool_full(manager, provider)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_truncated_before_any_text_is_connection_error(mock, manager, provider):
    name = "anthropic_truncated.sse" if provider == "anthropic" else "openai_truncated.sse"
    first_event = raw(name).split(b"\n\n")[0] + b"\n\n"
    serve(mock, name, body=first_event)
    with pytest.raises(LLMConnectionError) as info:
        list(manager.get_client(provider).stream_complete("Hi"))
    assert not isinstance(info.value, LLMStreamError)
    assert not getattr(info.value, "partial_text", "")
    assert_pool_full(manager, provider)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_empty_200_body_is_connection_error(mock, manager, provider):
    mock.add(responses.POST, URLS[provider], status=200, body=b"", content_type="text/event-stream")
    with pytest.raises(LLMConnectionError):
        list(manager.get_client(provider).stream_complete("Hi"))
    assert_pool_full(manager, provider)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_error_status_when_opening_stream(mock, manager, provider):
    body = ({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
            if provider == "anthropic" else {"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}})
    mock.add(responses.POST, URLS[provider], status=429, json=body, headers={"retry-after": "2"})
    with pytest.raises(LLMRateLimitError) as info:
        manager.get_client(provider).stream("Hi")
    assert info.value.retry_after == 2.0
    assert_pool_full(manager, provider)
    assert manager.get_status(provider)["client_statuses"][0]["failed_requests"] == 1


# --- the Stream object -----------------------------------------------------------------------


def test_join_over_stream_complete(mock, manager):
    serve(mock, "openai_basic.sse")
    assert "".join(manager.get_client("openai").stream_complete("Hi")) == EXPECTED["openai_basic.sse"]["text"]
    assert_pool_full(manager, "openai")


def test_response_before_exhaustion_raises(mock, manager):
    serve(mock, "anthropic_basic.sse")
    stream = manager.get_client("anthropic").stream("Hi")
    with pytest.raises(LLMError):
        stream.response  # noqa: B018
    first = next(iter(stream))
    assert first == "Hello"
    with pytest.raises(LLMError):
        stream.response  # noqa: B018
    assert stream.text == "Hello"
    stream.close()
    with pytest.raises(LLMError):
        stream.response  # noqa: B018
    assert_pool_full(manager, "anthropic")


def test_stream_cannot_be_iterated_twice(mock, manager):
    serve(mock, "anthropic_basic.sse")
    stream = manager.get_client("anthropic").stream("Hi")
    assert "".join(stream) == EXPECTED["anthropic_basic.sse"]["text"]
    with pytest.raises(LLMError):
        iter(stream)
    with pytest.raises(LLMError):
        for _ in stream:
            pass
    assert stream.response.content == EXPECTED["anthropic_basic.sse"]["text"]


def test_stream_continues_after_partial_read_but_not_after_its_end(mock, manager):
    """``first = next(s); for c in s`` (peek, then the rest) works; a pass
    after the end raises rather than silently yielding nothing."""
    serve(mock, "openai_basic.sse")
    with manager.get_client("openai").stream("Hi") as stream:
        first = next(stream)
        rest = [chunk for chunk in stream]
        assert first + "".join(rest) == EXPECTED["openai_basic.sse"]["text"]
        with pytest.raises(LLMError, match="only once"):
            for _ in stream:
                pass


def test_break_then_del_returns_lease(mock, manager):
    serve(mock, "anthropic_ping_multiblock.sse")
    stream = manager.get_client("anthropic").stream_complete("Hi")
    for chunk in stream:
        assert chunk == "First block: "
        break
    assert available(manager, "anthropic") == POOL_SIZE - 1  # still held by the live stream
    del stream
    gc.collect()
    assert_pool_full(manager, "anthropic")


def test_break_out_of_anonymous_loop_returns_lease_at_once(mock, manager):
    serve(mock, "openai_usage.sse")
    for _ in manager.get_client("openai").stream_complete("Hi"):
        break
    assert_pool_full(manager, "openai")


def test_close_is_idempotent_and_returns_lease(mock, manager):
    serve(mock, "anthropic_basic.sse")
    stream = manager.get_client("anthropic").stream("Hi")
    assert isinstance(stream, Stream)
    assert not stream.closed
    assert next(stream) == "Hello"
    stream.close()
    assert stream.closed
    assert_pool_full(manager, "anthropic")
    stream.close()
    stream.close()
    assert_pool_full(manager, "anthropic")
    assert "closed" in repr(stream)
    assert KEYS["anthropic"] not in repr(stream)


def test_close_before_reading_returns_lease(mock, manager):
    serve(mock, "openai_basic.sse")
    stream = manager.get_client("openai").stream("Hi")
    assert available(manager, "openai") == POOL_SIZE - 1
    stream.close()
    assert_pool_full(manager, "openai")
    assert list(stream) == []


def test_exception_in_consumer_with_context_manager_returns_lease(mock, manager):
    serve(mock, "anthropic_basic.sse")
    with pytest.raises(RuntimeError):
        with manager.get_client("anthropic").stream("Hi") as stream:
            for _ in stream:
                raise RuntimeError("consumer failed")
    assert_pool_full(manager, "anthropic")


def test_open_streams_hold_leases_until_closed(mock, manager):
    serve(mock, "anthropic_basic.sse")
    serve(mock, "anthropic_basic.sse")
    client = manager.get_client("anthropic")
    first, second = client.stream("Hi"), client.stream("Hi")
    assert available(manager, "anthropic") == 0
    assert manager.get_status("anthropic")["in_flight"] == 2
    first.read()
    assert available(manager, "anthropic") == 1
    second.close()
    assert_pool_full(manager, "anthropic")


# --- decoders under random splits -------------------------------------------------------------


def decode(name: str, chunks: list[bytes]) -> tuple[str, Any, Optional[LLMError], Provider]:
    provider = create_provider(LLMProvider(provider_of(name)), BASES[provider_of(name)])
    decoder = provider.stream_decoder()
    parser = SSEParser()
    text: list[str] = []
    error: Optional[LLMError] = None
    try:
        for chunk in chunks:
            for event in parser.feed(chunk):
                piece = decoder.feed(event)
                if piece:
                    text.append(piece)
        parser.close()
    except LLMError as exc:
        error = exc
    return "".join(text), decoder, error, provider


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def check_decoded(name: str, chunks: list[bytes]) -> None:
    expected = EXPECTED[name]
    text, decoder, error, provider = decode(name, chunks)
    assert text == expected["text"]
    if expected["error"] == "midstream":
        assert isinstance(error, LLMProviderError)
        assert not decoder.done
    elif expected["error"] == "truncated":
        assert error is None
        assert not decoder.done
    else:
        assert error is None
        assert decoder.done
        assert provider.normalize_stop_reason(decoder.stop_reason) == normalised(expected["stop_reason"])
    assert decoder.stop_reason == expected["stop_reason"]
    assert decoder.usage.input_tokens == expected_tokens(expected["input_tokens"])
    assert decoder.usage.output_tokens == expected_tokens(expected["output_tokens"])


@pytest.mark.parametrize("name", NAMES)
def test_decoder_whole_body(name):
    check_decoded(name, [raw(name)])


@pytest.mark.parametrize("name", NAMES)
def test_decoder_byte_at_a_time(name):
    data = raw(name)
    check_decoded(name, [data[i:i + 1] for i in range(len(data))])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decoder_random_splits(name, data):
    body = raw(name)
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=max(1, len(body) - 1)), max_size=12))
    check_decoded(name, split_at(body, cuts))


# --- close from another thread while a read is in progress ------------------------

class _PulledRaw:
    """A body whose read is in progress when another thread closes the
    response; the read then trips over what close() took away, as urllib3's
    does (``'NoneType' object has no attribute ...``)."""

    chunked = False

    def __init__(self) -> None:
        import threading

        self.reading = threading.Event()
        self.closed = threading.Event()

    def read1(self, amount: int, decode_content: bool = True) -> bytes:
        self.reading.set()
        self.closed.wait(10)
        raise AttributeError("'NoneType' object has no attribute 'read1'")

    def shutdown(self) -> None:
        pass


class _PulledHTTP:
    url = "http://127.0.0.1:9/v1/messages"
    headers: dict[str, str] = {}

    def __init__(self) -> None:
        self.raw = _PulledRaw()

    def close(self) -> None:
        self.raw.closed.set()


def _read_in_thread(stream: Stream) -> tuple[Any, list[Any]]:
    import threading

    outcome: list[Any] = []

    def read() -> None:
        try:
            outcome.append(list(stream))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    return reader, outcome


@pytest.mark.parametrize("shutdown", [False, True])
def test_close_from_another_thread_mid_read_never_surfaces_a_raw_exception(shutdown):
    from llm_sync.errors import LLMClosedError

    http = _PulledHTTP()
    stream = Stream(http, create_provider("anthropic", "http://127.0.0.1:9"), "anthropic-0", 0.0)  # type: ignore[arg-type]
    reader, outcome = _read_in_thread(stream)
    assert http.raw.reading.wait(10)  # the reader is inside the body read
    if shutdown:
        stream.abort("the anthropic pool was closed before the stream's end")
    else:
        stream.close()
    reader.join(10)
    if shutdown:  # cut by the pool: the reader must not take it as complete
        assert len(outcome) == 1 and isinstance(outcome[0], LLMClosedError), outcome
    else:  # the caller's own close: a quiet end
        assert outcome == [[]]


# --- a finisher that raises never stops a shutdown ------------------------------------

def test_abort_logs_a_failing_finisher_by_type_and_still_returns_the_lease(caplog):
    import logging

    from llm_sync.errors import LLMClosedError

    class Owner:
        released = 0

        def release(self) -> None:
            self.released += 1

        def defer_close(self, stream: Stream) -> None:
            raise AssertionError("not collected")

    ran: list[str] = []

    def failing(response: Any, error: Any) -> None:
        ran.append("failing")
        raise RuntimeError("user data: SECRET-finisher-text")

    http = _PulledHTTP()
    owner = Owner()
    stream = Stream(http, create_provider("anthropic", "http://127.0.0.1:9"), "anthropic-0", 0.0,  # type: ignore[arg-type]
                    owner=owner)
    stream.add_finisher(failing)
    stream.add_finisher(lambda response, error: ran.append("next"))  # type: ignore[func-returns-value]
    with caplog.at_level(logging.WARNING, logger="llm_sync"):
        stream.abort("the anthropic pool was closed")  # must not raise
    assert ran == ["failing", "next"] and owner.released == 1
    with pytest.raises(LLMClosedError):
        next(stream)
    warnings = [r for r in caplog.records if r.name == "llm_sync"]
    assert warnings and "RuntimeError" in warnings[0].getMessage()
    assert all("SECRET" not in r.getMessage() and r.exc_info is None for r in warnings)
