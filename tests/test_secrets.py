"""No secret in any config error, whatever the entry point; unsendable keys,
headers and base URLs refused when the manager is built; URL credentials
redacted everywhere."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from pydantic import SecretStr

from llm_sync import LLMConfig, LLMConnectionError, LLMManager
from llm_sync.config import ProviderConfig, config_from_env, load_config
from llm_sync.errors import LLMConfigError, LLMError, redact
from llm_sync.middleware.logging import LoggingMiddleware
from llm_sync.providers import create_provider
from llm_sync.transport import translate_transport_error

GOOD = "tok3n-GOOD-first-4242"
# Keys that do not look like keys (so the generic sk-... masking cannot
# hide them): the text must never appear because it was never written.
SECRET_A, SECRET_B = "Qx7SECRETaaaa9", "Zw3SECRETbbbb8"
PASSWORD = "hunter2SECRETpw"


def leaks(error: BaseException, *secrets: str) -> list[str]:
    """Every secret found in the error's str, repr, pickle, args, cause or context."""
    texts = [str(error), repr(error), repr(error.args), repr(pickle.dumps(error))]
    for linked in (error.__cause__, error.__context__):
        if linked is not None:
            texts += [str(linked), repr(linked)]
    return [s for s in secrets if any(s in text for text in texts)]


# --- keys: refused at build, named by index, never shown ---------------------------

BAD_KEYS = {
    "newline (two keys pasted)": f"{SECRET_A}\n{SECRET_B}",
    "carriage return": f"{SECRET_A}\r",
    "NUL": f"{SECRET_A}\x00{SECRET_B}",
    "DEL": f"{SECRET_A}\x7f",
    "non-Latin-1": f"{SECRET_A}\u2014{SECRET_B}",
    "lone surrogate": f"{SECRET_A}\ud800",
    "leading space": f" {SECRET_A}",
    "trailing newline": f"{SECRET_A}\n",
    "space inside (YAML folded two keys)": f"{SECRET_A} {SECRET_B}",
    "tab": f"{SECRET_A}\t",
}


def _yaml(tmp_path: Path, key: str) -> LLMConfig:
    path = tmp_path / "llm.yaml"
    escaped = key.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    path.write_text(f'providers:\n  vllm:\n    kind: openai\n    base_url: http://127.0.0.1:8000/v1\n'
                    f'    api_keys:\n      - {GOOD}\n      - "{escaped}"\n', encoding="utf-8")
    return load_config(path, env={})


