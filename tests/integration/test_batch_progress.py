"""complete_batch(progress=...) and Ctrl-C over real sockets: a tqdm bar
with the ``[progress]`` extra, a plain stderr line without it; an interrupt
cancels what is pending, cuts what is in flight (the Sessions stay usable)
and leaves no batch thread behind."""

from __future__ import annotations

import io
import sys
import threading
import time
from typing import Any, Callable

import pytest

import llm_sync.client as client_module
from llm_sync import progress as progress_module
from llm_sync.client import BATCH_THREAD_PREFIX

STALL = 30.0


class _Gate:
    """A reply function that holds every request until opened."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.count = 0
        self.open = threading.Event()

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.count += 1
        self.arrived.release()
        self.open.wait(STALL)
        return "late"


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(BATCH_THREAD_PREFIX)]


def _interrupt_after(arrivals: "threading.Semaphore", count: int) -> Callable[..., Any]:
    """A stand-in for complete_batch's wait: once ``count`` requests reached
    the server, raise KeyboardInterrupt in the calling thread, as Ctrl-C
    would (deterministic: no signal, no sleep)."""
    real_wait = client_module._wait
    state = {"fired": False}

    def wait(futures: Any, timeout: Any = None, return_when: Any = "ALL_COMPLETED") -> Any:
        if not state["fired"]:
            state["fired"] = True
            for _ in range(count):
                assert arrivals.acquire(timeout=10), "the requests never reached the server"
            raise KeyboardInterrupt
        return real_wait(futures, timeout=timeout, return_when=return_when)

    return wait


def test_ctrl_c_cancels_pending_items_cuts_those_in_flight_and_joins_the_threads(
        make_manager: Any, llm_simulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = _Gate()
    llm_simulator.set_reply(gate)
    manager = make_manager(max_size=2, timeout={"connect": 5, "read": STALL})
    client = manager.get_client("anthropic")
    monkeypatch.setattr(client_module, "_wait", _interrupt_after(gate.arrived, 2))
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.complete_batch([f"item {i}" for i in range(20)])
        elapsed = time.monotonic() - started
        assert _batch_threads() == []  # joined before the interrupt was raised
    finally:
        gate.open.set()
        llm_simulator.set_reply(None)
    assert elapsed < 5, f"the batch held the Ctrl-C for {elapsed:.1f}s"  # the gate holds for 30 s
    assert gate.count == 2  # the two in flight; nothing pending was sent
    pool = manager.pool("anthropic")
    assert pool.available == 2 and pool.waiting == 0  # both Sessions came back
    # ... usable: the cut touched only the batch's own calls
    assert client.complete("after", timeout=5).content == "Simulated reply to: after"
    assert llm_simulator.request_count() == 3


def test_a_later_batch_is_not_cancelled_by_an_earlier_interrupt(make_manager: Any, monkeypatch: pytest.MonkeyPatch,
                                                               llm_simulator: Any) -> None:
    gate = _Gate()
    llm_simulator.set_reply(gate)
    client = make_manager(max_size=1).get_client("anthropic")
    monkeypatch.setattr(client_module, "_wait", _interrupt_after(gate.arrived, 1))
    try:
        with pytest.raises(KeyboardInterrupt):
            client.complete_batch(["a", "b", "c"])
    finally:
        gate.open.set()
        llm_simulator.set_reply(None)
    monkeypatch.undo()
    results = client.complete_batch(["d", "e"], return_exceptions=True)
    assert [r.content for r in results] == ["Simulated reply to: d", "Simulated reply to: e"]
    assert _batch_threads() == []


def test_progress_true_draws_a_tqdm_bar_when_tqdm_is_installed(make_manager: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm", reason="tqdm is the [progress] extra")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    results = make_manager(max_size=2).get_client("anthropic").complete_batch(
        [f"q{i}" for i in range(5)], progress=True)
    assert len(results) == 5
    assert "5/5" in err.getvalue() and "anthropic batch" in err.getvalue()
    assert "call/s" in err.getvalue() or "s/call" in err.getvalue()  # tqdm's rate, not the plain line


def test_progress_true_without_tqdm_writes_one_plain_line(make_manager: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # importing tqdm now raises ImportError
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    make_manager(max_size=2).get_client("anthropic").complete_batch([f"q{i}" for i in range(5)], progress=True)
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anthropic batch done: 5/5 in "), lines


def test_progress_false_writes_nothing(make_manager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    make_manager(max_size=2).get_client("anthropic").complete_batch(["a", "b"])
    assert err.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_plain_line_is_redrawn_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = _Terminal()
    bar = progress_module.reporter(True, 4, desc="batch", out=out)
    for done in range(1, 5):
        bar.update(done)
    bar.close()
    bar.close()  # idempotent
    text = out.getvalue()
    assert text.count("\r") == 4 and "\rbatch [" + "#" * 30 + "] 4/4" in text
    assert text.endswith("batch done: 4/4 in 0.0s\n")


def test_an_interrupted_plain_line_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = io.StringIO()
    bar = progress_module.reporter(True, 10, desc="batch", out=out)
    bar.update(3)
    bar.close(interrupted=True)
    assert out.getvalue().startswith("batch interrupted at 3/10 in ")


def test_ctrl_c_wakes_batch_calls_asleep_in_a_retry_backoff(make_manager: Any, llm_simulator: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import llm_sync.manager as manager_module

    asleep = threading.Semaphore(0)
    real_nap = manager_module.nap

    def noting_nap(seconds: float, closing: threading.Event) -> None:
        asleep.release()
        real_nap(seconds, closing)

    monkeypatch.setattr(manager_module, "nap", noting_nap)
    llm_simulator.inject(503, count=2, headers={"retry-after": "20"})
    client = make_manager(max_size=2, max_retries=3, retry_budget=120).get_client("anthropic")
    monkeypatch.setattr(client_module, "_wait", _interrupt_after(asleep, 2))  # both calls backing off 20 s
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.complete_batch(["a", "b"])
    elapsed = time.monotonic() - started
    assert _batch_threads() == []  # woken and joined, not left asleep
    assert elapsed < 5, f"the batch held the Ctrl-C for {elapsed:.1f}s"
    assert llm_simulator.request_count() == 2  # woken calls did not send again


def test_ctrl_c_ends_batch_calls_waiting_for_rate_limit_capacity(
        make_manager: Any, llm_simulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = _Gate()
    llm_simulator.set_reply(gate)
    # One key, one call every 5 s: the batch's second call waits in the
    # limiter's line (within the pool's 10 s acquire_timeout) while the
    # first is held at the server.
    manager = make_manager(api_keys=[llm_simulator.keys[0]], max_size=2,
                           rate_limits={"requests_per_minute": 12, "burst_seconds": 5},
                           timeout={"connect": 5, "read": STALL})
    client = manager.get_client("anthropic")
    limiter = manager.pool("anthropic").limiter
    monkeypatch.setattr(client_module, "_wait", _interrupt_after(gate.arrived, 1))
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.complete_batch(["first", "second", "third"], timeout=120)
        elapsed = time.monotonic() - started
        assert _batch_threads() == []  # the waiting call ended too
    finally:
        gate.open.set()
        llm_simulator.set_reply(None)
    assert elapsed < 5, f"the batch held the Ctrl-C for {elapsed:.1f}s"
    assert gate.count == 1 and limiter.waiting == 0
