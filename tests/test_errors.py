"""Status → error class for both providers' error bodies; retry hints; quota;
odd bodies; redirects; declared attributes; pickling; the drawn tree; keys
never leak."""

from __future__ import annotations

import inspect
import pickle
import re
import time
from email.utils import formatdate
from typing import Any, Iterator

import pytest
import responses

from llm_sync import LLMManager
from llm_sync.errors import (
    LLMAuthenticationError,
    LLMClosedError,
    LLMConfigError,
    LLMConnectionError,
    LLMError,
    LLMPoolExhaustedError,
    LLMProviderError,
    LLMQuotaExceededError,
    LLMRateLimitError,
    LLMStreamError,
    LLMTimeoutError,
    LLMTransportError,
    LLMValidationError,
    error_class_for_status,
    redact,
)

ANTHROPIC_BASE = "https://api.anthropic.test"
OPENAI_BASE = "https://api.openai.test"
URLS = {
    "anthropic": f"{ANTHROPIC_BASE}/v1/messages",
    "openai": f"{OPENAI_BASE}/v1/chat/completions",
}
REQUEST_ID_HEADER = {"anthropic": "request-id", "openai": "x-request-id"}
KEYS = {"anthropic": "sk-ant-test-SECRET-0001", "openai": "sk-test-SECRET-0002"}

# PROTOCOL.md's status table, with the error type each provider sends.
STATUS_TABLE = [
    (400, "invalid_request_error", LLMProviderError),
    (401, "authentication_error", LLMAuthenticationError),
    (403, "permission_error", LLMAuthenticationError),
    (404, "not_found_error", LLMProviderError),
    (408, "timeout_error", LLMProviderError),
    (409, "conflict_error", LLMProviderError),
    (413, "request_too_large", LLMProviderError),
    (429, "rate_limit_error", LLMRateLimitError),
    (500, "api_error", LLMProviderError),
    (529, "overloaded_error", LLMProviderError),
]


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager.from_dict({
        "providers": {
            "anthropic": {"api_keys": [KEYS["anthropic"]], "base_url": ANTHROPIC_BASE, "max_retries": 0},
            "openai": {"api_keys": [KEYS["openai"]], "base_url": OPENAI_BASE, "max_retries": 0},
        },
    }) as m:
        yield m


def error_body(provider: str, error_type: str, message: str, code: Any = None, **extra: Any) -> dict[str, Any]:
    if provider == "anthropic":
        error: dict[str, Any] = {"type": error_type, "message": message, **extra}
        return {"type": "error", "error": error, "request_id": "req_from_body"}
    return {"error": {"message": message, "type": error_type, "param": None, "code": code, **extra}}


def call(manager: LLMManager, provider: str) -> LLMError:
    with pytest.raises(LLMError) as info:
        manager.get_client(provider).complete("Hi")
    return info.value


def assert_pool_full(manager: LLMManager, provider: str) -> None:
    status = manager.get_status(provider)
    assert status["available_clients"] == status["total_clients"]


# --- the status table -----------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("status, error_type, cls", STATUS_TABLE)
def test_status_maps_to_class(mock, manager, provider, status, error_type, cls):
    mock.add(
        responses.POST, URLS[provider], status=status,
        json=error_body(provider, error_type, f"problem {status}"),
        headers={REQUEST_ID_HEADER[provider]: f"req_{status}"},
    )
    error = call(manager, provider)
    assert type(error) is cls
    assert isinstance(error, LLMProviderError)
    assert error.status_code == status
    assert error.error_type == error_type
    assert error.request_id == f"req_{status}"
    assert error.provider == provider
    assert f"problem {status}" in error.message
    assert f"status={status}" in str(error)
    assert len(mock.calls) == 1
    assert_pool_full(manager, provider)
    failed = manager.get_status(provider)["client_statuses"][0]["failed_requests"]
    assert failed == 1


