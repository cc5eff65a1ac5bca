"""The per-call fast paths (issue 12, client CPU): each gives exactly what
the general code it stands in for gives."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses
from requests.structures import CaseInsensitiveDict

from llm_sync import LLMManager
from llm_sync.providers import create_provider
from llm_sync.providers.base import CREDENTIAL_HEADERS

KEY = "token-abc-not-key-like-0042"  # masked because it was sent, not because it looks like a key
BASE = "https://api.hot.test"


def _provider(kind: str) -> Any:
    with LLMManager.from_dict({"providers": {kind: {"api_keys": [KEY], "base_url": BASE}}}) as manager:
        return manager.get_client(kind)._provider


def _general_secrets(provider: Any, sent: Any) -> set[str]:
    """sent_secrets as the general code worked it out (any mapping)."""
    found = set()
    for name in {*provider.auth_headers("").keys(), *CREDENTIAL_HEADERS}:
        value = sent.get(name) or ""
        value = value[7:] if value[:7].lower() == "bearer " else value
        if value.strip():
            found.add(value.strip())
    return found


def _answer(headers: Any) -> requests.Response:
    http = requests.Response()
    http.request = requests.PreparedRequest()
    http.request.headers = headers
    http.headers = CaseInsensitiveDict({"X-Echo": f"saw {KEY}", "request-id": f"req-{KEY}"})
    return http


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
@pytest.mark.parametrize("sent", [
    {"X-Api-Key": KEY, "Authorization": f"Bearer {KEY}"},
    {"authorization": f"bearer  {KEY} ", "API-KEY": "gw-token-1"},
    {"Proxy-Authorization": "  ", "content-type": "application/json"},
    {},
])
def test_sent_secrets_match_the_general_lookup(kind, sent):
    provider = _provider(kind)
    for headers in (CaseInsensitiveDict(sent), {k.lower(): v for k, v in sent.items()}):
        secrets = provider.sent_secrets(_answer(headers))
        assert set(secrets) == _general_secrets(provider, CaseInsensitiveDict(sent))
        assert provider.sent_secrets(_answer(headers)) == secrets  # the cached names: the same answer again


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_headers_and_request_id_masked_with_secrets_given_or_not(kind):
    provider = _provider(kind)
    http = _answer(CaseInsensitiveDict({"x-api-key": KEY, "authorization": f"Bearer {KEY}"}))
    secrets = provider.sent_secrets(http)
    assert provider.plain_headers(http, secrets) == provider.plain_headers(http) \
        == {"x-echo": "saw ***", "request-id": "req-***"}
    assert provider.request_id(http, secrets) == provider.request_id(http)


def test_a_200_answer_echoing_the_key_is_masked(mock):
    mock.add(responses.POST, f"{BASE}/v1/messages", headers={"x-echo": KEY, "request-id": f"req-{KEY}"},
             json={"id": f"msg-{KEY}", "content": [{"type": "text", "text": "hi"}], "model": "m",
                   "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}})
    with LLMManager.from_dict({"providers": {"anthropic": {"api_keys": [KEY], "base_url": BASE,
                                                           "models": ["m"]}}}) as manager:
        response = manager.get_client("anthropic").complete("Hi")
    assert response.headers["x-echo"] == "***" and response.request_id == "req-***"
    assert KEY not in repr(response.headers)
