"""Hostile wire behaviour, over real sockets: interim responses before the
answer, bodies that trickle or stall. Never a wrong answer; every wait
bounded by the call's timeout; every timeout an LLMTimeoutError whose
``kind`` says what ran out."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from llm_sync import LLMTimeoutError
from one_shot_server import TricklingHead

PROVIDERS = ["anthropic", "openai"]


def _echo(messages: list[dict[str, Any]]) -> str:
    """Each call's answer names its prompt, so a mixed-up answer shows."""
    content = messages[-1]["content"]
    text = content if isinstance(content, str) else content[0]["text"]
    return f"answer to {text}: " + "lorem ipsum dolor sit amet " * 4


# --- 1. interim responses ------------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_interim_response_is_skipped_and_the_next_call_gets_its_own_answer(make_manager, llm_simulator,
                                                                             provider):
    llm_simulator.set_reply(_echo)
    client = make_manager(max_size=1, max_retries=0).get_client(provider)  # one Session, one connection
    llm_simulator.inject_interim(103, headers={"link": "</a.css>; rel=preload"})
    first = client.complete("first")
    second = client.complete("second")
    assert first.content.startswith("answer to first")
    assert second.content.startswith("answer to second")
    llm_simulator.inject_interim(102)  # any 1xx, also on a stream
    assert "".join(client.stream_complete("third")).startswith("answer to third")
    assert client.complete("fourth").content.startswith("answer to fourth")
    assert llm_simulator.connection_count == 1  # skipping it kept the connection usable
    assert llm_simulator.pending_faults() == []