def test_anthropic_request_id_falls_back_to_body(mock, manager):
    mock.add(responses.POST, URLS["anthropic"], status=500, json=error_body("anthropic", "api_error", "boom"))
    error = call(manager, "anthropic")
    assert error.request_id == "req_from_body"


def test_openai_error_type_falls_back_to_code(mock, manager):
    mock.add(responses.POST, URLS["openai"], status=404,
             json={"error": {"message": "no such model", "type": None, "code": "model_not_found"}})
    error = call(manager, "openai")
    assert type(error) is LLMProviderError
    assert error.error_type == "model_not_found"
    assert error.code == "model_not_found"


@pytest.mark.parametrize("status", [402, 418, 422, 502, 503, 504])
def test_unlisted_statuses_are_plain_provider_errors(status):
    assert error_class_for_status(status) is LLMProviderError


def test_exception_tree():
    assert issubclass(LLMAuthenticationError, LLMProviderError)
    assert issubclass(LLMRateLimitError, LLMProviderError)
    assert issubclass(LLMQuotaExceededError, LLMProviderError)
    assert not issubclass(LLMQuotaExceededError, LLMRateLimitError)
    assert issubclass(LLMConnectionError, LLMTransportError)
    assert issubclass(LLMTimeoutError, LLMTransportError)
    assert issubclass(LLMStreamError, LLMConnectionError)
    assert issubclass(LLMPoolExhaustedError, LLMTimeoutError)
    assert issubclass(LLMValidationError, ValueError)
    for cls in (LLMConfigError, LLMValidationError, LLMClosedError, LLMTransportError, LLMProviderError):
        assert issubclass(cls, LLMError)


# --- retry-after ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize(
    "headers, low, high",
    [
        ({"retry-after-ms": "1500"}, 1.5, 1.5),
        ({"retry-after-ms": "250", "retry-after": "30"}, 0.25, 0.25),  # ms wins
        ({"retry-after": "7"}, 7.0, 7.0),
        ({"retry-after": "0.5"}, 0.5, 0.5),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0, 4.0),  # bad ms falls through
        ({}, None, None),
        ({"retry-after": "not a date"}, None, None),
    ],
)
def test_rate_limit_retry_after(mock, manager, provider, headers, low, high):
    code = "rate_limit_exceeded" if provider == "openai" else None
    error_type = "rate_limit_error" if provider == "anthropic" else "requests"
    mock.add(responses.POST, URLS[provider], status=429,
             json=error_body(provider, error_type, "slow down", code=code), headers=headers)
    error = call(manager, provider)
    assert type(error) is LLMRateLimitError
    if low is None:
        assert error.retry_after is None
    else:
        assert low <= error.retry_after <= high


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_rate_limit_retry_after_http_date(mock, manager, provider):
    when = formatdate(time.time() + 30, usegmt=True)
    mock.add(responses.POST, URLS[provider], status=429,
             json=error_body(provider, "rate_limit_error", "slow down"), headers={"retry-after": when})
    error = call(manager, provider)
    assert isinstance(error, LLMRateLimitError)
    assert 27.0 <= error.retry_after <= 31.0


def test_retry_after_date_in_the_past_is_zero(mock, manager):
    when = formatdate(time.time() - 3600, usegmt=True)
    mock.add(responses.POST, URLS["openai"], status=429,
             json=error_body("openai", "requests", "slow down", code="rate_limit_exceeded"),
             headers={"retry-after": when})
    assert call(manager, "openai").retry_after == 0.0


# --- quota ----------------------------------------------------------------------------


def test_openai_insufficient_quota(mock, manager):
    mock.add(
        responses.POST, URLS["openai"], status=429,
        json=error_body("openai", "insufficient_quota",
                        "You exceeded your current quota, please check your plan and billing details.",
                        code="insufficient_quota"),
        headers={"x-request-id": "req_q", "retry-after": "20"},
    )
    error = call(manager, "openai")
    assert type(error) is LLMQuotaExceededError
    assert not isinstance(error, LLMRateLimitError)
    assert error.status_code == 429
    assert error.error_type == "insufficient_quota"
    assert error.request_id == "req_q"
    assert error.retry_after is None
    assert len(mock.calls) == 1


