"""WorkerThreads: close from one of its own threads (a task, or a Future's
done-callback) must not try to join that thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from llm_sync.client import WorkerThreads
from llm_sync.errors import LLMClosedError


def test_close_from_a_done_callback_in_a_worker_thread():
    workers = WorkerThreads(2, "test")
    go = threading.Event()
    called = threading.Event()
    outcome: list[Any] = []
    threads: list[str] = []

    def on_done(future: Any) -> None:
        threads.append(threading.current_thread().name)
        try:
            outcome.append(workers.close())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)
        called.set()

    future = workers.submit(go.wait, 10)
    future.add_done_callback(on_done)  # not done yet: it runs in the worker
    go.set()
    assert called.wait(10)
    assert threads[0].startswith("llm-sync-test")
    assert outcome == [None]
    with pytest.raises(LLMClosedError):
        workers.submit(lambda: None)


def test_close_from_a_task_lets_the_other_tasks_finish():
    workers = WorkerThreads(2, "test")
    go = threading.Event()
    other = workers.submit(go.wait, 10)  # occupies the other thread
    closing = workers.submit(workers.close)
    assert closing.result(10) is None  # did not raise "cannot join current thread"
    go.set()
    assert other.result(10) is True


def test_close_from_outside_still_waits_for_what_was_submitted():
    workers = WorkerThreads(1, "test")
    go = threading.Event()
    task = workers.submit(go.wait, 10)
    closer = threading.Thread(target=workers.close)
    closer.start()
    go.set()
    closer.join(10)
    assert not closer.is_alive() and task.done()