class _InterimFlood:
    """Answers every request with an endless run of 103s."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.recv(65536)
        try:
            while True:
                conn.sendall(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_an_endless_run_of_interim_responses_is_a_typed_error_at_once():
    from llm_sync import LLMConnectionError, LLMManager

    server = _InterimFlood()
    config = {"providers": {"anthropic": {"api_keys": ["sk-flood-1"], "base_url": server.base_url,
                                          "max_retries": 0, "timeout": {"connect": 5, "read": 30}}}}
    try:
        with LLMManager(config) as manager:
            with pytest.raises(LLMConnectionError, match="interim"):
                manager.get_client("anthropic").complete("hi", timeout=10)
    finally:
        server.close()


# --- 4. the call's timeout holds while bytes trickle in -------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_trickling_body_ends_at_the_deadline(make_manager, llm_simulator, provider):
    """~300 bytes at 80 B/s would take ~4 s; each read is quick, so only a
    deadline enforced within the body stops it (at ~0.5 s)."""
    llm_simulator.set_reply(_echo)
    client = make_manager(max_size=1).get_client(provider)
    llm_simulator.inject_trickle(chunk_size=4, interval=0.05)
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as caught:
        client.complete("slow", timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert caught.value.deadline_passed and caught.value.kind == "deadline" and caught.value.sent
    # The cut connection is never reused: the next call gets its own answer, on a new one.
    assert client.complete("next").content.startswith("answer to next")
    assert llm_simulator.connection_count == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_sending_one_chunk_slowly_ends_at_the_deadline(make_manager, llm_simulator, provider):
    llm_simulator.set_reply(_echo)
    client = make_manager(max_size=1).get_client(provider)
    llm_simulator.inject_trickle(chunk_size=4, interval=0.05)  # the first event alone takes seconds
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as caught:
        "".join(client.stream_complete("slow", timeout=0.5))
    assert time.monotonic() - started < 2.0
    assert caught.value.deadline_passed and caught.value.kind == "deadline"
    assert "".join(client.stream_complete("next")).startswith("answer to next")


def test_a_stream_trickling_after_its_first_text_ends_at_the_deadline(make_manager, llm_simulator):
    """The text already yielded comes first, then the timeout with it."""
    llm_simulator.set_reply(_echo)
    client = make_manager(max_size=1).get_client("anthropic")
    llm_simulator.inject_trickle(chunk_size=128, interval=0.1)  # first text at ~0.7 s, the end at ~5.6 s
    started = time.monotonic()
    received: list[str] = []
    with pytest.raises(LLMTimeoutError) as caught:
        for text in client.stream_complete("slow", timeout=1.5):
            received.append(text)
    assert time.monotonic() - started < 4.5
    assert caught.value.kind == "deadline" and caught.value.deadline_passed
    assert received and caught.value.partial_text == "".join(received)


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_stalling_half_way_is_a_read_timeout(make_manager, llm_simulator, stream):
    client = make_manager(max_size=1, max_retries=0, timeout={"connect": 5, "read": 0.5}).get_client("anthropic")
    llm_simulator.inject_stall(after_bytes=40)
    with pytest.raises(LLMTimeoutError) as caught:
        if stream:
            "".join(client.stream_complete("stall", timeout=None))
        else:
            client.complete("stall", timeout=None)
    assert caught.value.kind == "read" and not caught.value.deadline_passed and caught.value.sent
    assert client.complete("next").content


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_stalling_half_way_ends_at_the_deadline(make_manager, llm_simulator, stream):
    client = make_manager(max_size=1, timeout={"connect": 5, "read": 30}).get_client("openai")
    llm_simulator.inject_stall(after_bytes=40)
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as caught:
        if stream:
            "".join(client.stream_complete("stall", timeout=0.5))
        else:
            client.complete("stall", timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert caught.value.kind == "deadline" and caught.value.deadline_passed


# --- connect, read and deadline are told apart -----------------------------------

def test_a_server_that_never_answers_is_a_read_timeout_or_the_deadline(make_manager, llm_simulator):
    client = make_manager(max_size=1, max_retries=0, timeout={"connect": 5, "read": 0.3}).get_client("anthropic")
    llm_simulator.inject(200, body={}, delay=2.0)  # the head comes after the read timeout
    with pytest.raises(LLMTimeoutError) as caught:
        client.complete("quiet", timeout=None)
    assert caught.value.kind == "read" and not caught.value.deadline_passed

    client = make_manager(max_size=1, max_retries=0, timeout={"connect": 5, "read": 30}).get_client("anthropic")
    llm_simulator.inject(200, body={}, delay=2.0)
    with pytest.raises(LLMTimeoutError) as caught:
        client.complete("quiet", timeout=0.3)
    assert caught.value.kind == "deadline" and caught.value.deadline_passed


@pytest.fixture
def blackhole():
    """A listening socket whose accept queue is full: a further connect
    gets no answer (its SYN is dropped), like a firewalled host."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(listener.getsockname())
    except (TimeoutError, socket.timeout):
        pass
    else:
        pytest.skip("this system completes connects beyond a full backlog")
    finally:
        probe.close()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    for filler in fillers:
        filler.close()
    listener.close()


def test_a_connect_timeout_is_its_own_kind(blackhole):
    from llm_sync import LLMManager

    config = {"providers": {"anthropic": {"api_keys": ["sk-hole-1"], "base_url": blackhole, "max_retries": 0,
                                          "timeout": {"connect": 0.3, "read": 30}}}}
    with LLMManager(config) as manager:
        with pytest.raises(LLMTimeoutError) as caught:
            manager.get_client("anthropic").complete("hi", timeout=None)
    assert caught.value.kind == "connect" and not caught.value.sent and not caught.value.deadline_passed


def test_a_trickling_response_head_ends_at_the_deadline():
    from llm_sync import LLMManager

    server = TricklingHead()
    config = {"providers": {"anthropic": {"api_keys": ["sk-slow-1"], "base_url": server.base_url,
                                          "max_retries": 0, "timeout": {"connect": 5, "read": 30}}}}
    try:
        with LLMManager(config) as manager:
            started = time.monotonic()
            with pytest.raises(LLMTimeoutError) as caught:
                manager.get_client("anthropic").complete("hi", timeout=0.5)
            assert time.monotonic() - started < 2.0
            assert caught.value.kind == "deadline" and caught.value.deadline_passed and caught.value.sent
    finally:
        server.close()
