"""Close and interruption paths that must never lose a Session nor stop
half-way: a lease waiter cut by Ctrl-C, a middleware whose finisher raises
during close, a stream tracked after close, close from a worker thread."""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any, Callable

import pytest

from llm_sync.errors import LLMError


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
