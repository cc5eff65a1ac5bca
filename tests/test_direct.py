"""send_direct: what reaches the adapter is what ``Session.request`` would
have sent (method, URL, headers, body, timeout, proxies, verify, cert), and
Sessions it cannot stand in for go through ``Session.request``."""

from __future__ import annotations

import http.client
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter

from llm_sync import direct
from llm_sync.direct import direct_eligible, send_direct
from llm_sync.transport import KeyAuth, build_session

URL = "https://api.example.test/v1/messages"
AUTH = {"x-api-key": "sk-direct-TOPSECRET"}


class Capture(HTTPAdapter):
    """Records what it is asked to send; answers 200 (with ``set_cookie``)."""

    def __init__(self, set_cookie: str = "") -> None:
        super().__init__()
        self.sent: list[tuple[requests.PreparedRequest, dict[str, Any]]] = []
        self.set_cookie = set_cookie

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append((request, kwargs))
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        response.url = request.url or ""
        response.request = request
        if self.set_cookie:  # where requests' cookie code reads it: the http.client message
            response.headers["Set-Cookie"] = self.set_cookie
            message = http.client.HTTPMessage()
            message["Set-Cookie"] = self.set_cookie
            response.raw = SimpleNamespace(_original_response=SimpleNamespace(msg=message))
        return response


def session_with(adapter: Capture, trust_env: bool = True) -> requests.Session:
    session = build_session(trust_env=trust_env)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def both(url: str, body: Any, headers: dict[str, Any], trust_env: bool = True,
         stream: bool = False) -> tuple[tuple[requests.PreparedRequest, dict[str, Any]], ...]:
    """The same request through Session.request and through send_direct."""
    sent = []
    for direct_path in (False, True):
        adapter = Capture()
        session = session_with(adapter, trust_env)
        auth = KeyAuth(AUTH, "anthropic-0")
        if direct_path:
            assert direct_eligible(session)
            send_direct(session, "post", url, body, headers, auth, (3.0, 60.0), stream)
        else:
            session.request("post", url, json=body, headers=headers, auth=auth, timeout=(3.0, 60.0),
                            stream=stream, allow_redirects=False)
        [one] = adapter.sent
        sent.append(one)
    return tuple(sent)


def assert_same(slow: tuple[requests.PreparedRequest, dict[str, Any]],
                fast: tuple[requests.PreparedRequest, dict[str, Any]]) -> None:
    (a, a_kwargs), (b, b_kwargs) = slow, fast
    assert (a.method, a.url, a.body) == (b.method, b.url, b.body)
    assert list(a.headers.items()) == list(b.headers.items())
    assert a_kwargs == b_kwargs


@pytest.mark.parametrize("url", [URL, "http://127.0.0.1:8080/v1/chat/completions?api-version=1",
                                 "https://bücher.example/v1/messages", "https://api.example.test/a b/%7e"])
@pytest.mark.parametrize("trust_env", [True, False])
def test_direct_sends_what_session_request_sends(url: str, trust_env: bool):
    headers = {"anthropic-version": "2023-06-01", "Accept-Encoding": None, "USER-AGENT": "mine/1"}
    assert_same(*both(url, {"model": "m", "messages": [{"role": "user", "content": "é"}]}, headers, trust_env))


@settings(max_examples=60, deadline=None)
@given(headers=st.dictionaries(st.sampled_from(["x-a", "X-A", "accept", "Accept", "x-b", "content-type"]),
                               st.one_of(st.none(), st.text("abc-/ ", min_size=1, max_size=5).map(str.strip)
                                         .filter(bool)), max_size=4),
       body=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)),
       stream=st.booleans())
def test_direct_matches_session_request_on_any_headers_and_body(headers, body, stream):
    assert_same(*both(URL, body, headers, stream=stream))


def test_the_environment_proxies_are_honoured_and_a_change_is_seen(monkeypatch: pytest.MonkeyPatch):
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    slow, fast = both(URL, {}, {})
    assert fast[1]["proxies"].get("https") == "http://proxy.invalid:3128"
    assert_same(slow, fast)
    monkeypatch.setenv("NO_PROXY", "api.example.test")  # the next request sees it
    slow, fast = both(URL, {}, {})
    assert "https" not in fast[1]["proxies"]
    assert_same(slow, fast)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/tmp/bundle.pem")
    slow, fast = both(URL, {}, {})
    assert fast[1]["verify"] == "/tmp/bundle.pem"
    assert_same(slow, fast)
    slow, fast = both(URL, {}, {}, trust_env=False)  # a loopback Session ignores it all
    assert fast[1]["proxies"] == {} and fast[1]["verify"] is True


def test_cookies_set_by_the_server_are_kept_and_then_sent_by_session_request():
    adapter = Capture(set_cookie="__cf_bm=abc; Path=/; Domain=api.example.test")
    session = session_with(adapter)
    send_direct(session, "POST", URL, {}, {}, KeyAuth(AUTH, "k"), (3.0, 60.0), False)
    assert session.cookies.get("__cf_bm") == "abc"
    assert not direct_eligible(session)  # a jar with cookies: Session.request sends them
    send_direct(session, "POST", URL, {}, {}, KeyAuth(AUTH, "k"), (3.0, 60.0), False)
    assert adapter.sent[-1][0].headers["Cookie"] == "__cf_bm=abc"


@pytest.mark.parametrize("change", [
    lambda s: setattr(s, "auth", ("u", "p")),
    lambda s: setattr(s, "params", {"a": "1"}),
    lambda s: s.proxies.update(https="http://proxy.invalid:1"),
    lambda s: setattr(s, "cert", "/tmp/cert.pem"),
    lambda s: s.hooks["response"].append(lambda r, **kw: r),
    lambda s: s.cookies.set("a", "b"),
])
def test_a_session_with_settings_of_its_own_goes_through_session_request(change):
    adapter = Capture()
    session = session_with(adapter)
    change(session)
    assert not direct_eligible(session)
    calls = []
    original = session.request

    def spy(*args: Any, **kwargs: Any) -> requests.Response:
        calls.append(kwargs)
        return original(*args, **kwargs)

    session.request = spy  # type: ignore[method-assign]
    send_direct(session, "POST", URL, {}, {}, KeyAuth(AUTH, "k"), (3.0, 60.0), False)
    assert len(calls) == 1 and calls[0]["allow_redirects"] is False


def test_a_subclass_goes_through_session_request():
    class Mine(requests.Session):
        pass
    assert not direct_eligible(Mine())


def test_caches_stay_bounded():
    adapter = Capture()
    session = session_with(adapter)
    for i in range(3 * direct._CACHE_LIMIT):
        send_direct(session, "POST", f"https://h{i}.example.test/v1", {}, {}, None, (3.0, 60.0), False)
    cache = direct.cache_of(session)
    assert 0 < len(cache.urls) <= direct._CACHE_LIMIT and 0 < len(cache.settings) <= direct._CACHE_LIMIT


def test_each_session_owns_its_cache():
    first, second = session_with(Capture()), session_with(Capture())
    send_direct(first, "POST", URL, {}, {}, None, (3.0, 60.0), False)
    assert direct.cache_of(first).urls and not direct.cache_of(second).urls


def test_a_bad_url_fails_every_time_and_is_never_cached():
    session = session_with(Capture())
    for _ in range(2):
        with pytest.raises(requests.exceptions.MissingSchema):
            send_direct(session, "POST", "api.example.test/v1", {}, {}, None, (3.0, 60.0), False)
    assert direct.cache_of(session).urls == {}
