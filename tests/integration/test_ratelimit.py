"""Token-accurate rate limiting against the simulator, in real time: callers
wait instead of failing, keys are used in proportion to their limits, a
deadline shorter than the wait fails fast, oversize requests never leave the
process, a 429 pauses its key, limits are learned from headers, and
get_status reports real numbers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest

from llm_sync import LLMManager, LLMRateLimitError, LLMValidationError
from llm_sync.testing import SimLimits

PROVIDERS = ["anthropic", "openai"]


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def _run_parallel(client: Any, prompts: list[str], workers: int, **kwargs: Any) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as executor:
        return list(executor.map(lambda p: client.complete(p, **kwargs), prompts))


def _rate_status(manager: LLMManager, provider: str, index: int = 0) -> dict[str, Any]:
    return manager.get_status(provider)["client_statuses"][index]["rate_limit_status"]


# --- callers wait instead of failing ------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_callers_wait_for_capacity_and_the_server_never_says_429(llm_simulator, make_manager, provider):
    # The server admits 10 requests at once and 10 per second after that;
    # the client is configured a little stricter: 9 at once, 9 per second.
    llm_simulator.set_limits(0, SimLimits(requests_per_minute=600, burst_seconds=1))
    manager = make_manager(api_keys=[llm_simulator.keys[0]],
                           rate_limits={"requests_per_minute": 540, "burst_seconds": 1})
    client = manager.get_client(provider)
    prompts = [f"wait call {i}" for i in range(18)]
    started = time.monotonic()
    responses = _run_parallel(client, prompts, workers=18, max_tokens=16)
    elapsed = time.monotonic() - started
    assert [r.content for r in responses] == [f"Simulated reply to: {p}" for p in prompts]
    stats = llm_simulator.stats()[0]
    assert stats[429] == 0, stats
    assert stats[200] == 18
    assert elapsed >= 0.8, f"18 calls at 9/s after a burst of 9 cannot finish in {elapsed:.2f}s"
    assert manager.get_status(provider)["queue_size"] == 0


def test_callers_wait_for_output_tokens_and_the_server_never_says_429(llm_simulator, make_manager):
    # Anthropic charges max_tokens of output up front: the server holds 100,
    # the client is told 90; every call asks for 30.
    llm_simulator.set_limits(0, SimLimits(output_tokens_per_minute=6000, burst_seconds=1))
    manager = make_manager(api_keys=[llm_simulator.keys[0]],
                           rate_limits={"output_tokens_per_minute": 5400, "burst_seconds": 1})
    client = manager.get_client("anthropic")
    prompts = [f"token call {i}" for i in range(24)]
    responses = _run_parallel(client, prompts, workers=12, max_tokens=30)
    assert [r.content for r in responses] == [f"Simulated reply to: {p}" for p in prompts]
    stats = llm_simulator.stats()[0]
    assert stats[429] == 0, stats
    assert stats[200] == 24


def test_queue_size_counts_callers_waiting_for_capacity(llm_simulator, make_manager):
    manager = make_manager(api_keys=[llm_simulator.keys[0]],
                           rate_limits={"requests_per_minute": 600, "burst_seconds": 0.3})  # 3 at once, 10/s
    client = manager.get_client("anthropic")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(manager.get_status("anthropic")["queue_size"])
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        responses = _run_parallel(client, [f"queued {i}" for i in range(10)], workers=10, max_tokens=8)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert len(responses) == 10
    assert max(seen) >= 3, f"callers waited for capacity but queue_size peaked at {max(seen)}"
    assert manager.get_status("anthropic")["queue_size"] == 0


# --- proportional key use ----------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_keys_are_used_in_proportion_to_their_limits(llm_simulator, make_manager, provider):
    manager = make_manager(
        api_keys=list(llm_simulator.keys[:2]),
        rate_limits=[{"requests_per_minute": 600, "burst_seconds": 1},    # 10 at once, 10/s
                     {"requests_per_minute": 1800, "burst_seconds": 1}],  # 30 at once, 30/s
    )
    client = manager.get_client(provider)
    responses = _run_parallel(client, [f"share {i}" for i in range(80)], workers=16, max_tokens=8)
    per_key = Counter(r.client_id for r in responses)
    small, large = per_key[f"{provider}-0"], per_key[f"{provider}-1"]
    assert small + large == 80
    assert small > 0 and 2.5 <= large / small <= 3.5, per_key
    stats = llm_simulator.stats()
    assert stats[0][200] == small and stats[1][200] == large


# --- deadlines ----------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_timeout_shorter_than_the_wait_fails_fast_with_retry_after(llm_simulator, make_manager, provider):
    manager = make_manager(api_keys=[llm_simulator.keys[0]],
                           rate_limits={"requests_per_minute": 60, "burst_seconds": 1})  # 1 at once, 1/s
    client = manager.get_client(provider)
    client.complete("first", max_tokens=8)
    started = time.monotonic()
    with pytest.raises(LLMRateLimitError) as info:
        client.complete("second", max_tokens=8, timeout=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 0.25, f"should fail at once, not sleep ({elapsed:.2f}s)"
    assert info.value.retry_after is not None and 0.5 < info.value.retry_after <= 1.0
    assert llm_simulator.request_count() == 1  # the second call never went out


def test_acquire_timeout_bounds_the_wait_too(llm_simulator, sim_config):
    config = sim_config(api_keys=[llm_simulator.keys[0]],
                        rate_limits={"requests_per_minute": 60, "burst_seconds": 1})
    config["pool"]["acquire_timeout"] = 0.3
    with LLMManager(config) as manager:
        client = manager.get_client("anthropic")
        client.complete("first", max_tokens=8)
        started = time.monotonic()
        with pytest.raises(LLMRateLimitError) as info:
            client.complete("second", max_tokens=8)
        assert time.monotonic() - started < 0.25
        assert info.value.retry_after and info.value.retry_after > 0
    assert llm_simulator.request_count() == 1


# --- oversize -----------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_oversize_request_is_refused_without_any_http(llm_simulator, make_manager, provider):
    manager = make_manager(api_keys=[llm_simulator.keys[0]],
                           rate_limits={"input_tokens_per_minute": 100, "output_tokens_per_minute": 500,
                                        "tokens_per_minute": 10_000})
    client = manager.get_client(provider)
    started = time.monotonic()
    with pytest.raises(LLMValidationError, match="input tokens"):
        client.complete("word " * 400, max_tokens=8)  # ~500 tokens estimated
    with pytest.raises(LLMValidationError, match="output tokens"):
        client.complete("short", max_tokens=501)
    assert time.monotonic() - started < 1.0
    assert llm_simulator.requests == []
    status = manager.get_status(provider)
    assert status["queue_size"] == 0 and status["in_flight"] == 0
    assert status["client_statuses"][0]["rate_limit_status"]["input_tokens_remaining"] == 100


# --- a server 429 pauses its key; the call moves on -----------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_429_pauses_its_key_and_the_call_succeeds_on_another(llm_simulator, make_manager, provider):
    # key 0 has the most headroom, so the first call goes there
    manager = make_manager(api_keys=list(llm_simulator.keys[:2]),
                           rate_limits=[{"requests_per_minute": 1200}, {"requests_per_minute": 600}])
    llm_simulator.inject(429, key_index=0, headers={"retry-after": "5"})
    client = manager.get_client(provider)
    started = time.monotonic()
    response = client.complete("hello", max_tokens=8)
    assert time.monotonic() - started < 1.0  # moved on, did not sleep out the pause
    assert response.client_id == f"{provider}-1"
    stats = llm_simulator.stats()
    assert stats[0][429] == 1 and stats[0][200] == 0
    assert stats[1][200] == 1
    statuses = manager.get_status(provider)["client_statuses"]
    assert 4.0 < statuses[0]["rate_limit_status"]["paused_for"] <= 5.0
    assert statuses[0]["failed_requests"] == 0  # requeued: an attempt, not a failed call
    assert statuses[0]["errors"] == {"LLMRateLimitError": 1}
    assert statuses[1]["rate_limit_status"]["paused_for"] == 0.0
    # the refused call was refunded: only the successful one is charged on key 1
    assert statuses[0]["rate_limit_status"]["requests_remaining"] == 1200
    # while paused, key 0 gets nothing
    assert client.complete("again", max_tokens=8).client_id == f"{provider}-1"
    assert llm_simulator.request_count(key_index=0) == 1


@pytest.mark.parametrize("max_retries, expected_requests", [(0, 1), (1, 2)])
def test_max_retries_bounds_the_requeues_after_429(llm_simulator, make_manager, max_retries, expected_requests):
    manager = make_manager(api_keys=list(llm_simulator.keys[:3]), max_retries=max_retries,
                           rate_limits={"requests_per_minute": 600})
    llm_simulator.inject(429, count=10, headers={"retry-after": "3"})
    client = manager.get_client("anthropic")
    started = time.monotonic()
    with pytest.raises(LLMRateLimitError) as info:
        client.complete("hello", max_tokens=8)
    assert time.monotonic() - started < 1.0
    assert info.value.status_code == 429
    assert llm_simulator.request_count() == expected_requests
    paused = [s["rate_limit_status"]["paused_for"] > 2.0 for s in manager.get_status("anthropic")["client_statuses"]]
    assert sum(paused) == expected_requests  # every refusing key is paused, each was a different key


def test_a_server_stricter_than_the_config_is_learned_and_every_call_succeeds(llm_simulator, make_manager):
    # The server is far stricter than the (unconfigured) client: 2 at once,
    # 2/s. Its headers teach the limit; its 429s (if a racing call gets one
    # before the limit is known) pause the key and the call is requeued.
    llm_simulator.set_limits(0, SimLimits(requests_per_minute=120, burst_seconds=1))
    manager = make_manager(api_keys=[llm_simulator.keys[0]], max_retries=4)
    client = manager.get_client("anthropic")
    responses = _run_parallel(client, [f"strict {i}" for i in range(6)], workers=6, max_tokens=8)
    assert len(responses) == 6
    status = _rate_status(manager, "anthropic")
    assert status["limits"]["requests_per_minute"] == 120.0
    assert llm_simulator.stats()[0][200] == 6


# --- limits learned from headers ------------------------------------------------------------
@pytest.mark.parametrize("provider, expected", [
    ("anthropic", {"requests_per_minute": 100.0, "input_tokens_per_minute": 50_000.0,
                   "output_tokens_per_minute": 10_000.0}),
    ("openai", {"requests_per_minute": 100.0, "tokens_per_minute": 50_000.0}),
])
def test_limits_are_learned_from_headers_when_none_are_configured(llm_simulator, make_manager, provider, expected):
    llm_simulator.set_limits(0, SimLimits(requests_per_minute=100, input_tokens_per_minute=50_000,
                                          output_tokens_per_minute=10_000))
    manager = make_manager(api_keys=[llm_simulator.keys[0]])
    assert _rate_status(manager, provider) is None
    client = manager.get_client(provider)
    client.complete("learn my limits", max_tokens=20)
    status = _rate_status(manager, provider)
    assert status is not None
    assert status["limits"] == expected
    assert status["learned"] == sorted(expected)
    assert status["requests_remaining"] <= 99


# --- status numbers ----------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_status_reports_real_numbers_that_go_down(llm_simulator, make_manager, provider):
    limits = {"requests_per_minute": 60, "input_tokens_per_minute": 600, "output_tokens_per_minute": 600,
              "tokens_per_minute": 1200}
    manager = make_manager(api_keys=[llm_simulator.keys[0]], rate_limits=limits)
    client = manager.get_client(provider)
    before = _rate_status(manager, provider)
    assert before["requests_remaining"] == 60
    assert before["input_tokens_remaining"] == 600
    assert before["output_tokens_remaining"] == 600
    assert before["tokens_remaining"] == 600
    assert before["limits"] == {k: float(v) for k, v in limits.items()}
    snapshots = [before]
    for i in range(3):
        client.complete("count these words please " * 10 + str(i), max_tokens=40)
        snapshots.append(_rate_status(manager, provider))
    now = time.time()
    for earlier, later in zip(snapshots, snapshots[1:]):
        assert later["requests_remaining"] < earlier["requests_remaining"]
        assert later["input_tokens_remaining"] < earlier["input_tokens_remaining"]
        assert later["output_tokens_remaining"] < earlier["output_tokens_remaining"]
        assert later["tokens_remaining"] < earlier["tokens_remaining"]
    last = snapshots[-1]
    assert last["requests_remaining"] == 57
    for name in ("requests_remaining", "input_tokens_remaining", "output_tokens_remaining", "tokens_remaining"):
        assert isinstance(last[name], int) and last[name] >= 0
    # the smallest token figure: the combined bucket can only make it smaller
    assert last["tokens_remaining"] <= min(last["input_tokens_remaining"], last["output_tokens_remaining"])
    assert isinstance(last["reset_at"], float)
    assert now < last["reset_at"] <= now + 61
    assert last["paused_for"] == 0.0
