"""Rate-limit scopes over real sockets: each model runs at its own
server-side rate on one key (learned, nothing configured), a 429 for one
model leaves the others alone, keys of one group share the group's limit,
and get_status shows each model class's buckets."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest

from llm_sync import LLMManager, LLMRateLimitError
from llm_sync.testing import SimLimits, Simulator


@pytest.fixture
def managers() -> Iterator[list[LLMManager]]:
    made: list[LLMManager] = []
    yield made
    for manager in made:
        manager.close()


def _manager(made: list[LLMManager], sim: Simulator, provider: str, **entry: Any) -> LLMManager:
    base_url = sim.base_url if provider == "anthropic" else sim.base_url + "/v1"
    entry.setdefault("api_keys", list(sim.keys))
    manager = LLMManager({"providers": {provider: {"base_url": base_url, **entry}},
                          "pool": {"max_size": 16, "acquire_timeout": 10.0}})
    made.append(manager)
    return manager


def _statuses(sim: Simulator) -> list[int]:
    return [item.status for item in sim.requests if item.status is not None]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_two_models_on_one_key_each_run_at_their_own_learned_rate(managers, provider):
    with Simulator(keys=("k0",), per_model=True) as sim:
        sim.set_limits(0, SimLimits(requests_per_minute=5), models=["slow-*"])
        sim.set_limits(0, SimLimits(requests_per_minute=4000))
        manager = _manager(managers, sim, provider)
        client = manager.get_client(provider)
        for _ in range(2):
            client.complete("slow", model="slow-1", max_tokens=8)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: client.complete(f"fast {i}", model="fast-1", max_tokens=8, timeout=3),
                                    range(24)))
        assert len(replies) == 24
        assert time.monotonic() - started < 2.5  # the slow model's 5/min holds up nothing
        assert 429 not in _statuses(sim)
        models = manager.get_status(provider)["client_statuses"][0]["rate_limit_status"]["models"]
        assert models["slow-1"]["limits"]["requests_per_minute"] == 5
        assert models["fast-1"]["limits"]["requests_per_minute"] == 4000
        assert "requests_per_minute" in models["fast-1"]["learned"]
        # The slow model's bucket is spent (3 of 5 left, less what the others
        # take): its own calls wait, with a retry_after of its refill.
        client.complete("slow", model="slow-1", max_tokens=8)
        client.complete("slow", model="slow-1", max_tokens=8)
        client.complete("slow", model="slow-1", max_tokens=8)
        with pytest.raises(LLMRateLimitError) as caught:
            client.complete("slow", model="slow-1", max_tokens=8, timeout=1)
        assert caught.value.retry_after is not None and caught.value.retry_after > 5
        assert 429 not in _statuses(sim)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_429_for_one_model_does_not_pause_the_other(managers, provider):
    with Simulator(keys=("k0",), per_model=True) as sim:
        sim.set_limits(0, SimLimits(requests_per_minute=2), models=["slow-*"])
        sim.set_limits(0, SimLimits(requests_per_minute=4000))
        other = _manager(managers, sim, provider).get_client(provider)
        for _ in range(2):  # another user of the key spends the slow model's bucket
            other.complete("slow", model="slow-1", max_tokens=8)
        manager = _manager(managers, sim, provider, max_retries=0)
        client = manager.get_client(provider)
        with pytest.raises(LLMRateLimitError):
            client.complete("slow", model="slow-1", max_tokens=8, timeout=2)
        assert _statuses(sim).count(429) == 1
        status = manager.get_status(provider)["client_statuses"][0]
        assert status["rate_limit_status"]["models"]["slow-1"]["paused_for"] > 5
        started = time.monotonic()
        for i in range(5):
            client.complete(f"fast {i}", model="fast-1", max_tokens=8, timeout=2)
        assert time.monotonic() - started < 1.5
        status = manager.get_status(provider)["client_statuses"][0]
        assert status["rate_limit_status"]["models"]["fast-1"]["paused_for"] == 0
        assert _statuses(sim).count(429) == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_two_keys_of_a_group_share_its_limit(managers, provider):
    # The organisation admits 10 requests at once and 10/s; the client is
    # told 9 and 9/s for the group. Each key alone believing it has the
    # whole limit would send 18 at once and draw 429s.
    with Simulator(keys=("k0", "k1"), groups={"acme": [0, 1]}) as sim:
        sim.set_limits("acme", SimLimits(requests_per_minute=600, burst_seconds=1))
        manager = _manager(managers, sim, provider,
                           api_keys=[{"key": "k0", "group": "acme"}, {"key": "k1", "group": "acme"}],
                           rate_limits={"requests_per_minute": 540, "burst_seconds": 1})
        client = manager.get_client(provider)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: client.complete(f"group {i}", max_tokens=8), range(30)))
        elapsed = time.monotonic() - started
        assert len(replies) == 30
        stats = sim.stats()
        assert stats[0][429] + stats[1][429] == 0, stats
        assert stats[0][200] > 0 and stats[1][200] > 0, stats  # both keys carry the load
        assert elapsed >= 2.0, f"30 calls at 9/s after a burst of 9 cannot finish in {elapsed:.2f}s"
        first, second = (status["rate_limit_status"]["models"]
                         for status in manager.get_status(provider)["client_statuses"])
        assert first.keys() == second.keys() == {"gpt-4o-mini" if provider == "openai" else
                                                 "claude-3-5-haiku-20241022"}
        (bucket_a,), (bucket_b,) = first.values(), second.values()
        assert bucket_a["limits"] == bucket_b["limits"] == {"requests_per_minute": 540}
        assert abs(bucket_a["requests_remaining"] - bucket_b["requests_remaining"]) <= 1  # one bucket


def test_status_shows_the_buckets_of_each_model_class(managers):
    with Simulator(keys=("k0",), per_model=True) as sim:
        sim.set_limits(0, SimLimits(requests_per_minute=60), models=["claude-opus-*"])
        manager = _manager(managers, sim, "anthropic", models=["claude-sim-1"], rate_limits=[
            {"requests_per_minute": 600},
            {"models": ["claude-opus-*"], "requests_per_minute": 30},
        ])
        client = manager.get_client("anthropic")
        client.complete("default model", max_tokens=8)
        client.complete("opus", model="claude-opus-4", max_tokens=8)
        client.complete("opus", model="claude-opus-4-1", max_tokens=8)
        status = manager.get_status("anthropic")["client_statuses"][0]["rate_limit_status"]
        # The top level keeps its shape, for the default model.
        assert status["limits"]["requests_per_minute"] == 600
        assert status["requests_remaining"] == 599
        assert "tokens_remaining" in status
        assert set(status["models"]) == {"claude-sim-1", "claude-opus-*"}
        opus = status["models"]["claude-opus-*"]
        assert opus["limits"]["requests_per_minute"] == 30  # configured, below the server's 60
        assert 27 <= opus["requests_remaining"] <= 28  # both opus models charged one bucket


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_keys_of_one_organisation_share_its_limit_learned_from_the_answers(managers, provider):
    # Nothing configured in llm_sync: the keys learn from the organisation
    # header of their answers that they share one limit.
    with Simulator(keys=("k0", "k1"), groups={"g1": [0, 1]}) as sim:
        sim.set_limits("g1", SimLimits(requests_per_minute=1200, burst_seconds=1))
        manager = _manager(managers, sim, provider)
        client = manager.get_client(provider)
        limiter = manager._runtime(provider).limiter
        k0, k1 = limiter.keys
        assert limiter.scope_for(k0) is not limiter.scope_for(k1)
        calls = 100
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: client.complete(f"org {i}", max_tokens=8), range(calls)))
        assert len(replies) == calls
        assert limiter.scope_for(k0) is limiter.scope_for(k1)
        assert k0.owner == k1.owner == f"{provider}:org:g1"
        statuses = _statuses(sim)
        assert statuses.count(429) <= calls // 100, sim.stats()
        assert statuses.count(200) == calls
        first, second = (status["rate_limit_status"] for status in manager.get_status(provider)["client_statuses"])
        assert first["limits"] == second["limits"] == {"requests_per_minute": 1200}
        assert "g1" not in repr(manager.get_status(provider)).replace(f"{provider}:org:g1", "")


def test_the_simulator_names_the_organisation_on_every_answer():
    with Simulator(keys=("k0", "k1", "k2"), groups={"g1": [0, 1]}) as sim:
        sim.set_limits("g1", SimLimits(requests_per_minute=1))
        import http.client
        import json
        from urllib.parse import urlsplit

        where = urlsplit(sim.base_url)
        body = json.dumps({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})

        def ask(path: str, headers: dict[str, str]) -> tuple[int, Any]:
            connection = http.client.HTTPConnection(where.hostname, where.port, timeout=5)
            connection.request("POST", path, body, {"content-type": "application/json", **headers})
            response = connection.getresponse()
            response.read()
            connection.close()
            return response.status, response.headers

        anthropic = {"anthropic-version": "2023-06-01"}
        status, headers = ask("/v1/messages", {**anthropic, "x-api-key": "k0"})
        assert status == 200 and headers["anthropic-organization-id"] == "g1"
        status, headers = ask("/v1/messages", {**anthropic, "x-api-key": "k1"})
        assert status == 429 and headers["anthropic-organization-id"] == "g1"
        status, headers = ask("/v1/messages", {**anthropic, "x-api-key": "k2"})
        assert status == 200 and headers["anthropic-organization-id"] == "org-key-2"
        status, headers = ask("/v1/chat/completions", {"authorization": "Bearer k2"})
        assert status == 200 and headers["openai-organization"] == "org-key-2"
        assert "anthropic-organization-id" not in headers