def test_openai_insufficient_quota_as_code_only(mock, manager):
    mock.add(responses.POST, URLS["openai"], status=429,
             json={"error": {"message": "quota", "type": "requests", "code": "insufficient_quota"}})
    assert type(call(manager, "openai")) is LLMQuotaExceededError


def test_anthropic_spend_limit(mock, manager):
    body = error_body(
        "anthropic", "rate_limit_error",
        "You have reached your specified API usage limits. You will regain access on 2026-07-01 at 00:00 UTC.",
        details={"error_code": "enforced_spend_limit_reached"},
    )
    mock.add(responses.POST, URLS["anthropic"], status=429, json=body, headers={"request-id": "req_spend"})
    error = call(manager, "anthropic")
    assert type(error) is LLMQuotaExceededError
    assert error.status_code == 429
    assert error.error_type == "rate_limit_error"
    assert error.request_id == "req_spend"
    assert error.retry_after is None
    assert len(mock.calls) == 1


def test_anthropic_plain_rate_limit_is_not_quota(mock, manager):
    mock.add(responses.POST, URLS["anthropic"], status=429,
             json=error_body("anthropic", "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
             headers={"retry-after": "12"})
    error = call(manager, "anthropic")
    assert type(error) is LLMRateLimitError
    assert error.retry_after == 12.0


# --- odd bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("status, body", [
    (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    (503, b"upstream connect error or disconnect/reset before headers"),
    (500, b""),
    (401, b"Unauthorized"),
])
def test_non_json_error_body(mock, manager, provider, status, body):
    mock.add(responses.POST, URLS[provider], status=status, body=body, content_type="text/html")
    error = call(manager, provider)
    assert type(error) is error_class_for_status(status)
    assert error.status_code == status
    assert error.error_type is None
    assert error.message  # never empty
    if body:
        assert body[:20].decode() in error.message


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("body", [b'{"id": "msg_1", "content": [', b"<html>OK</html>", b'["a", "list"]'])
def test_200_with_invalid_json_is_invalid_response(mock, manager, provider, body):
    mock.add(responses.POST, URLS[provider], status=200, body=body, content_type="application/json",
             headers={REQUEST_ID_HEADER[provider]: "req_bad"})
    error = call(manager, provider)
    assert type(error) is LLMProviderError
    assert 500 <= error.status_code < 600
    assert error.error_type == "invalid_response"
    assert error.provider == provider
    assert_pool_full(manager, provider)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_not_followed(mock, manager, provider, status):
    evil = "https://evil.test/collect"
    mock.add(responses.POST, URLS[provider], status=status, body=b"", headers={"Location": evil})
    mock.add(responses.POST, evil, status=200, json={"stolen": True})
    error = call(manager, provider)
    assert isinstance(error, LLMProviderError)
    assert error.status_code == status
    assert len(mock.calls) == 1
    assert mock.calls[0].request.url == URLS[provider]
    assert "redirect" in error.message
    assert_pool_full(manager, provider)


def test_redirect_on_stream_is_not_followed(mock, manager):
    evil = "https://evil.test/collect"
    mock.add(responses.POST, URLS["anthropic"], status=302, body=b"", headers={"Location": evil})
    mock.add(responses.POST, evil, status=200, body=b"event: message_stop\ndata: {}\n\n")
    with pytest.raises(LLMProviderError) as info:
        manager.get_client("anthropic").stream("Hi")
    assert info.value.status_code == 302
    assert len(mock.calls) == 1
    assert_pool_full(manager, "anthropic")


# --- declared attributes, pickling and secrecy ------------------------------------------


