"""The per-call fast paths (issue 12, client CPU): each gives exactly what
the general code it stands in for gives."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses
from requests.structures import CaseInsensitiveDict

from llm_sync import LLMManager
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


# --- the adapter's pool and target caches ------------------------------------------
def _prepared(url: str) -> requests.PreparedRequest:
    prepared = requests.PreparedRequest()
    prepared.prepare(method="POST", url=url, json={})
    return prepared


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/v1/messages", "http://127.0.0.1:9/v1/x?a=1&b=%20",
                                 "https://h.test/p/q#frag", "http://u:p@h.test:81//double"])
def test_adapter_target_is_requests_own(url):
    from requests.adapters import HTTPAdapter

    from llm_sync.wire import FinalResponseAdapter

    ours, plain = FinalResponseAdapter(), HTTPAdapter()
    prepared = _prepared(url)
    for proxies in ({}, None, {"http": "http://proxy.test:3128", "https": "http://proxy.test:3128"}):
        assert ours.request_url(prepared, proxies) == plain.request_url(prepared, proxies)
        assert ours.request_url(prepared, proxies) == plain.request_url(prepared, proxies)  # cached


def _held(adapter: Any) -> list[Any]:
    pools = adapter.poolmanager.pools
    return [pools[key] for key in pools.keys()]


def test_adapter_pool_is_reused_until_closed_or_evicted():
    from llm_sync.wire import FinalResponseAdapter

    adapter = FinalResponseAdapter(pool_connections=1)
    one = _prepared("http://127.0.0.1:9/a")
    pool = adapter.get_connection_with_tls_context(one, True, proxies={})
    assert adapter.get_connection_with_tls_context(_prepared("http://127.0.0.1:9/a"), True) is pool
    assert adapter.get_connection_with_tls_context(one, False) is not None  # verify is part of the key
    # Another host evicts the only pool slot: the evicted pool is never handed out again.
    other = adapter.get_connection_with_tls_context(_prepared("http://127.0.0.2:9/b"), True)
    assert other is not pool and other.host == "127.0.0.2"
    again = adapter.get_connection_with_tls_context(one, True)
    assert again is not pool and again.host == "127.0.0.1"
    assert _held(adapter) == [again]  # the manager's own pool, as requests would give
    adapter.close()  # drops every pool: the next send gets a fresh one
    fresh = adapter.get_connection_with_tls_context(one, True)
    assert fresh is not again and _held(adapter) == [fresh]
    adapter.init_poolmanager(1, 1)  # a manager replaced: never its predecessor's pools
    assert adapter.get_connection_with_tls_context(one, True) is not fresh
    # A proxied request is never served from the cache.
    proxied = adapter.get_connection_with_tls_context(one, True, proxies={"http": "http://proxy.test:3128"})
    assert proxied is not fresh and proxied.host == "proxy.test"


def test_calls_keep_working_across_a_closed_adapter():
    from llm_sync.testing import Simulator

    with Simulator(keys=("sk-sim-hot-1",)) as sim, LLMManager.from_dict({"providers": {"anthropic": {
            "api_keys": ["sk-sim-hot-1"], "base_url": sim.base_url, "models": ["m"]}}}) as manager:
        client = manager.get_client("anthropic")
        first = client.complete("hello", max_tokens=8)
        with client._pipeline.pool.acquire(None) as lease:  # its Session's adapters closed under its feet
            closed = list(lease.session.adapters.values())
            for adapter in closed:
                adapter.close()
            assert all(not _held(adapter) for adapter in closed)
        assert client.complete("hello", max_tokens=8).content == first.content


# --- validated headers, once per distinct set ------------------------------------------
def _requests_headers(session_headers: Any, headers: Any) -> list[tuple[str, Any]]:
    """What Session.request sends: merge_setting, then prepare_headers."""
    from requests.sessions import merge_setting

    prepared = requests.PreparedRequest()
    prepared.prepare_headers(merge_setting(headers, session_headers, dict_class=CaseInsensitiveDict))
    return list(prepared.headers._store.values())


@pytest.mark.parametrize("headers", [
    {"anthropic-version": "2023-06-01", "content-type": "application/json"},
    {"User-Agent": "mine/1", "X-Extra": b"bytes"},
    {"user-agent": None, "accept": "text/event-stream"},
    {},
])
def test_prepared_headers_are_requests_own_and_a_fresh_copy(headers):
    from llm_sync import direct

    session = requests.Session()
    session.headers["User-Agent"] = "llm-sync/test"
    kept = direct.cache_of(session).headers
    for _ in range(3):  # the first validates, the rest copy
        prepared = direct._prepared_headers(session.headers, headers, kept)
        assert list(prepared._store.values()) == _requests_headers(session.headers, headers)
        assert type(prepared) is CaseInsensitiveDict
        prepared["x-api-key"] = "changed by the request's auth"  # never seen by the next call
        prepared.pop("Accept", None)
    session.headers["X-Session"] = "later"  # a change to the Session is seen by the next call
    assert list(direct._prepared_headers(session.headers, headers, kept)._store.values()) \
        == _requests_headers(session.headers, headers)


def test_invalid_headers_fail_every_time():
    from llm_sync import direct

    session = requests.Session()
    kept = direct.cache_of(session).headers
    for _ in range(2):
        with pytest.raises(requests.exceptions.InvalidHeader):
            direct._prepared_headers(session.headers, {"x-bad": "line\r\nbreak"}, kept)
    with pytest.raises(requests.exceptions.InvalidHeader):
        direct._prepared_headers(session.headers, {"x-list": ["unhashable"]}, kept)
    assert kept == {}


# --- the response head, parsed without the email parser when plain -----------------------
HEADS = [
    b"Server: x\r\nDate: Sun, 29 Nov 2026 23:45:30 GMT\r\nrequest-id: req_1\r\ncontent-length: 5\r\n\r\n",
    b"\r\n",
    b"A:\r\nB: \t spaced value  \r\nC:no-space\r\nD: a:b:c\r\n\n",
    b"X-Dup: 1\nX-Dup: 2\n\n",
    b"X-Latin: caf\xe9 \xa0\r\n\r\n",
    b"Content-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n",
    # each of these goes to the email parser
    b"X-Folded: one\r\n two\r\n\r\n",
    b"From nobody\r\nX: 1\r\n\r\n",
    b"Bad Name: 1\r\n\r\n",
    b"NoColon\r\nX: 1\r\n\r\n",
    b": empty name\r\n\r\n",
    b"X: a\rb\r\n\r\n",
    b"X: a\x0bb\x0cc\x1cd\x85e\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n",
    b"content-type: Message/rfc822\r\n\r\n",
    b"X: no blank line at the end\r\n",
    b"",
]


@pytest.mark.parametrize("head", HEADS)
def test_parse_head_is_http_clients_own(head):
    import http.client
    import io

    from llm_sync.wire import parse_head

    ours, theirs = parse_head(io.BytesIO(head + b"body")), http.client.parse_headers(io.BytesIO(head + b"body"))
    assert type(ours) is type(theirs)
    def plain(message: Any) -> dict[str, Any]:  # a parsed sub-message: compared as text below
        return {k: v for k, v in vars(message).items() if k != "defects" and not isinstance(v, list) or k == "_headers"}
    assert plain(ours) == plain(theirs) and ours.as_string() == theirs.as_string()
    assert [type(d) for d in ours.defects] == [type(d) for d in theirs.defects]
    assert ours.items() == theirs.items()
    if isinstance(theirs.get_payload(), str):  # (a parsed sub-message is compared by as_string above)
        assert ours.get_payload() == theirs.get_payload()


def test_parse_head_random_plain_heads_match():
    import http.client
    import io
    import random

    from llm_sync.wire import parse_head

    rng = random.Random(12)
    alphabet = [chr(c) for c in range(0x20, 0x7f)] + ["\t", "\xe9", "\xa0", ":", " "]
    for _ in range(500):
        lines = []
        for _ in range(rng.randrange(0, 8)):
            name = "".join(rng.choice("abcXYZ-_0123!~") for _ in range(rng.randrange(1, 10)))
            value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 20)))
            lines.append(name + ":" + value + rng.choice(["\r\n", "\n"]))
        head = ("".join(lines) + rng.choice(["\r\n", "\n"])).encode("iso-8859-1")
        ours, theirs = parse_head(io.BytesIO(head)), http.client.parse_headers(io.BytesIO(head))
        assert vars(ours) == vars(theirs), head


def test_a_response_head_reads_the_same_over_the_wire():
    from llm_sync.testing import Simulator

    with Simulator(keys=("sk-sim-hot-2",)) as sim, LLMManager.from_dict({"providers": {"anthropic": {
            "api_keys": ["sk-sim-hot-2"], "base_url": sim.base_url, "models": ["m"]}}}) as manager:
        response = manager.get_client("anthropic").complete("hello", max_tokens=8)
    assert response.headers["content-type"] == "application/json"
    assert response.request_id and response.headers["request-id"] == response.request_id


def test_check_body_of_nothing():
    from collections import OrderedDict

    from llm_sync.arguments import check_body
    from llm_sync.errors import LLMValidationError

    empty: dict[str, Any] = {}
    for body in (None, empty, OrderedDict()):
        checked = check_body(body, "extra_body")
        assert checked == {} and type(checked) is dict and checked is not body  # never the caller's own dict
    with pytest.raises(LLMValidationError):
        check_body({"stream": True}, "extra_body")
    with pytest.raises(LLMValidationError):
        check_body([], "extra_body")  # an empty list is not a mapping


# --- header lines written once checked ---------------------------------------------------
def _written(connection_class: Any, headers: list[tuple[str, Any]], connection: Any = None) -> list[bytes]:
    """The header lines ``headers`` write on a new connection, or again on
    ``connection`` (a connection reused for its next request)."""
    import http.client

    if connection is None:
        connection = connection_class("127.0.0.1", 9)
    else:
        connection._buffer.clear()
        connection._HTTPConnection__state = http.client._CS_IDLE
    connection.putrequest("POST", "/v1/messages")
    for name, value in headers:
        connection.putheader(name, value)
    return list(connection._buffer)


def test_header_lines_are_http_clients_own_and_no_credential_is_kept():
    from urllib3.connection import HTTPConnection

    from llm_sync import wire

    ours = wire._final_connection_class(HTTPConnection)
    connection = ours("127.0.0.1", 9)
    headers = [("User-Agent", "llm-sync/x"), ("anthropic-version", "2023-06-01"), ("Content-Length", "42"),
               ("x-api-key", KEY), ("Authorization", f"Bearer {KEY}"), ("X-Gateway-Token", "gw-1"),
               ("Cookie", "a=b"), ("X-Latin", "caf\xe9"), ("Accept-Encoding", "gzip")]
    first = _written(ours, headers, connection)
    assert first == _written(HTTPConnection, headers)
    assert _written(ours, headers, connection) == first  # from the connection's kept lines: the same bytes
    kept = b"".join(connection._header_lines.values())
    assert KEY.encode() not in kept and b"gw-1" not in kept and b"a=b" not in kept
    assert ("anthropic-version", "2023-06-01") in connection._header_lines
    assert ours("127.0.0.1", 9)._header_lines is None  # each connection its own


def test_header_lines_still_refused_and_skipped_as_before():
    import http.client

    from urllib3.connection import HTTPConnection
    from urllib3.util import SKIP_HEADER

    from llm_sync import wire

    ours = wire._final_connection_class(HTTPConnection)
    for _ in range(2):
        for bad in [("X-Bad", "a\r\nb"), ("Bad:Name", "v"), (" Lead", "v"), ("X-\u00e9", "v"), ("X-Wide", "\u2014")]:
            for connection_class in (HTTPConnection, ours):
                with pytest.raises((ValueError, UnicodeError)):
                    _written(connection_class, [bad])
    assert _written(ours, [("User-Agent", SKIP_HEADER)]) == _written(HTTPConnection, [("User-Agent", SKIP_HEADER)])
    assert b"User-Agent" not in b"".join(_written(ours, [("User-Agent", SKIP_HEADER)]))
    connection = ours("127.0.0.1", 9)
    connection.putrequest("POST", "/")
    connection.putheader("anthropic-version", "2023-06-01")  # kept
    connection._HTTPConnection__state = http.client._CS_IDLE  # no request started: refused, kept line or not
    with pytest.raises(http.client.CannotSendHeader):
        connection.putheader("anthropic-version", "2023-06-01")


def test_a_header_set_with_a_credential_is_never_kept():
    from llm_sync import direct

    session = requests.Session()
    kept = direct.cache_of(session).headers
    token = "gw-token-QwErTy-777"
    for _ in range(2):
        prepared = direct._prepared_headers(session.headers, {"api-key": token, "x-trace": "1"}, kept)
        assert list(prepared._store.values()) == _requests_headers(session.headers, {"api-key": token, "x-trace": "1"})
    assert token not in repr(kept)
    plain = direct._prepared_headers(session.headers, {"anthropic-version": "2023-06-01"}, kept)
    assert len(kept) == 1 and plain["anthropic-version"] == "2023-06-01"  # a plain set is kept


def test_parse_head_falls_back_to_http_clients_parser_without_its_line_reader(monkeypatch):
    import http.client
    import io

    from llm_sync import wire

    monkeypatch.setattr(wire, "_read_headers", None)  # an http.client that lacks the private helper
    head = b"Content-Type: application/json\r\nX-Request-Id: r1\r\n\r\n"
    ours, theirs = wire.parse_head(io.BytesIO(head)), http.client.parse_headers(io.BytesIO(head))
    assert ours.items() == theirs.items() == [("Content-Type", "application/json"), ("X-Request-Id", "r1")]
