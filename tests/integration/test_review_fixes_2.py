"""Defects found by review of the pipeline and its hardening, each pinned."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

from llm_sync import LLMManager
from llm_sync.call import Requeue
from llm_sync.errors import LLMConnectionError, LLMError, LLMRateLimitError, LLMValidationError
from llm_sync.middleware.base import Middleware


def _settled(manager: LLMManager, endpoint: str = "anthropic") -> None:
    pool = manager.pool(endpoint)
    assert pool.available == pool.max_size
    for key in pool.limiter.keys:
        assert key.in_flight == 0, key
        assert all(abs(v) < 1e-6 for v in key.outstanding.values()), key.outstanding
        assert all(abs(v) < 1e-6 for v in key.unsent.values()), key.unsent


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_retries_against_an_unreachable_server_never_deadlock_nor_blame_a_rate_limit():
    """A re-send never waits for capacity while holding a lease (another
    caller may hold the capacity and wait for the lease). Against a closed
    port every call fails as a connection error, never as a local limit,
    and quickly (was: a deadlock until acquire_timeout)."""
    config = {"providers": {"anthropic": {"api_keys": ["sk-unreach-1"], "base_url": f"http://127.0.0.1:{_closed_port()}",
                                          "max_retries": 3, "retry_budget": 5}},
              "pool": {"max_size": 2, "acquire_timeout": 10}}
    errors: list[BaseException] = []
    lock = threading.Lock()
    with LLMManager(config) as manager:
        manager.get_client("anthropic").middleware_sleep = None
        for key in manager.pool("anthropic").clients:  # no backoff sleeps: the point is the ordering
            key.middleware_chain.get_middleware(__import__("llm_sync").RetryMiddleware).sleep = lambda s: None
        client = manager.get_client("anthropic")

        def call() -> None:
            try:
                client.complete("hi", timeout=8)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                with lock:
                    errors.append(exc)

        started = time.monotonic()
        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        elapsed = time.monotonic() - started
        assert len(errors) == 6
        assert all(isinstance(e, LLMConnectionError) for e in errors), [type(e).__name__ for e in errors]
        assert elapsed < 6  # no call waited out acquire_timeout or its deadline
        _settled(manager)


def test_a_retry_that_its_key_cannot_take_goes_to_another_key(llm_simulator: Any, sim_config: Any):
    """A re-send on a key out of capacity is requeued to a free key at once
    rather than waiting (or failing as a local rate limit)."""
    config = sim_config(max_retries=2, rate_limits=[{"requests_per_minute": 1}, {"requests_per_minute": 600}])
    config["providers"] = {"anthropic": config["providers"]["anthropic"]}
    config["providers"]["anthropic"]["api_keys"] = list(llm_simulator.keys[:2])
    with LLMManager(config) as manager:
        for key in manager.pool("anthropic").clients:
            key.middleware_chain.get_middleware(__import__("llm_sync").RetryMiddleware).sleep = lambda s: None
        client = manager.get_client("anthropic")
        llm_simulator.inject(503, key_index=0)
        # key 0 has more headroom fraction at first; force the first send onto it
        response = None
        for _ in range(3):
            response = client.complete("hi", timeout=5)
        assert response is not None and response.content
        _settled(manager)


def test_validation_errors_from_the_transport_refund_and_keep_probing():
    """A failure raised before anything is sent (an unsendable header at
    send time) refunds the reservation and does not end probing."""
    from llm_sync.pipeline import Sends

    class Limiter:
        def __init__(self) -> None:
            self.calls: list[tuple[str, Any]] = []

        def refund(self, reservation: Any, headers: Any = None, **kw: Any) -> None:
            self.calls.append(("refund", kw))

        def release(self, reservation: Any, headers: Any = None) -> None:
            self.calls.append(("release", None))

    class Reservation:
        sent_at = 1.0
        done = False

    class Pipe:
        limiter = Limiter()

    sends = Sends.__new__(Sends)
    sends._pipeline = Pipe()  # type: ignore[assignment]
    sends.fail(Reservation(), LLMValidationError("extra_headers: bad"))  # type: ignore[arg-type]
    assert Pipe.limiter.calls == [("refund", {"answered": False})]


def test_requeue_cannot_be_swallowed_by_except_exception(llm_simulator: Any, make_manager: Any):
    """User middleware written as ``except Exception`` never swallows the
    pipeline's requeue: the 429 is still requeued and answered."""
    class Fallback(Middleware):
        def handle(self, request: Any, context: Any, call_next: Any) -> Any:
            try:
                return call_next(request)
            except Exception:  # noqa: BLE001 - the point of the test
                raise AssertionError("a requeue reached user code as an Exception")

    assert not issubclass(Requeue, Exception)
    manager = make_manager(max_retries=2)
    manager.add_middleware(Fallback(), "anthropic")
    llm_simulator.inject(429, headers={"retry-after": "0"})
    assert manager.get_client("anthropic").complete("hi", timeout=5).content
    _settled(manager)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_rebuilds_before_touching_the_limiter(llm_simulator: Any, make_manager: Any):
    """A manager object carried into a forked child: its first call must
    not reserve on the parent's limiter state (was: counters left at -1)."""
    manager = make_manager()
    client = manager.get_client("anthropic")
    client.complete("parent")
    stream = client.stream("a stream open at fork time", max_tokens=50)
    next(iter(stream))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            client.complete("child", timeout=5)
            client.complete("child2", timeout=5)
            _settled(manager)
            code = 0
        except BaseException:  # noqa: BLE001
            code = 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        ready = b""
        deadline = time.monotonic() + 20
        while not ready and time.monotonic() < deadline:
            ready = os.read(read, 1)
        assert ready == b"\x00", f"child reported {ready!r}"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
        stream.close()
    _settled(manager)


def test_the_wait_for_capacity_does_not_eat_the_wait_for_a_lease(llm_simulator: Any, sim_config: Any):
    """A call that waited in line for capacity still gets its own wait for a
    lease (was: an instant LLMPoolExhaustedError 'within 0.0s')."""
    config = sim_config(rate_limits={"requests_per_minute": 120, "burst_seconds": 0.5})
    config["providers"] = {"anthropic": config["providers"]["anthropic"]}
    config["providers"]["anthropic"]["api_keys"] = [llm_simulator.keys[0]]
    config["pool"] = {"max_size": 1, "acquire_timeout": 1.5}  # the second call needs ~1 s of capacity: margin for a loaded machine
    with LLMManager(config) as manager:
        client = manager.get_client("anthropic")
        client.complete("warm")
        results: list[Any] = []

        def call() -> None:
            try:
                results.append(client.complete("hi"))
            except LLMError as exc:
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert all(not isinstance(r, LLMError) for r in results), results
        _settled(manager)
