"""Review 9: the simulator answers 400 where the real Anthropic API does:
whitespace-only text blocks, tool_result blocks after other content of a
user turn, tool blocks in a request that defines no tools (raw HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from llm_sync.testing import Simulator

KEY = "sk-sim-review9"
TOOLS = [{"name": "time", "input_schema": {"type": "object", "properties": {}}}]
CALL = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "time", "input": {}}]}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_a", "content": "noon"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(KEY) as simulator:
        yield simulator


def post(sim: Simulator, body: dict[str, Any]) -> requests.Response:
    full = {"model": "claude-sim-1", "max_tokens": 100, **body}
    return requests.post(sim.base_url + "/v1/messages", json=full, timeout=5,
                         headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t\n"])
@pytest.mark.parametrize("role", ["user", "assistant"])
def test_whitespace_only_text_blocks_are_400(sim, text, role):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "go on"}]
    target = 1 if role == "assistant" else 2
    messages[target] = {"role": role, "content": [{"type": "text", "text": text}, {"type": "text", "text": "x"}]}
    response = post(sim, {"messages": messages})
    assert response.status_code == 400
    assert "non-whitespace text" in response.json()["error"]["message"]


def test_tool_result_after_other_content_is_400(sim):
    turn = {"role": "user", "content": [{"type": "text", "text": "here:"}, RESULT]}
    response = post(sim, {"tools": TOOLS, "messages": [{"role": "user", "content": "hi"}, CALL, turn]})
    assert response.status_code == 400
    assert "must come first" in response.json()["error"]["message"]
    turn["content"].reverse()
    assert post(sim, {"tools": TOOLS, "messages": [{"role": "user", "content": "hi"}, CALL, turn]}).status_code == 200


def test_tool_blocks_without_tools_are_400(sim):
    messages = [{"role": "user", "content": "hi"}, CALL, {"role": "user", "content": [RESULT]}]
    response = post(sim, {"messages": messages})
    assert response.status_code == 400
    assert "must define tools" in response.json()["error"]["message"]
    assert post(sim, {"tools": TOOLS, "messages": messages}).status_code == 200
