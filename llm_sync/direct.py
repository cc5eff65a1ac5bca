"""Sending a request straight through a Session's adapter.

``Session.request`` re-derives on every call what hardly ever changes: it
merges settings through generic mapping code (~90 µs a call), scans the
environment for proxies (another ~90 µs where the environment is trusted),
and consults cookie jars and hooks. :func:`send_direct` takes the same steps
for the plain Sessions llm_sync builds, with what is pure cached:

* the URL is prepared (validated, IDNA, quoting) once per URL string;
* the environment's settings (``*_proxy``, ``no_proxy``,
  ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) are asked of the Session once
  per URL, ``trust_env`` and snapshot of ``os.environ``: a change to the
  environment is seen by the next request, as before;
* headers are merged as ``Session.request`` merges them (the Session's,
  then the request's; a ``None`` value drops one) and validated by requests;
  the body is JSON-encoded by requests (NaN refused);
* cookies the server sets are stored in the Session's jar, as
  ``Session.send`` stores them.

Redirects are never followed (nor is the next request built). A Session
this cannot stand in for exactly — a subclass, one holding cookies, hooks,
auth, params, proxies or a client certificate of its own — is sent through
``Session.request`` as before.

Thread-safety: the caches are module-level dicts, read and replaced whole
under the GIL; two threads missing at once both compute the same value.
Each cache is cleared when full, so memory stays bounded.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Any, Hashable, Mapping

import requests
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict

from .wire import may_carry_secret

__all__ = ["send_direct", "direct_eligible", "SendCache", "cache_of"]

_CACHE_LIMIT = 256


class SendCache:
    """What :func:`send_direct` worked out for one Session: prepared URLs,
    validated header sets, environment settings, each table bounded
    (cleared whole when full). Owned by its Session, which one lease holder
    uses at a time (requests' Sessions are not shared between threads), so
    it has no lock."""

    __slots__ = ("urls", "settings", "headers")

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.settings: dict[Hashable, tuple[Any, Any, Any]] = {}
        self.headers: dict[Hashable, "OrderedDict[str, tuple[str, Any]]"] = {}

    def __repr__(self) -> str:
        return f"<SendCache {len(self.urls)} urls, {len(self.settings)} settings, {len(self.headers)} header sets>"

    def clear(self) -> None:
        self.urls.clear()
        self.settings.clear()
        self.headers.clear()


def cache_of(session: requests.Session) -> SendCache:
    """``session``'s :class:`SendCache`, made on first use."""
    cache = session.__dict__.get("_llm_sync_send_cache")
    if cache is None:
        cache = session.__dict__["_llm_sync_send_cache"] = SendCache()
    return cache


def direct_eligible(session: requests.Session) -> bool:
    """Whether :func:`send_direct` sends exactly what ``session.request`` would."""
    return (type(session) is requests.Session and session.auth is None and not session.params
            and not session.proxies and session.cert is None and not session.hooks.get("response")
            and isinstance(session.verify, (bool, str)) and not session.cookies)


def send_direct(session: requests.Session, method: str, url: str, json: Any, headers: Mapping[str, Any],
                auth: Any, timeout: Any, stream: bool) -> requests.Response:
    """``session.request(method, url, json=json, headers=headers, auth=auth,
    timeout=timeout, stream=stream, allow_redirects=False)``, without its
    per-call overhead when the Session allows it (see the module docstring)."""
    if not direct_eligible(session):
        return session.request(method, url, json=json, headers=headers, auth=auth, timeout=timeout,
                               stream=stream, allow_redirects=False)
    cache = cache_of(session)
    prepared = requests.PreparedRequest()
    prepared.prepare_method(method)
    prepared.url = target = _prepared_url(url, cache.urls)
    prepared.headers = _prepared_headers(session.headers, headers, cache.headers)
    prepared.prepare_body(None, None, json)
    if auth is not None:
        prepared = auth(prepared)
    proxies, verify, cert = _environment(session, target, cache.settings)
    adapter = session.get_adapter(url=target)
    started = time.perf_counter()
    response = adapter.send(prepared, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
    response.elapsed = timedelta(seconds=time.perf_counter() - started)
    if "set-cookie" in response.headers:
        extract_cookies_to_jar(session.cookies, prepared, response.raw)  # type: ignore[no-untyped-call]
    if not stream:
        response.content
    return response


def _prepared_url(url: str, _urls: dict[str, str]) -> str:
    """``PreparedRequest.prepare_url(url, None)``'s result, once per URL (a
    URL that fails is never cached: it fails the same way every time)."""
    prepared = _urls.get(url)
    if prepared is None:
        probe = requests.PreparedRequest()
        probe.prepare_url(url, None)
        assert probe.url is not None
        prepared = probe.url
        if len(_urls) >= _CACHE_LIMIT:
            _urls.clear()
        _urls[url] = prepared
    return prepared


def _prepared_headers(session_headers: Mapping[str, Any], headers: Mapping[str, Any],
                      _headers: dict[Hashable, "OrderedDict[str, tuple[str, Any]]"]) -> CaseInsensitiveDict[Any]:
    """``PreparedRequest.prepare_headers`` of the merged headers: validated
    once per distinct (Session headers, request headers) — the same on
    nearly every call (no key among them: that is added by the lease's
    auth) — and handed out as a fresh copy each time (the request's own to
    change). Headers requests refuses are never cached: they fail alike
    every time."""
    store = getattr(session_headers, "_store", None)
    if type(session_headers) is not CaseInsensitiveDict or type(store) is not OrderedDict:
        return _validated(session_headers, headers)
    try:
        key = (tuple(store.values()), tuple(headers.items()) if headers else ())
        found = _headers.get(key)
    except TypeError:  # a value that cannot be a key (never a valid header anyway)
        return _validated(session_headers, headers)
    if found is None:
        found = _validated(session_headers, headers)._store  # type: ignore[attr-defined]
        if any(may_carry_secret(name) for name in found):
            return _copy(found)  # a credential among them (a gateway's token): never kept here
        if len(_headers) >= _CACHE_LIMIT:
            _headers.clear()
        _headers[key] = found
    return _copy(found)


def _copy(store: "OrderedDict[str, tuple[str, Any]]") -> CaseInsensitiveDict[Any]:
    prepared: CaseInsensitiveDict[Any] = CaseInsensitiveDict()
    prepared._store = OrderedDict(store)  # type: ignore[attr-defined]
    return prepared


def _validated(session_headers: Mapping[str, Any], headers: Mapping[str, Any]) -> CaseInsensitiveDict[Any]:
    probe = requests.PreparedRequest()
    probe.prepare_headers(_merged_headers(session_headers, headers))
    return probe.headers


def _merged_headers(session_headers: Mapping[str, Any], headers: Mapping[str, Any]) -> CaseInsensitiveDict[Any]:
    """``requests.sessions.merge_setting`` for headers: the request's win
    (case-insensitively), ``None`` values dropped."""
    merged: CaseInsensitiveDict[Any] = CaseInsensitiveDict(session_headers)
    if headers:
        merged.update(headers)
    for name in [name for name, value in merged.items() if value is None]:
        del merged[name]
    return merged


def _environment(session: requests.Session, url: str,
                 _settings: dict[Hashable, tuple[Any, Any, Any]]) -> tuple[Any, Any, Any]:
    """(proxies, verify, cert) as ``Session.merge_environment_settings``
    gives them for ``url``; cached by what they depend on."""
    snapshot = None
    if session.trust_env:
        environ = getattr(os.environ, "_data", None)
        if not isinstance(environ, dict):  # pragma: no cover - not CPython's os.environ
            return _ask(session, url)
        snapshot = tuple(environ.items())
    key = (url, session.trust_env, session.verify, snapshot)
    found = _settings.get(key)
    if found is None:
        found = _ask(session, url)
        if len(_settings) >= _CACHE_LIMIT:
            _settings.clear()
        _settings[key] = found
    return found


def _ask(session: requests.Session, url: str) -> tuple[Any, Any, Any]:
    settings = session.merge_environment_settings(url, {}, None, None, None)
    return settings["proxies"], settings["verify"], settings["cert"]


