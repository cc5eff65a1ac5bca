"""Shutdown and interruption over real sockets: ``close()`` is bounded, wakes
every waiter with LLMClosedError and makes open streams raise; Ctrl-C in
``complete_batch`` returns at once; close in a forked child never touches
the parent's sockets or locks; batches never fail for want of leases."""

from __future__ import annotations

import _thread
import json
import os
import select
import signal
import threading
import time
from typing import Any, Callable

import pytest

from llm_sync import LLMManager
from llm_sync.errors import LLMClosedError
from one_shot_server import StallingStream

STALL = 30.0  # what a stalled call would wait without close(): the read timeout


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        threading.Event().wait(0.002)


class _Gate:
    """A reply function that holds every request until opened."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.count = 0
        self.open = threading.Event()
        self.on_arrival: Callable[[int], None] = lambda count: None

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.count += 1
        self.on_arrival(self.count)
        self.arrived.release()
        self.open.wait(STALL)
        return "late"


@pytest.fixture
def gate(llm_simulator: Any) -> Any:
    gate = _Gate()
    llm_simulator.set_reply(gate)
    yield gate
    gate.open.set()
    llm_simulator.set_reply(None)


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_close_cuts_a_stalled_call_at_once(make_manager, gate, provider):
    manager = make_manager(max_size=2, timeout={"connect": 5, "read": STALL})
    thread, outcome = _in_thread(lambda: manager.get_client(provider).complete("hi"))
    assert gate.arrived.acquire(timeout=10)  # the server holds the request
    started = time.monotonic()
    manager.close()
    thread.join(STALL)
    assert time.monotonic() - started < 3, "close() waited for the read timeout"
    assert len(outcome) == 1 and isinstance(outcome[0], LLMClosedError), outcome


def test_close_wakes_callers_waiting_for_rate_limit_capacity(sim_config):
    config = sim_config(max_size=4, rate_limits={"requests_per_minute": 1})
    config["pool"]["acquire_timeout"] = 600.0  # the pool lets a call wait for capacity this long
    manager = LLMManager(config)
    client = manager.get_client("anthropic")
    keys = len(manager.pool("anthropic").keys)
    for _ in range(keys):  # every key's one request this minute
        client.complete("hi", max_tokens=8)
    thread, outcome = _in_thread(lambda: client.complete("hi", max_tokens=8, timeout=300))  # waits ~60 s
    _until(lambda: manager.pool("anthropic").limiter.waiting == 1)
    started = time.monotonic()
    manager.close()
    thread.join(STALL)
    assert time.monotonic() - started < 3
    assert len(outcome) == 1 and isinstance(outcome[0], LLMClosedError), outcome


def test_close_wakes_callers_waiting_for_a_lease(make_manager, gate):
    manager = make_manager(max_size=1, timeout={"connect": 5, "read": STALL})
    client = manager.get_client("anthropic")
    first, first_outcome = _in_thread(lambda: client.complete("one"))
    assert gate.arrived.acquire(timeout=10)
    second, second_outcome = _in_thread(lambda: client.complete("two"))
    _until(lambda: manager.get_status("anthropic")["queue_size"] == 1)
    manager.close()
    first.join(STALL)
    second.join(STALL)
    assert isinstance(first_outcome[0], LLMClosedError) and isinstance(second_outcome[0], LLMClosedError)


def test_manager_close_makes_a_stream_being_read_raise_not_end():
    server = StallingStream(STALL)
    config = {"providers": {"anthropic": {"api_keys": ["sk-stall-1"], "base_url": server.base_url,
                                          "timeout": {"connect": 5, "read": STALL}}},
              "pool": {"max_size": 1}}
    try:
        manager = LLMManager(config)
        stream = manager.get_client("anthropic").stream("hi")
        assert next(stream) == "Once"
        reader, outcome = _in_thread(lambda: list(stream))
        started = time.monotonic()
        manager.close()
        reader.join(STALL)
        assert time.monotonic() - started < 3
        assert len(outcome) == 1 and isinstance(outcome[0], LLMClosedError), outcome  # never a quiet end
        assert "incomplete" in str(outcome[0])
        assert stream.text == "Once"
        with pytest.raises(LLMClosedError):
            next(stream)  # and it stays cut
    finally:
        server.close()


# --- Ctrl-C in complete_batch --------------------------------------------------------

def test_ctrl_c_in_complete_batch_cancels_pending_items_and_returns_at_once(make_manager, gate, llm_simulator):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is delivered to the main thread")
    manager = make_manager(max_size=2, timeout={"connect": 5, "read": STALL})
    gate.on_arrival = lambda count: _thread.interrupt_main() if count == 2 else None
    safety = threading.Timer(10, gate.open.set)  # the old behaviour must end too (and then fail)
    safety.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            manager.get_client("anthropic").complete_batch([f"item {i}" for i in range(20)], max_workers=2)
        elapsed = time.monotonic() - started
    finally:
        safety.cancel()
        gate.open.set()
    assert elapsed < 2, f"Ctrl-C honoured after {elapsed:.1f}s"
    manager.close()
    assert gate.count <= 2  # the 2 in flight; nothing pending was sent


def test_an_exception_from_the_progress_callback_stops_the_batch(make_manager, llm_simulator):
    manager = make_manager(max_size=1)

    def progress(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        manager.get_client("anthropic").complete_batch([f"item {i}" for i in range(10)], progress=progress)
    manager.close()  # the worker has stopped: nothing more is sent
    assert llm_simulator.request_count() == 1


# --- batches never fail for want of leases -----------------------------------------

def test_a_batch_with_more_workers_than_leases_queues_instead_of_failing(llm_simulator, sim_config):
    llm_simulator.latency = 0.15
    try:
        config = sim_config(max_size=1)
        config["pool"]["acquire_timeout"] = 0.2
        with LLMManager(config) as manager:
            results = manager.get_client("anthropic").complete_batch(
                [f"item {i}" for i in range(4)], max_workers=4, return_exceptions=True)
    finally:
        llm_simulator.latency = 0.0
    assert [r.content for r in results] == [f"Simulated reply to: item {i}" for i in range(4)], results


# --- close in a forked child --------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_close_in_a_forked_child_never_waits_on_a_lock_the_parent_held(make_manager, llm_simulator):
    manager = make_manager(max_size=2)
    client = manager.get_client("anthropic")
    client.complete("warm up")  # a kept-alive connection the child must leave alone
    connections = llm_simulator.connection_count
    runtime = manager._runtimes["anthropic"]
    locks = [manager._lock, runtime.pool._lock, runtime.limiter._cond, runtime.workers._lock]
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:  # a parent thread inside every lock at fork time
        for lock in locks:
            lock.acquire()
        holding.set()
        done.wait(30)
        for lock in reversed(locks):
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            manager.close()
            manager.close()
            message = {"closed": manager.closed, "pool_closed": runtime.pool.closed}
            os.write(write_end, json.dumps(message).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 10)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        raw = os.read(read_end, 4096) if ready else b""
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
        done.set()
        holder.join(10)
    assert ready, "close() in the forked child hung on a lock the parent held"
    assert json.loads(raw) == {"closed": True, "pool_closed": True}
    # The parent's manager and connection are untouched: it still works, on the same connection.
    assert not manager.closed
    assert client.complete("after the fork").content == "Simulated reply to: after the fork"
    assert llm_simulator.connection_count == connections


def test_close_wakes_a_call_sleeping_in_a_retry_backoff(make_manager, llm_simulator):
    manager = make_manager(max_size=2, retry_budget=120)
    llm_simulator.inject(529, headers={"retry-after": "60"}, count=5)
    thread, outcome = _in_thread(lambda: manager.get_client("anthropic").complete("hi", timeout=120))
    _until(lambda: llm_simulator.request_count() == 1)  # answered 529: now backing off for 60 s
    started = time.monotonic()
    manager.close()
    thread.join(STALL)
    assert time.monotonic() - started < 3, "close() left a retry sleeping out its backoff"
    assert len(outcome) == 1 and isinstance(outcome[0], LLMClosedError), outcome
    assert llm_simulator.request_count() == 1  # nothing re-sent after close