ENTRY = "vllm", {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}
ENTRY_POINTS: dict[str, Callable[[Any, str], Any]] = {
    "dict": lambda tmp, key: load_config({"providers": {ENTRY[0]: {**ENTRY[1], "api_keys": [GOOD, key]}}}, env={}),
    "manager": lambda tmp, key: LLMManager({"providers": {ENTRY[0]: {**ENTRY[1], "api_keys": [GOOD, key]}}}),
    "yaml": _yaml,
    "env interpolation": lambda tmp, key: load_config(
        {"providers": {ENTRY[0]: {**ENTRY[1], "api_keys": [GOOD, "${THE_KEY}"]}}}, env={"THE_KEY": key}),
    "LLMConfig(...)": lambda tmp, key: LLMConfig(providers={ENTRY[0]: {**ENTRY[1], "api_keys": [GOOD, key]}}),
    "model_validate": lambda tmp, key: LLMConfig.model_validate(
        {"providers": {ENTRY[0]: {**ENTRY[1], "api_keys": [GOOD, SecretStr(key)]}}}),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("what", BAD_KEYS)
def test_unsendable_key_is_refused_by_index_and_never_shown(entry, what, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LLMConfigError) as info:
        ENTRY_POINTS[entry](tmp_path, BAD_KEYS[what])
    assert "providers.vllm.api_keys[1]" in str(info.value)
    assert leaks(info.value, SECRET_A, SECRET_B, GOOD) == []
    assert SECRET_A not in caplog.text and SECRET_B not in caplog.text


def test_key_problems_are_told_apart():
    def problem(key: str) -> str:
        with pytest.raises(LLMConfigError) as info:
            load_config({"providers": {"anthropic": {"api_keys": [key]}}}, env={})
        return str(info.value)

    assert "two keys pasted together" in problem(f"{SECRET_A}\n{SECRET_B}")
    assert "leading or trailing whitespace" in problem(f"{SECRET_A}\n")
    assert "not Latin-1" in problem(f"{SECRET_A}\u2014")
    assert "control character" in problem(f"{SECRET_A}\x00")


def test_env_fallback_key_with_a_newline_is_refused():
    with pytest.raises(LLMConfigError) as info:
        config_from_env({"OPENAI_API_KEY": f"{SECRET_A}\n{SECRET_B}"})
    assert "providers.openai.api_keys[0]" in str(info.value)
    assert leaks(info.value, SECRET_A, SECRET_B) == []


def test_spaces_around_commas_still_separate_keys():
    config = load_config({"providers": {"anthropic": {"api_keys": f"{SECRET_A}, {SECRET_B}\t,{GOOD}"}}}, env={})
    assert [k.get_secret_value() for k in config.providers["anthropic"].api_keys] == [SECRET_A, SECRET_B, GOOD]


# --- every entry point: no pydantic error, no input echoed -----------------------------


@pytest.mark.parametrize("build", [
    lambda: LLMConfig(providers={"anthropic": {"api_keys": SECRET_A, "max_retries": "many"}}),
    lambda: LLMConfig(providers={"anthropic": {"api_keys": {SECRET_A: SECRET_B}}}),
    lambda: LLMConfig.model_validate({"providers": {"anthropic": {"api_keys": [SECRET_A], "timeout": SECRET_B}}}),
    lambda: LLMConfig.model_validate_json(f'{{"providers": {{"anthropic": {{"api_keys": 7, "x": "{SECRET_A}"}}}}}}'),
    lambda: ProviderConfig(api_keys=[SECRET_A], base_url=SECRET_B),
    lambda: ProviderConfig(api_keys=[SECRET_A, SECRET_A]),
])
def test_direct_construction_raises_a_config_error_without_the_input(build):
    with pytest.raises(LLMConfigError) as info:  # not pydantic's ValidationError, which prints the input
        build()
    assert leaks(info.value, SECRET_A, SECRET_B) == []
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_direct_construction_names_the_nested_path():
    with pytest.raises(LLMConfigError, match=r"providers\.anthropic\.max_retries"):
        LLMConfig(providers={"anthropic": {"api_keys": [GOOD], "max_retries": -1}})


def test_yaml_indentation_slip_never_prints_the_key_as_a_field(tmp_path):
    """The key lost its list dash and got a colon: pydantic calls it an
    unknown field of the endpoint."""
    path = tmp_path / "llm.yaml"
    path.write_text(f"providers:\n  openai:\n    api_keys:\n      - {GOOD}\n    {SECRET_A}:\n", encoding="utf-8")
    with pytest.raises(LLMConfigError) as info:
        load_config(path, env={})
    assert "providers.openai: an unknown field" in str(info.value)
    assert leaks(info.value, SECRET_A) == []


def test_a_misspelt_field_is_still_named():
    with pytest.raises(LLMConfigError, match=r"providers\.openai\.api_key: unknown field"):
        load_config({"providers": {"openai": {"api_key": [GOOD]}}}, env={})


def test_a_key_as_an_endpoint_name_is_not_shown():
    with pytest.raises(LLMConfigError) as info:
        load_config({"providers": {"openai": {"api_keys": [GOOD]}, f"{SECRET_A}+/=": {}}}, env={})
    assert leaks(info.value, SECRET_A) == []


def test_env_interpolation_error_path_hides_key_like_names():
    with pytest.raises(LLMConfigError) as info:
        load_config({"providers": {"openai": {"api_keys": [GOOD], SECRET_A + "xyz123": "${NOT_SET}"}}}, env={})
    assert "NOT_SET" in str(info.value) and "providers.openai." in str(info.value)
    assert leaks(info.value, SECRET_A) == []


@pytest.mark.parametrize("text", [
    f"providers:\n  openai:\n    api_keys: [*{SECRET_A}]\n",  # an undefined alias: YAML quotes its name
    f"providers:\n  openai:\n    api_keys: [!{SECRET_A} x]\n",  # an unknown tag: quoted too
])
def test_yaml_errors_never_quote_the_text(tmp_path, text):
    path = tmp_path / "llm.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LLMConfigError) as info:
        load_config(path, env={})
    assert "line 3" in str(info.value)
    assert leaks(info.value, SECRET_A) == []


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "llm.yaml"
    path.write_bytes(b"providers:\n  openai:\n    api_keys: [\xff\xfe]\n")
    with pytest.raises(LLMConfigError, match="not UTF-8"):
        load_config(path, env={})


# --- base_url ---------------------------------------------------------------------------


@pytest.mark.parametrize("url, words", [
    ("https://gw.test/v1?api-version=2024", "query string"),
    ("https://gw.test/v1#frag", "fragment"),
    ("https://gw.test:0", "port"),
    ("https://gw.test:65536", "port"),
    ("https://gw.test:https", "port"),
    ("https://[::1", "not a valid URL"),
    ("ftp://gw.test", "http"),
    ("https://", "host"),
    ("https://gw.test /v1", "whitespace"),
    ("https://gw.test/v1\n", "whitespace"),
    (f"https://user:{PASSWORD}@gw.test/v1", "credentials"),
    (f"https://{PASSWORD}@gw.test", "credentials"),
])
def test_bad_base_url_is_refused_at_build(url, words):
    with pytest.raises(LLMConfigError) as info:
        LLMManager({"providers": {"openai": {"api_keys": [GOOD], "base_url": url}}})
    assert "providers.openai.base_url" in str(info.value) and words in str(info.value)
    assert leaks(info.value, PASSWORD, *([url] if "gw.test" in url else [])) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1/", "http://[::1]:8000", "https://gw.test:443/openai",
                                 "https://gw.test/user@team/v1"])
