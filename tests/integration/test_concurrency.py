"""Many threads, several keys, one pool: every answer right, every lease
returned, connections reused, no urllib3 pool warnings."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_sync import LLMPoolExhaustedError, Message, MessageRole


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_32_threads_4_keys_all_correct(make_manager, llm_simulator, caplog, provider):
    caplog.set_level(logging.DEBUG, logger="urllib3")
    manager = make_manager(max_size=8)
    client = manager.get_client(provider)
    barrier = threading.Barrier(32)

    def worker(thread: int) -> list[tuple[str, str, str]]:
        barrier.wait()
        out = []
        for call in range(4):
            prompt = f"thread {thread} call {call}"
            response = client.complete([Message(MessageRole.USER, prompt)], max_tokens=64)
            out.append((prompt, response.content, response.client_id))
        return out

    with ThreadPoolExecutor(max_workers=32) as executor:
        results = [r for rs in executor.map(worker, range(32)) for r in rs]

    assert len(results) == 128
    for prompt, content, _ in results:
        assert content == f"Simulated reply to: {prompt}"
    per_key = Counter(client_id for _, _, client_id in results)
    assert set(per_key) == {f"{provider}-{i}" for i in range(4)}
    assert min(per_key.values()) >= 16, per_key  # spread, not piled on one key
    status = manager.get_status(provider)
    assert status["available_clients"] == status["total_clients"] == 8
    assert status["in_flight"] == 0 and status["queue_size"] == 0
    assert sum(s["total_requests"] for s in status["client_statuses"]) == 128
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    # keep-alive: each of the 8 leased sessions holds one connection
    assert llm_simulator.connection_count <= 8


def test_pool_exhausted_after_acquire_timeout(make_manager):
    manager = make_manager(max_size=2)
    pool = manager.pool("anthropic")
    pool.acquire_timeout = 0.05
    leases = [pool.acquire(), pool.acquire()]
    assert repr(pool) == "<KeyPool anthropic 0/2 idle, 0 waiting>"
    with pytest.raises(LLMPoolExhaustedError, match="within 0.1s|within 0.0s"):
        manager.get_client("anthropic").complete("hi")
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert manager.get_status("anthropic")["available_clients"] == 2


def test_waiters_show_in_queue_size_and_are_served(make_manager):
    manager = make_manager(max_size=1)
    pool = manager.pool("anthropic")
    held = pool.acquire()
    client = manager.get_client("anthropic")
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(client.complete("hi").content)) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = threading.Event()
    for _ in range(500):  # wait (bounded) until all three are queued
        if manager.get_status("anthropic")["queue_size"] == 3:
            break
        deadline.wait(0.01)
    assert manager.get_status("anthropic")["queue_size"] == 3
    held.release()
    for thread in threads:
        thread.join(10)
    assert results == ["Simulated reply to: hi"] * 3
    assert manager.get_status("anthropic")["queue_size"] == 0


def test_closed_manager_refuses_and_wakes_waiters(make_manager):
    from llm_sync import LLMError

    manager = make_manager(max_size=1)
    pool = manager.pool("anthropic")
    held = pool.acquire()
    errors: list[BaseException] = []

    def wait_for_lease() -> None:
        try:
            pool.acquire(timeout=5)
        except LLMError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_lease)
    waiter.start()
    for _ in range(500):
        if pool.waiting == 1:
            break
        threading.Event().wait(0.01)
    manager.close()
    manager.close()  # idempotent
    waiter.join(5)
    assert errors and "closed" in str(errors[0])
    held.release()
    with pytest.raises(LLMError, match="closed"):
        manager.get_client("anthropic")
