"""Rate-limit scopes in the simulator, over real sockets with plain ``requests``:
keys grouped into organisations sharing buckets, per-model-class limits (both
header families report the class's figures), per-model buckets, and prompt
cache reads (not charged on Anthropic, charged on OpenAI) per group.

Time never passes on its own here: the monotonic clock is a fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from llm_sync.testing import SimLimits, Simulator

KEYS = ("sk-sim-acme-0", "sk-sim-acme-1", "sk-sim-beta-0", "sk-sim-beta-1")
VERSION = "2023-06-01"
LONG = " ".join(f"w{i}" for i in range(1100))  # 1100 tokens: cacheable


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(KEYS, clock=clock, groups={"acme": [0, 1], "beta": [2, 3]}, per_model=True) as simulator:
        yield simulator


def post_a(sim: Simulator, key: int = 0, model: str = "claude-sim-1", **body: Any) -> requests.Response:
    payload = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **body}
    headers = {"x-api-key": KEYS[key], "anthropic-version": VERSION}
    return requests.post(sim.base_url + "/v1/messages", json=payload, headers=headers, timeout=5)


def post_o(sim: Simulator, key: int = 0, model: str = "gpt-sim-1", **body: Any) -> requests.Response:
    payload = {"model": model, "max_completion_tokens": 50,
               "messages": [{"role": "user", "content": "hi"}], **body}
    headers = {"Authorization": f"Bearer {KEYS[key]}"}
    return requests.post(sim.base_url + "/v1/chat/completions", json=payload, headers=headers, timeout=5)


# -- groups ---------------------------------------------------------------------------------


def test_keys_of_one_group_share_buckets(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(requests_per_minute=3))
    assert [post_a(sim, 0).status_code for _ in range(3)] == [200] * 3
    refused = post_a(sim, 1)  # the other key of the organisation: same bucket, empty
    assert refused.status_code == 429
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "3"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert "retry-after" in refused.headers
    assert sim.bucket_levels(0) == sim.bucket_levels(1) == sim.bucket_levels("acme")
    assert sim.bucket_levels("acme")["requests"] == pytest.approx(0)
    assert post_a(sim, 2).status_code == 200  # beta is another organisation (unlimited)
    assert sim.stats()[0] == {200: 3, 429: 0} and sim.stats()[1] == {200: 0, 429: 1}
    assert sim.groups == {"acme": (0, 1), "beta": (2, 3)}


def test_group_shares_openai_buckets_and_headers_too(sim: Simulator) -> None:
    sim.set_limits("beta", SimLimits(requests_per_minute=10, tokens_per_minute=1000))
    first = post_o(sim, 2)
    second = post_o(sim, 3)
    assert first.status_code == second.status_code == 200
    prompt = first.json()["usage"]["prompt_tokens"]
    assert second.headers["x-ratelimit-remaining-requests"] == "8"
    assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * (prompt + 50))
    assert sim.bucket_levels("beta", "openai")["requests"] == pytest.approx(8)
    assert post_o(sim, 2, max_completion_tokens=900).status_code == 429
    assert post_o(sim, 3, max_completion_tokens=900).status_code == 429


def test_a_new_group_starts_with_its_first_members_limits(clock: FakeClock) -> None:
    with Simulator(KEYS, clock=clock, limits=SimLimits(requests_per_minute=2),
                   groups={"acme": [0, 1]}) as sim:
        assert [post_a(sim, key).status_code for key in (0, 1, 0, 1)] == [200, 200, 429, 429]
        assert [post_a(sim, 2).status_code for _ in range(3)] == [200, 200, 429]  # ungrouped: own
        assert post_a(sim, 3).status_code == 200


def test_grouped_key_limits_go_through_the_group_and_dissolving_restores_keys(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="acme"):
        sim.set_limits(0, SimLimits(requests_per_minute=1))
    sim.set_limits("acme", SimLimits(requests_per_minute=1))
    assert post_a(sim, 0).status_code == 200
    assert post_a(sim, 1).status_code == 429
    sim.set_group("acme", [])  # dissolved: keys 0 and 1 use their own (unlimited) buckets
    assert sim.groups == {"beta": (2, 3)}
    assert post_a(sim, 0).status_code == post_a(sim, 1).status_code == 200
    sim.set_limits(1, SimLimits(requests_per_minute=1))
    sim.set_group("beta", [1, 2])  # the existing group keeps its limits; key 3 leaves it
    assert sim.groups == {"beta": (1, 2)}
    assert post_a(sim, 1).status_code == post_a(sim, 3).status_code == post_a(sim, 3).status_code == 200
    sim.set_group("acme", [3])  # key 3, in no group now, starts a new one with its own limits
    assert sim.groups == {"beta": (1, 2), "acme": (3,)}


def test_group_and_scope_arguments_are_checked(sim: Simulator) -> None:
    with pytest.raises(IndexError):
        sim.set_group("acme", [9])
    with pytest.raises(ValueError):
        sim.set_group("", [0])
    with pytest.raises(TypeError):
        sim.set_group("acme", ["0"])  # type: ignore[list-item]
    with pytest.raises(KeyError):
        sim.bucket_levels("nobody")
    with pytest.raises(KeyError):
        sim.set_limits("nobody", None)
    with pytest.raises(ValueError):
        sim.set_limits("acme", None, models=[])
    with pytest.raises(ValueError):
        sim.set_limits("acme", None, models=["claude-*", ""])
    assert sim.groups == {"acme": (0, 1), "beta": (2, 3)}


# -- model classes --------------------------------------------------------------------------


def test_two_model_classes_on_one_key_have_independent_buckets_and_headers(sim: Simulator) -> None:
    sim.set_group("acme", [])
    sim.set_limits(0, SimLimits(requests_per_minute=2, input_tokens_per_minute=1000), models=["claude-opus-*"])
    sim.set_limits(0, SimLimits(requests_per_minute=100, input_tokens_per_minute=50_000),
                   models="claude-haiku-*")
    opus = [post_a(sim, 0, "claude-opus-4"), post_a(sim, 0, "claude-opus-4-1")]  # one class, two versions
    assert [item.status_code for item in opus] == [200, 200]
    assert opus[1].headers["anthropic-ratelimit-requests-limit"] == "2"
    assert opus[1].headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert opus[1].headers["anthropic-ratelimit-input-tokens-limit"] == "1000"
    refused = post_a(sim, 0, "claude-opus-4")
    assert refused.status_code == 429 and refused.headers["anthropic-ratelimit-requests-limit"] == "2"
    haiku = post_a(sim, 0, "claude-haiku-3-5")  # a 429 for opus says nothing about haiku
    assert haiku.status_code == 200
    assert haiku.headers["anthropic-ratelimit-requests-limit"] == "100"
    assert haiku.headers["anthropic-ratelimit-requests-remaining"] == "99"
    assert haiku.headers["anthropic-ratelimit-input-tokens-limit"] == "50000"
    assert sim.bucket_levels(0, model="claude-opus-9")["requests"] == pytest.approx(0)
    assert sim.bucket_levels(0, model="claude-haiku-3-5")["requests"] == pytest.approx(99)
    assert sim.bucket_levels(0, model="claude-sim-1") == {}  # unmatched: the (unlimited) default


def test_model_classes_in_openai_headers(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(requests_per_minute=1, tokens_per_minute=500), models=["gpt-big*"])
    sim.set_limits("acme", SimLimits(requests_per_minute=60, tokens_per_minute=90_000), models=["gpt-small*"])
    big = post_o(sim, 0, "gpt-big")
    assert big.status_code == 200
    assert big.headers["x-ratelimit-limit-requests"] == "1"
    assert big.headers["x-ratelimit-limit-tokens"] == "500"
    refused = post_o(sim, 1, "gpt-big-2")  # same group, same class
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit-requests"] == "1"
    small = post_o(sim, 1, "gpt-small")
    assert small.status_code == 200
    assert small.headers["x-ratelimit-limit-requests"] == "60"
    assert small.headers["x-ratelimit-remaining-requests"] == "59"
    assert small.headers["x-ratelimit-limit-tokens"] == "90000"
    assert not any(name.startswith("anthropic-") for name in small.headers)


def test_redeclaring_a_class_replaces_its_limits_and_refills_it(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(requests_per_minute=1), models=["claude-opus-*"])
    assert post_a(sim, 0, "claude-opus-4").status_code == 200
    assert post_a(sim, 0, "claude-opus-4").status_code == 429
    sim.set_limits("acme", SimLimits(requests_per_minute=3), models=["claude-opus-*"])
    assert sim.bucket_levels("acme", model="claude-opus-4") == {"requests": pytest.approx(3)}
    sim.set_limits("acme", None, models=["claude-opus-*"])  # unlimited
    assert all(post_a(sim, 1, "claude-opus-4").status_code == 200 for _ in range(5))
    assert "anthropic-ratelimit-requests-limit" not in post_a(sim, 1, "claude-opus-4").headers


def test_first_matching_class_wins(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(requests_per_minute=1), models=["claude-opus-4*"])
    sim.set_limits("acme", SimLimits(requests_per_minute=7), models=["claude-*"])
    assert post_a(sim, 0, "claude-opus-4-1").headers["anthropic-ratelimit-requests-limit"] == "1"
    assert post_a(sim, 0, "claude-sonnet-4").headers["anthropic-ratelimit-requests-limit"] == "7"
    assert post_a(sim, 0, "claude-opus-3").headers["anthropic-ratelimit-requests-limit"] == "7"


def test_an_unmatched_model_gets_its_own_buckets(sim: Simulator, clock: FakeClock) -> None:
    sim.set_limits("acme", SimLimits(requests_per_minute=1, output_tokens_per_minute=600))
    sim.set_limits("acme", SimLimits(requests_per_minute=50), models=["claude-opus-*"])
    assert post_a(sim, 0, "model-a").status_code == 200
    assert post_a(sim, 1, "model-a").status_code == 429
    other = post_a(sim, 1, "model-b")  # same default limits, its own buckets
    assert other.status_code == 200
    assert other.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert other.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert other.headers["anthropic-ratelimit-output-tokens-limit"] == "600"
    assert sim.bucket_levels(0, model="model-a")["requests"] == pytest.approx(0)
    assert sim.bucket_levels(0, model="model-c") == {"requests": 1, "output_tokens": 600}  # unused: full
    with pytest.raises(ValueError, match="model-a"):
        sim.bucket_levels(0)  # several unmatched models: which one?
    clock.now += 60
    assert post_a(sim, 0, "model-a").status_code == 200


def test_without_per_model_unmatched_models_share_the_default_buckets(clock: FakeClock) -> None:
    with Simulator(KEYS, clock=clock, limits=SimLimits(requests_per_minute=1)) as sim:
        assert not sim.per_model
        sim.set_limits(0, SimLimits(requests_per_minute=5), models=["claude-opus-*"])
        assert post_a(sim, 0, "model-a").status_code == 200
        assert post_a(sim, 0, "model-b").status_code == 429  # one default set, as before classes
        assert post_a(sim, 0, "claude-opus-4").status_code == 200  # the class has its own
        assert sim.bucket_levels(0) == {"requests": pytest.approx(0)}
        assert sim.bucket_levels(0, model="claude-opus-4") == {"requests": pytest.approx(4)}


def test_reset_refills_every_scope_and_keeps_the_configuration(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(requests_per_minute=1), models=["claude-opus-*"])
    sim.set_limits("beta", SimLimits(requests_per_minute=1))
    assert post_a(sim, 0, "claude-opus-4").status_code == post_a(sim, 2).status_code == 200
    assert post_a(sim, 1, "claude-opus-4").status_code == post_a(sim, 3).status_code == 429
    sim.reset()
    assert sim.groups == {"acme": (0, 1), "beta": (2, 3)}
    assert post_a(sim, 1, "claude-opus-4").status_code == post_a(sim, 3).status_code == 200
    assert post_a(sim, 0, "claude-opus-4").status_code == post_a(sim, 2).status_code == 429


# -- prompt-cache reads ---------------------------------------------------------------------


def cached_body(question: str) -> dict[str, Any]:
    return {"system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": question}]}


def test_anthropic_cache_reads_are_not_charged_and_are_shared_by_the_group(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(input_tokens_per_minute=100_000), models=["claude-opus-*"])
    first = post_a(sim, 0, "claude-opus-4", **cached_body("Question one"))
    usage = first.json()["usage"]
    assert usage["cache_creation_input_tokens"] > 1000 and usage["cache_read_input_tokens"] == 0
    written = usage["cache_creation_input_tokens"] + usage["input_tokens"]  # writes are charged
    assert first.headers["anthropic-ratelimit-input-tokens-remaining"] == str(100_000 - written)
    assert sim.bucket_levels("acme", model="claude-opus-4")["input_tokens"] == pytest.approx(100_000 - written)
    second = post_a(sim, 1, "claude-opus-4", **cached_body("Another question"))  # other key, same organisation
    again = second.json()["usage"]
    assert again["cache_read_input_tokens"] == usage["cache_creation_input_tokens"]
    assert again["cache_creation_input_tokens"] == 0
    charged = written + again["input_tokens"]  # the cache read is not charged
    assert second.headers["anthropic-ratelimit-input-tokens-remaining"] == str(100_000 - charged)
    assert sim.bucket_levels(0, model="claude-opus-4")["input_tokens"] == pytest.approx(100_000 - charged)
    # Another organisation, or another model, has a cache of its own.
    elsewhere = post_a(sim, 2, "claude-opus-4", **cached_body("Question one")).json()["usage"]
    assert elsewhere["cache_read_input_tokens"] == 0 and elsewhere["cache_creation_input_tokens"] > 1000
    other_model = post_a(sim, 0, "claude-sim-1", **cached_body("Question one")).json()["usage"]
    assert other_model["cache_read_input_tokens"] == 0


def test_openai_cached_tokens_are_charged(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(tokens_per_minute=100_000), models=["gpt-*"])
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "one"}]
    first = post_o(sim, 0, messages=messages)
    prompt = first.json()["usage"]["prompt_tokens"]
    assert first.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    second = post_o(sim, 1, messages=messages)  # other key, same organisation: a cache hit
    usage = second.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 1024
    assert usage["prompt_tokens"] == prompt
    charged = 2 * (prompt + 50)  # cached tokens are part of the prompt, and charged
    assert second.headers["x-ratelimit-remaining-tokens"] == str(100_000 - charged)
    assert sim.bucket_levels(1, "openai", model="gpt-sim-1")["tokens"] == pytest.approx(100_000 - charged)
    elsewhere = post_o(sim, 3, messages=messages).json()["usage"]  # beta has its own cache
    assert elsewhere["prompt_tokens_details"] == {"cached_tokens": 0}


def test_concurrent_keys_of_a_group_get_no_more_than_the_groups_limit(sim: Simulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sim.set_limits("acme", SimLimits(requests_per_minute=20), models=["claude-opus-*"])
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda n: post_a(sim, n % 2, "claude-opus-4").status_code, range(48)))
    assert statuses.count(200) == 20 and statuses.count(429) == 28


def test_a_streamed_reply_refunds_its_class_output_bucket(sim: Simulator) -> None:
    sim.set_limits("acme", SimLimits(output_tokens_per_minute=1000), models=["claude-opus-*"])
    sim.set_limits("acme", SimLimits(output_tokens_per_minute=1000))
    response = post_a(sim, 0, "claude-opus-4", stream=True, max_tokens=500)
    assert response.status_code == 200 and "message_stop" in response.text
    assert response.headers["anthropic-ratelimit-output-tokens-remaining"] == "500"  # max_tokens up front
    spent = 1000 - sim.bucket_levels("acme", model="claude-opus-4")["output_tokens"]
    assert 0 < spent < 50  # the unused part came back to the class's bucket
    assert sim.bucket_levels("acme", model="claude-sim-1") == {"output_tokens": 1000}  # untouched