def test_good_base_urls_are_accepted(url):
    load_config({"providers": {"openai": {"api_keys": [GOOD], "base_url": url}}}, env={})


# --- configured headers --------------------------------------------------------------------


@pytest.mark.parametrize("value, words", [
    (f"Bearer {SECRET_A}\r\nX-Evil: 1", "line break"),
    (f"{SECRET_A}\x00", "control character"),
    (f"{SECRET_A}\u2014", "not Latin-1"),
    (f" {SECRET_A}", "whitespace"),
    (7, "must be a string"),
])
def test_unsendable_header_value_is_refused_and_never_shown(value, words):
    with pytest.raises(LLMConfigError) as info:
        load_config({"providers": {"openai": {"api_keys": [GOOD], "headers": {"cf-aig-authorization": value}}}},
                    env={})
    message = str(info.value)
    assert "providers.openai.headers" in message and "cf-aig-authorization" in message
    assert words in message or "string" in message
    assert leaks(info.value, SECRET_A) == []


def test_invalid_header_name_is_refused_without_being_quoted():
    with pytest.raises(LLMConfigError) as info:
        load_config({"providers": {"openai": {"api_keys": [GOOD], "headers": {f"x: {SECRET_A}": "v"}}}}, env={})
    assert "not a valid HTTP header name" in str(info.value)
    assert leaks(info.value, SECRET_A) == []


@pytest.mark.parametrize("endpoint, header", [("openai", "Authorization"), ("anthropic", "X-Api-Key")])
def test_a_header_the_key_would_overwrite_is_refused(endpoint, header):
    with pytest.raises(LLMConfigError, match=f"providers.{endpoint}.headers: {header} is set from api_keys"):
        load_config({"providers": {endpoint: {"api_keys": [GOOD], "headers": {header: SECRET_A}}}}, env={})


def test_gateway_credential_header_is_allowed_but_never_shown():
    config = load_config({
        "providers": {"openai": {"api_keys": [GOOD], "headers": {"cf-aig-authorization": f"Bearer {SECRET_A}"}}},
        "rate_limit_backend": f"redis://:{PASSWORD}@redis.test:6379/0",
    }, env={})
    assert config.providers["openai"].headers["cf-aig-authorization"] == f"Bearer {SECRET_A}"
    for text in (repr(config), str(config), repr(config.providers["openai"])):
        assert SECRET_A not in text and PASSWORD not in text
    assert "cf-aig-authorization" in repr(config) and "redis://***@redis.test" in repr(config)


# --- redaction of URL credentials -------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (f"GET http://user:{PASSWORD}@gw.test/v1 failed", "GET http://***@gw.test/v1 failed"),
    (f"redis://:{PASSWORD}@cache:6379/0", "redis://***@cache:6379/0"),
    (f"https://{PASSWORD}@gw.test", "https://***@gw.test"),
    (f"https://u:p@ss{PASSWORD}@gw.test/x", "https://***@gw.test/x"),  # an unescaped @ in the password
    ("https://gw.test/users/a@b.c?to=x@y", "https://gw.test/users/a@b.c?to=x@y"),  # not credentials
    ("mail a@b.c", "mail a@b.c"),
])
def test_redact_masks_url_credentials(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("cls", [LLMError, LLMConfigError, LLMConnectionError])
def test_errors_never_keep_url_credentials(cls):
    error = cls(f"could not reach https://user:{PASSWORD}@gw.test/v1")
    assert leaks(error, PASSWORD) == []
    assert "https://***@gw.test/v1" in str(error)


def test_transport_errors_never_show_url_credentials():
    url = f"https://user:{PASSWORD}@gw.test/v1/chat/completions?api-key={SECRET_A}"
    for exc in (requests.exceptions.ConnectionError(f"Max retries exceeded with url: {url}"),
                requests.exceptions.InvalidURL(url), requests.exceptions.ReadTimeout(url)):
        error = translate_transport_error(exc, url)
        assert leaks(error, PASSWORD, SECRET_A) == [], error


def test_logged_errors_never_show_url_credentials(caplog):
    caplog.set_level(logging.DEBUG)
    error = LLMConnectionError(f"could not connect to http://u:{PASSWORD}@gw.test")
    LoggingMiddleware().process_error(error, {"provider": "openai", "model": "m", "client_id": "openai-0"})
    assert "could not connect" in caplog.text and PASSWORD not in caplog.text


def test_provider_repr_never_shows_url_credentials():
    provider = create_provider("openai", f"http://u:{PASSWORD}@gw.test/v1")
    assert PASSWORD not in repr(provider) and "gw.test" in repr(provider)