def _all_error_classes() -> list[type[LLMError]]:
    found, todo = [], [LLMError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: c.__name__)


ALL_CLASSES = _all_error_classes()

# A non-default value for every declared attribute (bools are flipped).
SAMPLE_VALUES: dict[str, Any] = {
    "status_code": 503,
    "error_type": "overloaded_error",
    "code": "overloaded",
    "request_id": "req_42",
    "provider": "anthropic",
    "retry_after": 2.5,
    "headers": {"retry-after": "2", "x-request-id": "req_42"},
    "partial_text": "Once upon a time",
    "kind": "connect",
    "raw_text": '{"name": 3}',
    "errors": ("name: Input should be a valid string",),
}


def full_sample(cls: type[LLMError]) -> LLMError:
    attrs = {}
    for name in cls._fields:
        default = getattr(cls, name)
        attrs[name] = (not default) if isinstance(default, bool) else SAMPLE_VALUES[name]
        assert attrs[name] != default, name
    return cls(f"{cls.__name__} failed", **attrs)


def test_every_class_is_covered():
    names = {cls.__name__ for cls in ALL_CLASSES}
    assert names == {
        "LLMError", "LLMConfigError", "LLMValidationError", "LLMClosedError", "LLMPoolExhaustedError",
        "LLMTransportError", "LLMConnectionError", "LLMTimeoutError", "LLMStreamError", "LLMProviderError",
        "LLMAuthenticationError", "LLMRateLimitError", "LLMQuotaExceededError",
        "LLMStructuredOutputError",
    }


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_attribute_is_declared_with_a_default(cls):
    for name in cls._fields:
        assert hasattr(cls, name), name
        assert any(name in inspect.get_annotations(base) for base in cls.__mro__), name
    error = cls("plain")
    for name in cls._fields:
        assert getattr(error, name) == getattr(cls, name)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_errors_pickle_round_trip_with_every_attribute(cls):
    error = full_sample(cls)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert clone.message == error.message
    assert str(clone) == str(error)
    assert repr(clone) == repr(error)
    assert clone.args == error.args
    for name in cls._fields:
        assert getattr(clone, name) == getattr(error, name), name


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_defaults_survive_pickle(cls):
    clone = pickle.loads(pickle.dumps(cls("plain")))
    for name in cls._fields:
        assert getattr(clone, name) == getattr(cls, name), name


def test_attribute_set_after_construction_survives_pickle():
    error = LLMTimeoutError("slow")
    error.partial_text = "Once"
    assert pickle.loads(pickle.dumps(error)).partial_text == "Once"


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_undeclared_attribute_is_a_programming_error(cls):
    with pytest.raises(TypeError, match="no attribute 'colour'"):
        cls("x", colour="red")
    error = cls("x")
    with pytest.raises(AttributeError, match="colour"):
        error.colour = "red"  # type: ignore[attr-defined]


def test_attributes_live_on_the_class_that_carries_them():
    assert "cancelled" not in LLMConnectionError._fields
    assert "deadline_passed" not in LLMConnectionError._fields
    assert "status_code" not in LLMTransportError._fields
    assert "local" not in LLMProviderError._fields
    assert LLMError._fields == LLMConfigError._fields == LLMValidationError._fields == LLMClosedError._fields == ()


def test_a_declaration_without_default_is_refused():
    with pytest.raises(TypeError, match="without a default"):
        class Broken(LLMError):
            colour: str


def test_streaming_can_rebuild_an_error_from_its_attributes():
    """streaming.py rebuilds an error with a redacted message from ``_attrs``."""
    error = LLMProviderError("boom", status_code=500, mid_stream=True)
    error.partial_text = "abc"
    rebuilt = type(error)("boom again", **error._attrs)
    assert (rebuilt.status_code, rebuilt.mid_stream, rebuilt.partial_text) == (500, True, "abc")
    assert rebuilt.request_id is None


