"""The simulator serving its routes under another path prefix (Gemini's
``/v1beta/openai``, Azure-style ``/openai``, a gateway's ``/anthropic/v1``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from llm_sync.testing import Simulator

KEY = "sk-sim-prefix"
CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def gemini_like() -> Iterator[Simulator]:
    with Simulator(keys=KEY, path_prefix="/v1beta/openai") as sim:
        yield sim


def test_routes_answer_under_the_prefix(gemini_like: Simulator) -> None:
    assert gemini_like.api_url == gemini_like.base_url + "/v1beta/openai"
    answer = requests.post(gemini_like.api_url + "/chat/completions", json=CHAT_BODY,
                           headers={"authorization": f"Bearer {KEY}"}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "Simulated reply to: hi"
    assert [r.path for r in gemini_like.requests] == ["/v1beta/openai/chat/completions"]
    assert gemini_like.request_count(path="/v1beta/openai/chat/completions") == 1


def test_paths_outside_the_prefix_are_not_found(gemini_like: Simulator) -> None:
    answer = requests.post(gemini_like.base_url + "/v1/chat/completions", json=CHAT_BODY,
                           headers={"authorization": f"Bearer {KEY}"}, timeout=5)
    assert answer.status_code == 404
    assert "/v1/chat/completions" in answer.json()["error"]["message"]


def test_faults_match_the_route_not_the_prefix(gemini_like: Simulator) -> None:
    gemini_like.inject(503, path="/v1/chat/completions")
    answer = requests.post(gemini_like.api_url + "/chat/completions", json=CHAT_BODY,
                           headers={"authorization": f"Bearer {KEY}"}, timeout=5)
    assert answer.status_code == 503


def test_anthropic_routes_under_a_gateway_prefix() -> None:
    with Simulator(keys=KEY, path_prefix="/anthropic/v1") as sim:
        answer = requests.post(
            sim.base_url + "/anthropic/v1/messages", json=CHAT_BODY, timeout=5,
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        assert answer.status_code == 200 and answer.json()["type"] == "message"


@pytest.mark.parametrize("prefix", ["v1", "/v1/", "/a b", ""])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="path_prefix"):
        Simulator(keys=KEY, path_prefix=prefix)


def test_default_prefix_is_v1() -> None:
    with Simulator(keys=KEY) as sim:
        assert sim.path_prefix == "/v1" and sim.api_url == sim.base_url + "/v1"
