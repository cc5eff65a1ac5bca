"""Per-call extra_headers and extra_body reach the server, over real sockets."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from llm_sync import LLMManager


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("streamed", [False, True])
def test_extra_headers_and_body_reach_the_simulator(make_manager: Callable[..., LLMManager], llm_simulator: Any,
                                                     provider: str, streamed: bool):
    manager = make_manager()
    client = manager.get_client(provider)
    kwargs: dict[str, Any] = dict(extra_headers={"x-trace-id": "t-123", "x-tenant": "acme"},
                                  extra_body={"metadata": {"user_id": "u-9"}})
    if streamed:
        with client.stream("hello", **kwargs) as stream:
            text = stream.read()
    else:
        text = client.complete("hello", **kwargs).content
    assert text
    recorded = llm_simulator.requests[-1]
    assert recorded.headers["x-trace-id"] == "t-123" and recorded.headers["x-tenant"] == "acme"
    assert recorded.body["metadata"] == {"user_id": "u-9"}
    assert "extra_headers" not in recorded.body and "headers" not in recorded.body