def test_pool_exhaustion_is_a_timeout_that_sent_nothing():
    error = LLMPoolExhaustedError("no client became free within 1.0s")
    assert isinstance(error, LLMTimeoutError) and isinstance(error, LLMTransportError)
    assert error.sent is False
    assert error.deadline_passed is False


def test_local_rate_limit_is_told_from_a_server_429():
    local = LLMRateLimitError.local_limit("rate limit: no key can admit this call", retry_after=1.5,
                                          provider="openai")
    assert type(local) is LLMRateLimitError
    assert local.local is True
    assert local.status_code is None and local.headers is None
    assert (local.retry_after, local.provider) == (1.5, "openai")
    assert pickle.loads(pickle.dumps(local)).local is True
    server = LLMRateLimitError("slow down", status_code=429, retry_after=1.5)
    assert server.local is False


def test_server_429_is_not_local(mock, manager):
    mock.add(responses.POST, URLS["openai"], status=429,
             json=error_body("openai", "requests", "slow down", code="rate_limit_exceeded"))
    error = call(manager, "openai")
    assert isinstance(error, LLMRateLimitError)
    assert error.local is False and error.status_code == 429


def test_closed_error_is_an_llm_error_only():
    assert LLMClosedError.__mro__[1] is LLMError
    assert not issubclass(LLMClosedError, (LLMTransportError, LLMProviderError))


def _drawn_tree() -> dict[str, str | None]:
    """class name → parent name, as drawn in the errors module docstring."""
    from llm_sync import errors

    drawn: dict[str, str | None] = {}
    stack: list[str] = []
    for line in errors.__doc__.split("\n\n")[1].splitlines():
        match = re.search(r"LLM[A-Za-z]*Error", line)
        if not match or re.search(r"[├└]── |^\s*LLMError", line) is None:
            continue
        depth = (match.start() - 4) // 4
        stack[depth:] = [match.group()]
        drawn[match.group()] = stack[depth - 1] if depth else None
    return drawn


def test_the_drawn_tree_is_complete_and_true():
    drawn = _drawn_tree()
    assert set(drawn) == {cls.__name__ for cls in ALL_CLASSES}
    for cls in ALL_CLASSES:
        parent = cls.__mro__[1].__name__ if cls is not LLMError else None
        assert drawn[cls.__name__] == parent, cls.__name__


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_key_in_message_never_reaches_str_repr_or_pickle(cls):
    key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"
    error = full_sample(cls)
    error = cls(f"failed with {key}", **error._attrs)
    clone = pickle.loads(pickle.dumps(error))
    for text in (str(error), repr(error), str(clone), repr(clone)):
        assert key not in text
    assert key.encode() not in pickle.dumps(error)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("status", [400, 401, 403, 429, 500])
def test_key_echoed_by_server_never_leaks(mock, manager, provider, status):
    key = KEYS[provider]
    message = f"Incorrect API key provided: {key}. Header was 'Authorization: Bearer {key}'"
    mock.add(responses.POST, URLS[provider], status=status,
             json=error_body(provider, "authentication_error", message, code="invalid_api_key"))
    error = call(manager, provider)
    clone = pickle.loads(pickle.dumps(error))
    for text in (str(error), repr(error), error.message, str(clone), repr(clone)):
        assert key not in text
    assert key.encode() not in pickle.dumps(error)
    assert "SECRET" not in str(error)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_key_in_non_json_body_never_leaks(mock, manager, provider):
    key = KEYS[provider]
    mock.add(responses.POST, URLS[provider], status=400, body=f"bad header x-api-key={key}".encode())
    error = call(manager, provider)
    assert key not in str(error) and key not in repr(error)
    assert key.encode() not in pickle.dumps(error)


def test_error_constructed_with_key_in_message_is_redacted():
    key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"
    for cls in (LLMError, LLMProviderError, LLMConnectionError, LLMConfigError):
        error = cls(f"failed with {key}")
        assert key not in str(error) and key not in repr(error)
        assert key.encode() not in pickle.dumps(error)


