"""Limits shared through Redis, end to end: the real client over sockets
against the simulator, with managers standing in for worker processes (each
its own connection and limiter, as after a fork), and real forked workers.
Several managers configured with a key's full limits together stay within
them; a dead Redis fails open to a share of each limit, or closed before any
request is sent."""

from __future__ import annotations

import os
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest

from llm_sync import LLMManager, LLMRateLimitError, get_llm_manager, reset_llm_manager
from llm_sync.testing import Simulator, SimLimits
from redis_support import REDIS_URL, needs_redis

pytestmark = needs_redis

CALLS_PER_MANAGER = 12


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A simulator with a key and an organisation no other test (or
    concurrent run) uses: Redis buckets are named by them."""
    with Simulator(keys=(f"sk-sim-{uuid.uuid4().hex}",), organization_prefix=f"{uuid.uuid4().hex[:12]}-") as sim:
        # The server admits 10 requests at once and 10 a second after that.
        sim.set_limits(0, SimLimits(requests_per_minute=600, burst_seconds=1))
        yield sim


def config(sim: Simulator, backend: str, **top: Any) -> dict[str, Any]:
    return {
        "providers": {"anthropic": {
            "base_url": sim.base_url, "api_keys": list(sim.keys), "max_retries": 0,
            # Every worker is told the key's whole limit, as a new user would
            # (a little under the server's: 8 at once and 8 a second, room
            # for a loaded machine's delay between admission and arrival).
            "rate_limits": {"requests_per_minute": 480, "burst_seconds": 1},
        }},
        "pool": {"max_size": 8, "acquire_timeout": 30.0},
        "rate_limit_backend": backend,
        **top,
    }


def run_workers(managers: list[LLMManager]) -> list[Any]:
    """Every manager's calls at once, 8 threads each; outcomes in order."""
    def call(job: tuple[int, int]) -> Any:
        index, n = job
        try:
            return managers[index].get_client("anthropic").complete(f"worker {index} call {n}", max_tokens=8)
        except Exception as exc:  # an outcome to count, not a test failure
            return exc

    jobs = [(index, n) for n in range(CALLS_PER_MANAGER) for index in range(len(managers))]
    with ThreadPoolExecutor(max_workers=8 * len(managers)) as executor:
        return list(executor.map(call, jobs))


def test_three_workers_given_the_full_limit_stay_within_it_together(simulator: Simulator) -> None:
    managers = [LLMManager(config(simulator, REDIS_URL)) for _ in range(3)]
    try:
        outcomes = run_workers(managers)
        assert [type(o).__name__ for o in outcomes if isinstance(o, Exception)] == []
        stats = simulator.stats()[0]
        assert stats[429] == 0 and stats[200] == 3 * CALLS_PER_MANAGER, stats
        health = managers[0].get_status("anthropic")["rate_limit_backend"]
        assert health["backend"] == "redis" and health["mode"] == "shared" and health["healthy"]
    finally:
        for manager in managers:
            manager.close()


def test_the_same_workers_each_limiting_alone_overshoot(simulator: Simulator) -> None:
    """The contrast that shows the test above can fail: per-process limits."""
    managers = [LLMManager(config(simulator, "memory")) for _ in range(3)]
    try:
        run_workers(managers)
        assert simulator.stats()[0][429] > 0
    finally:
        for manager in managers:
            manager.close()


def test_a_dead_redis_fails_closed_before_any_request_is_sent(simulator: Simulator) -> None:
    with LLMManager(config(simulator, "redis://127.0.0.1:1/0", on_backend_error="fail_closed")) as manager:
        with pytest.raises(LLMRateLimitError) as info:
            manager.get_client("anthropic").complete("hello", max_tokens=8)
        assert info.value.local and "unreachable" in str(info.value)
        assert simulator.stats().get(0, {}).get(200, 0) == 0 and not simulator.requests
        assert manager.get_status("anthropic")["rate_limit_backend"]["healthy"] is False


def test_a_dead_redis_fails_open_to_a_share_of_each_limit(simulator: Simulator) -> None:
    with LLMManager(config(simulator, "redis://127.0.0.1:1/0", backend_processes=3)) as manager:
        response = manager.get_client("anthropic").complete("hello", max_tokens=8)
        assert response.content
        status = manager.get_status("anthropic")
        assert status["rate_limit_backend"]["mode"] == "local"
        assert status["client_statuses"][0]["rate_limit_status"]["limits"]["requests_per_minute"] == 160.0  # a third of 480


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_forked_workers_share_the_parents_redis_limits(simulator: Simulator) -> None:
    reset_llm_manager()
    parent = get_llm_manager(config(simulator, REDIS_URL))
    parent.get_client("anthropic").complete("parent first", max_tokens=8)  # the parent's connection is open
    children = []
    for worker in range(3):
        pid = os.fork()
        if pid == 0:  # a worker: its own manager and Redis connection, the same buckets
            code = 1
            try:
                client = get_llm_manager().get_client("anthropic")
                with ThreadPoolExecutor(max_workers=8) as executor:
                    list(executor.map(lambda n: client.complete(f"w{worker} {n}", max_tokens=8), range(10)))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitpid(pid, 0)[1] for pid in children]
    reset_llm_manager()
    assert codes == [0, 0, 0]
    stats = simulator.stats()[0]
    assert stats[429] == 0 and stats[200] == 31, stats
