"""KeyPool on its own: leases, key choice, waits, close and fork."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from pydantic import SecretStr

from llm_sync.errors import LLMClosedError, LLMPoolExhaustedError, LLMTimeoutError
from llm_sync.keys import PooledKey
from llm_sync.pool import KeyPool
from llm_sync.providers.anthropic import AnthropicProvider


class FakeSession:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_pool(keys: int = 3, max_size: int = 3, acquire_timeout: float = 0.2, idle_timeout: float = 90.0,
              clock: Any = None) -> tuple[KeyPool, list[FakeSession]]:
    provider = AnthropicProvider("http://127.0.0.1:9")
    sessions: list[FakeSession] = []

    def factory() -> Any:
        sessions.append(FakeSession())
        return sessions[-1]

    pool = KeyPool("anthropic", [PooledKey(provider, SecretStr(f"sk-pool-{i}"), i) for i in range(keys)],
                   max_size=max_size, acquire_timeout=acquire_timeout, idle_timeout=idle_timeout,
                   clock=clock or Clock(), session_factory=factory)
    return pool, sessions


def test_without_a_chosen_key_leases_spread_over_keys_in_turn():
    pool, _ = make_pool(keys=3, max_size=3)
    first = [pool.acquire() for _ in range(3)]
    assert sorted(lease.key.client_id for lease in first) == ["anthropic-0", "anthropic-1", "anthropic-2"]
    for lease in first:
        lease.release()
    chosen = []
    for _ in range(3):
        with pool.acquire() as lease:
            chosen.append(lease.key.client_id)
    assert len(set(chosen)) == 3  # equal keys are used in turn, not the first one always


def test_a_chosen_key_is_bound_and_counted():
    pool, _ = make_pool()
    key = pool.keys[2]
    with pool.acquire(key=key) as lease:
        assert lease.key is key and key.in_use == 1
        assert pool.status()["client_statuses"][2]["in_use"] is True
    assert key.in_use == 0


def test_release_is_idempotent_and_returns_the_session():
    pool, sessions = make_pool(max_size=2)
    lease = pool.acquire()
    assert pool.available == 1
    lease.release()
    lease.release()
    assert pool.available == 2
    assert "released" in repr(lease)
    assert len(sessions) == 2  # no new Session per lease


def test_sessions_are_reused_most_recent_first():
    pool, sessions = make_pool(max_size=2)
    with pool.acquire() as lease:
        warm = lease.session
    with pool.acquire() as lease:
        assert lease.session is warm


def test_waiting_past_acquire_timeout_is_pool_exhaustion():
    pool, _ = make_pool(max_size=1, acquire_timeout=0.05)
    held = pool.acquire()
    with pytest.raises(LLMPoolExhaustedError) as caught:
        pool.acquire()
    assert isinstance(caught.value, LLMTimeoutError)  # a subclass: "waited too long"
    held.release()


def test_a_shorter_caller_timeout_is_the_callers_deadline():
    pool, _ = make_pool(max_size=1, acquire_timeout=30.0)
    held = pool.acquire()
    with pytest.raises(LLMTimeoutError) as caught:
        pool.acquire(timeout=0.05)
    assert not isinstance(caught.value, LLMPoolExhaustedError)
    assert caught.value.deadline_passed and caught.value.kind == "deadline" and not caught.value.sent
    held.release()


def test_a_waiter_gets_a_released_lease():
    pool, _ = make_pool(max_size=1, acquire_timeout=5.0)
    held = pool.acquire()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    while pool.waiting == 0:
        threading.Event().wait(0.001)
    held.release()
    waiter.join(5)
    assert got and got[0].session is held.session
    got[0].release()


def test_close_wakes_waiters_and_refuses_new_leases():
    pool, sessions = make_pool(max_size=1, acquire_timeout=30.0)
    held = pool.acquire()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.acquire()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for thread in waiters:
        thread.start()
    while pool.waiting < 3:
        threading.Event().wait(0.001)
    pool.close()
    for thread in waiters:
        thread.join(5)
    assert len(errors) == 3 and all(isinstance(e, LLMClosedError) for e in errors)
    with pytest.raises(LLMClosedError):
        pool.acquire()
    held.release()  # comes back after close: its Session is closed, not pooled
    assert held.session.closed == 1
    assert "closed" in repr(pool)
    pool.close()  # idempotent


def test_idle_sessions_drop_their_connections():
    clock = Clock()
    pool, _ = make_pool(max_size=1, idle_timeout=10.0, clock=clock)
    with pool.acquire() as lease:
        session = lease.session
    clock.now += 5
    with pool.acquire():
        assert session.closed == 0
    clock.now += 11
    with pool.acquire():
        assert session.closed == 1


def test_repr_shows_idle_and_waiting():
    pool, _ = make_pool(max_size=3)
    lease = pool.acquire()
    assert repr(pool) == "<KeyPool anthropic 2/3 idle, 0 waiting>"
    lease.release()


def test_after_fork_the_rebuild_happens_once_however_many_threads_call():
    pool, sessions = make_pool(max_size=2)
    pool._pid = os.getpid() + 1  # as a forked child sees a pool its parent built
    barrier = threading.Barrier(16)
    leases: list[Any] = []
    lock = threading.Lock()

    def use() -> None:
        barrier.wait()
        with pool.acquire(timeout=5.0) as lease:
            with lock:
                leases.append(lease.session)

    threads = [threading.Thread(target=use) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(leases) == 16
    assert len(sessions) == 4  # 2 at start + 2 rebuilt once, not once per thread
    assert set(map(id, leases)) <= set(map(id, sessions[2:]))


def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if condition():
            return
        deadline.wait(0.001)
    raise AssertionError("condition not reached")


def test_a_returned_lease_goes_to_the_longest_waiter_not_to_a_newcomer():
    pool, _ = make_pool(max_size=1, acquire_timeout=10.0)
    held = pool.acquire()
    got: list[Any] = []
    done = threading.Event()

    def wait() -> None:
        lease = pool.acquire()
        got.append(lease)
        done.wait(10)
        lease.release()

    waiter = threading.Thread(target=wait)
    waiter.start()
    _wait_until(lambda: pool.waiting == 1)
    held.release()
    # The releasing thread asks again at once: it must queue behind the waiter.
    with pytest.raises(LLMTimeoutError):
        pool.acquire(timeout=0.05)
    _wait_until(lambda: bool(got))
    assert got[0].session is held.session
    done.set()
    waiter.join(5)


def test_waiters_get_leases_in_the_order_they_arrived():
    pool, _ = make_pool(max_size=1, acquire_timeout=10.0)
    held = pool.acquire()
    order: list[int] = []
    release = [threading.Event() for _ in range(8)]

    def wait(index: int) -> None:
        with pool.acquire():
            order.append(index)
            release[index].wait(10)

    threads = []
    for index in range(8):  # arrive one after another, in a known order
        threads.append(threading.Thread(target=wait, args=(index,)))
        threads[-1].start()
        _wait_until(lambda: pool.waiting == index + 1)
    held.release()
    for index in range(8):  # released one by one
        _wait_until(lambda: len(order) == index + 1)
        release[index].set()
    for thread in threads:
        thread.join(5)
    assert order == list(range(8))
    assert pool.available == 1 and pool.waiting == 0


def test_close_cuts_what_leased_sessions_have_on_the_wire(monkeypatch: pytest.MonkeyPatch):
    import llm_sync.inflight as inflight

    pool, _ = make_pool(max_size=2)
    lease = pool.acquire()
    aborted: list[Any] = []
    monkeypatch.setattr(inflight, "abort", aborted.append)
    pool.close()
    assert aborted == [lease.session]  # the leased one; the idle one is simply closed
    lease.release()


def test_close_in_a_forked_child_touches_nothing_of_the_parent():
    pool, sessions = make_pool(max_size=2)
    lease = pool.acquire()
    pool._pid = os.getpid() + 1  # as a forked child sees a pool its parent built
    with pool._lock:  # a parent thread held the lock at fork time
        pool.close()  # must neither block nor close the parent's Sessions
        lease.release()
        with pytest.raises(LLMClosedError):
            pool.acquire()
    assert pool.closed and all(session.closed == 0 for session in sessions)
    assert len(sessions) == 2  # no rebuild for a closed pool


# --- a waiter cut short (Ctrl-C, SystemExit, an error) never takes a Session with it ---

def _interrupt_first_waiter(monkeypatch: pytest.MonkeyPatch, before: Any = lambda: None,
                            error: BaseException = KeyboardInterrupt()) -> None:
    """The first caller to wait in line runs ``before`` then has ``error``
    raised out of its wait, as a Ctrl-C lands; later waiters wait as usual."""
    import llm_sync.pool as pool_module

    real = pool_module._Waiter
    made: list[Any] = []

    class Interrupted(threading.Event):
        def wait(self, timeout: Any = None) -> bool:
            before()
            raise error

    def waiter() -> Any:
        made.append(real())
        if len(made) == 1:
            made[-1].event = Interrupted()
        return made[-1]

    monkeypatch.setattr(pool_module, "_Waiter", waiter)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), RuntimeError("from _bury")])
def test_a_waiter_interrupted_in_line_leaves_the_line(monkeypatch: pytest.MonkeyPatch, error: BaseException):
    pool, _ = make_pool(max_size=1, acquire_timeout=10.0)
    held = pool.acquire()
    _interrupt_first_waiter(monkeypatch, error=error)
    with pytest.raises(type(error)):
        pool.acquire()
    assert pool.waiting == 0
    held.release()  # must not go to the dead waiter
    assert pool.available == 1
    pool.acquire(timeout=0.05).release()


def test_a_session_handed_to_a_waiter_as_it_is_interrupted_goes_back(monkeypatch: pytest.MonkeyPatch):
    pool, _ = make_pool(max_size=1, acquire_timeout=10.0)
    held = pool.acquire()
    _interrupt_first_waiter(monkeypatch, before=held.release)  # handed the Session, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        pool.acquire()
    assert pool.available == 1 and pool.waiting == 0
    pool.acquire(timeout=0.05).release()


def test_a_session_handed_to_a_waiter_as_it_is_interrupted_goes_to_the_next(monkeypatch: pytest.MonkeyPatch):
    pool, _ = make_pool(max_size=1, acquire_timeout=10.0)
    held = pool.acquire()
    got: list[Any] = []
    behind = threading.Thread(target=lambda: got.append(pool.acquire()))

    def before() -> None:
        behind.start()
        _wait_until(lambda: pool.waiting == 2)  # a second caller in line behind this one
        held.release()  # goes to this (first) waiter, just as Ctrl-C lands

    _interrupt_first_waiter(monkeypatch, before=before)
    with pytest.raises(KeyboardInterrupt):
        pool.acquire()
    behind.join(10)
    assert got and got[0].session is held.session
    got[0].release()
    assert pool.available == 1 and pool.waiting == 0


def test_an_interrupt_after_the_session_is_taken_gives_it_back(monkeypatch: pytest.MonkeyPatch):
    pool, _ = make_pool(max_size=1)

    def interrupted() -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(pool, "_choose_key", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pool.acquire()
    monkeypatch.undo()
    assert pool.available == 1
    pool.acquire(timeout=0.05).release()


# --- close and lease never stop for, nor pass on, a stream finisher's failure ---

class _FailingStream:
    """Stands for a Stream whose finisher (a middleware's bug) raises."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.aborted: list[str] = []
        self.closed = 0

    def abort(self, reason: str) -> None:
        self.aborted.append(reason)
        if self.fails:
            raise RuntimeError("user data: SECRET-abort")

    def close(self) -> None:
        self.closed += 1
        if self.fails:
            raise RuntimeError("user data: SECRET-close")


def test_close_goes_on_past_a_stream_that_raises(monkeypatch: pytest.MonkeyPatch, caplog: Any):
    import logging

    import llm_sync.inflight as inflight

    pool, sessions = make_pool(max_size=2)
    lease = pool.acquire()
    aborted: list[Any] = []
    monkeypatch.setattr(inflight, "abort", aborted.append)
    streams = [_FailingStream(fails=True), _FailingStream(fails=False)]
    for stream in streams:
        lease.track(stream)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="llm_sync"):
        pool.close()  # must not raise
    assert all(stream.aborted for stream in streams)  # the second one too
    assert aborted == [lease.session]  # the leased Session is cut
    idle = [s for s in sessions if s is not lease.session]
    assert idle[0].closed == 1  # the idle one is closed
    with pytest.raises(LLMClosedError):
        pool.acquire()
    warnings = [r for r in caplog.records if r.name == "llm_sync"]
    assert warnings and all("SECRET" not in r.getMessage() for r in warnings)
    assert "RuntimeError" in warnings[0].getMessage()
    lease.release()