@pytest.mark.parametrize("text, secrets, must_not_contain, must_contain", [
    ("key sk-ant-api03-AbCdEf_123-xyz here", (), "AbCdEf_123", "key sk-an*** here"),
    ("sk-proj-1234567890abcdef", (), "1234567890abcdef", "sk-pr***"),
    ("Authorization: Bearer abc.def.ghi rest", (), "abc.def.ghi", "Bearer *** rest"),
    ("my key is hunter2-secret-value!", ("hunter2-secret-value",), "hunter2", "my key is ***!"),
    ("no secrets in here, sk- alone", (), "***", "no secrets in here, sk- alone"),
])
def test_redact(text, secrets, must_not_contain, must_contain):
    out = redact(text, secrets)
    assert must_not_contain not in out
    assert must_contain in out


def test_redact_leaves_key_id_prefix_only():
    key = "sk-ant-test-SECRET-0001"
    out = redact(f"a {key} b {key}")
    assert out == "a sk-an*** b sk-an***"


def test_status_dict_and_manager_repr_never_hold_keys(manager):
    for provider, key in KEYS.items():
        assert key not in repr(manager.get_status(provider))
        assert key not in repr(manager.pool(provider))
        assert key not in repr(manager.pool(provider).clients)
    assert all(key not in repr(manager.config) for key in KEYS.values())


@pytest.mark.parametrize("header_name", ["authorization", "x-api-key"])
def test_key_that_does_not_look_like_a_key_is_masked_when_echoed(mock, header_name):
    """Compatible servers take any string as a key (vLLM ``--api-key``); an
    error body that echoes it must still not carry it into the error."""
    key = "token-abc123xyz"
    provider = "openai" if header_name == "authorization" else "anthropic"
    base = "http://127.0.0.1:8000/v1"
    url = base + ("/chat/completions" if provider == "openai" else "/messages")
    body = error_body(provider, "authentication_error", f"Invalid key {key} for this server")
    mock.add(responses.POST, url, status=401, json=body)
    with LLMManager.from_dict({"providers": {provider: {"api_keys": [key], "base_url": base, "max_retries": 0}}}) as m:
        error = call(m, provider)
    assert isinstance(error, LLMAuthenticationError)
    assert "Invalid key" in error.message
    assert key not in str(error) and key not in repr(error)
    assert key.encode() not in pickle.dumps(error)


# --- redact's pre-checks skip only patterns that cannot match ---------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llm_sync import errors as errors_module  # noqa: E402


def _redact_always_running_both_patterns(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = errors_module._KEYLIKE.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    return errors_module._URL_CREDENTIALS.sub(r"\1***@", text)


_PIECES = st.sampled_from(["sk-", "sk-ant-abc123", "Bearer ", "bearer x", "://", "@", "https://u:p@h/x", "a", " ",
                           "-", "_", "/", "redis://:pw@", "Bearer\tTOKEN", "é", "sk", "-ant"])


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.lists(_PIECES, max_size=8).map("".join)),
       secrets=st.lists(st.sampled_from(["", "TOKEN", "sk-ant-abc123", "pw"]), max_size=2).map(tuple))
def test_redact_equals_running_every_pattern(text: str, secrets: tuple[str, ...]):
    assert errors_module.redact(text, secrets) == _redact_always_running_both_patterns(text, secrets)


def test_redact_masks_credentials_given_as_url_query_parameters():
    from llm_sync.errors import redact

    assert redact("redis://127.0.0.1:6379/15?password=s3cret&db=2") == "redis://127.0.0.1:6379/15?password=***&db=2"
    assert redact("unix:///tmp/r.sock?db=0&Password=abc") == "unix:///tmp/r.sock?db=0&Password=***"
    assert redact("see https://example.test/?q=1") == "see https://example.test/?q=1"
