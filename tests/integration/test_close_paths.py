"""Close and interruption paths that must never lose a Session nor stop
half-way: a lease waiter cut by Ctrl-C, a middleware whose finisher raises
during close, a stream tracked after close, close from a worker thread."""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any, Callable

import pytest

from llm_sync.errors import LLMClosedError, LLMError


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        threading.Event().wait(0.002)


def test_ctrl_c_while_waiting_for_a_lease_loses_no_session(make_manager):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is delivered to the main thread")
    manager = make_manager(max_size=2)
    client = manager.get_client("anthropic")
    pool = manager.pool("anthropic")
    streams = [client.stream("hello there friend, tell me a long story", max_tokens=200) for _ in range(2)]
    for stream in streams:
        next(stream)  # both Sessions leased

    def interrupt_once_waiting() -> None:
        _until(lambda: pool.waiting == 1)
        _thread.interrupt_main()

    interrupter = threading.Thread(target=interrupt_once_waiting)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        client.complete("waiting")
    interrupter.join(10)
    for stream in streams:
        stream.close()
    assert pool.available == 2 and pool.waiting == 0
    assert client.complete("again", timeout=5).content


class _Gate:
    """A reply function that holds every request until opened."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.open = threading.Event()

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.arrived.release()
        self.open.wait(30)
        return "late"


def test_close_is_complete_when_a_middleware_raises_in_a_stream_finisher(make_manager, llm_simulator, caplog):
    import logging

    from llm_sync.middleware.base import Middleware

    class Bad(Middleware):
        def process_error(self, error: Any, context: Any) -> Any:
            raise RuntimeError("user data: SECRET-process-error")

    manager = make_manager(max_size=2, timeout={"connect": 5, "read": 30})
    manager.add_middleware(Bad())
    client = manager.get_client("anthropic")
    pools = list(manager._pools.values())
    stream = client.stream("hello there friend, tell me a long story", max_tokens=200)
    next(stream)
    gate = _Gate()
    llm_simulator.set_reply(gate)
    outcome: list[Any] = []

    def stalled() -> None:
        try:
            client.complete("stall", timeout=30)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    caller = threading.Thread(target=stalled)
    caller.start()
    try:
        assert gate.arrived.acquire(timeout=10)  # the server holds the call
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="llm_sync"):
            manager.close()  # must neither raise nor stop before cutting the stalled call
        caller.join(10)
        assert not caller.is_alive() and time.monotonic() - started < 5
        assert outcome  # cut at once (the chain's own middleware may turn that into its error)
        assert all(pool.closed for pool in pools)  # every endpoint, also those after the failure
        with pytest.raises(LLMClosedError):
            next(stream)
        assert all("SECRET" not in r.getMessage() for r in caplog.records if r.name == "llm_sync")
    finally:
        gate.open.set()
        llm_simulator.set_reply(None)


def test_a_stream_that_starts_as_the_manager_closes_raises_closed_not_a_connection_error(make_manager, monkeypatch):
    from llm_sync.streaming import Stream

    manager = make_manager(max_size=2)
    attach = Stream.attach

    def attach_then_close(self: Stream, owner: Any) -> None:
        attach(self, owner)
        manager.close()  # after prime() succeeded, before the pipeline tracks the stream

    monkeypatch.setattr(Stream, "attach", attach_then_close)
    stream = manager.get_client("anthropic").stream("hello there friend, tell me a long story", max_tokens=200)
    monkeypatch.undo()
    with pytest.raises(LLMClosedError):
        list(stream)
    assert stream.closed


def test_a_done_callback_may_close_the_manager(make_manager, caplog):
    import logging

    manager = make_manager(max_size=2)
    closed = threading.Event()
    outcome: list[Any] = []

    def on_done(future: Any) -> None:
        try:
            outcome.append(manager.close())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)
        closed.set()

    go = threading.Event()
    client = manager.get_client("anthropic")
    future = client._workers.submit(lambda: (go.wait(10), client.complete("hi", timeout=10))[1])
    future.add_done_callback(on_done)  # runs in the worker thread once the call is done
    with caplog.at_level(logging.WARNING, logger="llm_sync"):
        go.set()
        assert closed.wait(10)
    assert outcome == [None] and manager.closed
    assert not [r for r in caplog.records if r.name == "llm_sync"]  # closed cleanly, nothing failed
    assert future.result(0).content