def test_a_stream_buried_on_an_unrelated_callers_lease_never_fails_it(caplog: Any):
    import logging

    pool, _ = make_pool(max_size=1)
    stream = _FailingStream(fails=True)
    pool._graveyard.append(stream)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="llm_sync"):
        lease = pool.acquire()  # buries the stream first: its failure is not this caller's
    assert stream.closed == 1
    lease.release()
    assert pool.available == 1
    assert any("RuntimeError" in r.getMessage() and "SECRET" not in r.getMessage()
               for r in caplog.records if r.name == "llm_sync")


def test_a_stream_tracked_after_close_is_cut_at_once():
    pool, _ = make_pool(max_size=1)
    lease = pool.acquire()
    pool.close()  # between the stream's start and its tracking
    stream = _FailingStream(fails=False)
    lease.track(stream)  # type: ignore[arg-type]
    assert len(stream.aborted) == 1 and "closed" in stream.aborted[0]
    assert len(pool._streams) == 0
    lease.release()


def test_a_stream_tracked_before_close_is_cut_by_close():
    pool, _ = make_pool(max_size=1)
    lease = pool.acquire()
    stream = _FailingStream(fails=False)
    lease.track(stream)  # type: ignore[arg-type]
    assert stream.aborted == []
    pool.close()
    assert len(stream.aborted) == 1
    lease.release()
