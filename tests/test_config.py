"""Configuration: interpolation, keys, rate limits, timeouts, unknown fields,
secrecy, YAML files and the environment fallback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from llm_sync import LLMConfig, LLMManager, LLMProvider
from llm_sync.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    RateLimitConfig,
    config_from_env,
    load_config,
)
from llm_sync.errors import LLMConfigError

KEY0 = "sk-ant-test-SECRET-0001"
KEY1 = "sk-ant-test-SECRET-0002"
KEY2 = "sk-ant-test-SECRET-0003"
A = LLMProvider.ANTHROPIC
O = LLMProvider.OPENAI


def cfg(env: dict[str, str] | None = None, top: dict[str, Any] | None = None, **provider: Any) -> LLMConfig:
    entry = {"api_keys": [KEY0], **provider}
    return load_config({"providers": {"anthropic": entry}, **(top or {})}, env=env or {})


def config_error(**kwargs: Any) -> str:
    with pytest.raises(LLMConfigError) as info:
        cfg(**kwargs)
    return str(info.value)


def keys_of(config: LLMConfig, provider: LLMProvider = A) -> list[str]:
    return [k.get_secret_value() for k in config.providers[provider].api_keys]


# --- ${ENV} interpolation ------------------------------------------------------------


def test_env_variable_is_substituted():
    config = cfg(env={"MY_KEY": KEY1}, api_keys=["${MY_KEY}"])
    assert keys_of(config) == [KEY1]


def test_env_variable_inside_a_longer_string():
    config = cfg(env={"HOST": "gw.test", "PORT": "8443"}, base_url="https://${HOST}:${PORT}/anthropic")
    assert config.providers[A].base_url == "https://gw.test:8443/anthropic"


def test_env_default_used_when_unset():
    config = cfg(env={}, api_keys=["${MISSING_KEY:-" + KEY2 + "}"], base_url="${URL:-http://127.0.0.1:8000}")
    assert keys_of(config) == [KEY2]
    assert config.providers[A].base_url == "http://127.0.0.1:8000"


def test_env_value_wins_over_default():
    config = cfg(env={"URL": "http://10.0.0.1:9000"}, base_url="${URL:-http://127.0.0.1:8000}")
    assert config.providers[A].base_url == "http://10.0.0.1:9000"


def test_env_empty_default_is_allowed():
    config = cfg(env={}, models=["claude-x${SUFFIX:-}"])
    assert config.providers[A].models == ["claude-x"]


def test_missing_env_variable_names_variable_and_field():
    message = config_error(env={"OTHER": "x"}, api_keys=[KEY0, "${SECOND_KEY}"])
    assert "SECOND_KEY" in message
    assert "providers.anthropic.api_keys[1]" in message


def test_missing_env_in_nested_field():
    message = config_error(env={}, top={"pool": {"max_size": "${POOL_SIZE}"}})
    assert "POOL_SIZE" in message and "pool.max_size" in message


def test_env_does_not_come_from_os_environ_when_env_given(monkeypatch):
    monkeypatch.setenv("ONLY_IN_OS", KEY1)
    with pytest.raises(LLMConfigError) as info:
        cfg(env={"SOMETHING": "else"}, api_keys=["${ONLY_IN_OS}"])
    assert "ONLY_IN_OS" in str(info.value)


def test_os_environ_is_the_default_env(monkeypatch):
    monkeypatch.setenv("LLM_SYNC_TEST_KEY", KEY1)
    config = load_config({"providers": {"anthropic": {"api_keys": ["${LLM_SYNC_TEST_KEY}"]}}})
    assert keys_of(config) == [KEY1]


# --- keys -------------------------------------------------------------------------------


def test_comma_separated_keys_string():
    assert keys_of(cfg(api_keys=f"{KEY0}, {KEY1},{KEY2}")) == [KEY0, KEY1, KEY2]


def test_comma_separated_keys_from_env_inside_list():
    config = cfg(env={"KEYS": f"{KEY0},{KEY1}"}, api_keys=["${KEYS}", KEY2])
    assert keys_of(config) == [KEY0, KEY1, KEY2]


def test_empty_keys_rejected():
    assert "providers.anthropic.api_keys" in config_error(api_keys=[])
    assert "providers.anthropic.api_keys" in config_error(api_keys=" , ")


def test_duplicate_keys_rejected():
    message = config_error(api_keys=[KEY0, KEY0])
    assert "same key twice" in message
    assert KEY0 not in message


def test_keys_are_secret_and_never_shown():
    config = cfg(api_keys=[KEY0, KEY1])
    for key in config.providers[A].api_keys:
        assert isinstance(key, SecretStr)
    for text in (repr(config), str(config), repr(config.providers[A]), str(config.model_dump())):
        assert KEY0 not in text and KEY1 not in text
    assert "SECRET" not in repr(config)
    with LLMManager(config) as manager:
        assert KEY0 not in repr(manager) and KEY0 not in repr(manager.get_status("anthropic"))


# --- rate limits ---------------------------------------------------------------------


def test_single_rate_limit_applies_to_every_key():
    config = cfg(api_keys=[KEY0, KEY1, KEY2], rate_limits={"requests_per_minute": 50})
    provider = config.providers[A]
    limits = [provider.limits_for_key(i) for i in range(3)]
    assert all(isinstance(l, RateLimitConfig) and l.requests_per_minute == 50 for l in limits)


def test_single_entry_list_applies_to_every_key():
    config = cfg(api_keys=[KEY0, KEY1], rate_limits=[{"input_tokens_per_minute": 4000}])
    provider = config.providers[A]
    assert provider.limits_for_key(0).input_tokens_per_minute == 4000
    assert provider.limits_for_key(1).input_tokens_per_minute == 4000


def test_per_key_rate_limits():
    config = cfg(
        api_keys=[KEY0, KEY1, KEY2],
        rate_limits=[{"requests_per_minute": 10}, {"requests_per_minute": 20}, {"requests_per_minute": 30}],
    )
    provider = config.providers[A]
    assert [provider.limits_for_key(i).requests_per_minute for i in range(3)] == [10, 20, 30]


def test_no_rate_limits():
    assert cfg().providers[A].limits_for_key(0) is None


def test_rate_limits_wrong_length():
    message = config_error(api_keys=[KEY0, KEY1, KEY2],
                           rate_limits=[{"requests_per_minute": 1}, {"requests_per_minute": 2}])
    assert "providers.anthropic" in message and "rate_limits" in message
    assert "2" in message and "3" in message


def test_rate_limit_bad_value_names_path():
    message = config_error(api_keys=[KEY0, KEY1], rate_limits=[{"requests_per_minute": 5}, {"requests_per_minute": 0}])
    assert "providers.anthropic.rate_limits[1].requests_per_minute" in message


# --- unknown and bad fields -----------------------------------------------------------


@pytest.mark.parametrize("kwargs, path", [
    ({"api_key": KEY0}, "providers.anthropic.api_key"),
    ({"rate_limits": [{"requests_per_min": 5}]}, "providers.anthropic.rate_limits[0].requests_per_min"),
    ({"timeout": {"connect": 1, "reed": 2}}, "providers.anthropic.timeout.reed"),
    ({"top": {"poool": {"max_size": 3}}}, "poool"),
    ({"top": {"pool": {"max_size": 2, "size": 3}}}, "pool.size"),
])
def test_unknown_field_named(kwargs, path):
    message = config_error(**kwargs)
    assert path in message
    assert "unknown field" in message


def test_unknown_provider_named():
    with pytest.raises(LLMConfigError) as info:
        load_config({"providers": {"gemini": {"api_keys": [KEY0]}}}, env={})
    assert "gemini" in str(info.value) and "providers" in str(info.value)


def test_no_providers_rejected():
    with pytest.raises(LLMConfigError) as info:
        load_config({"providers": {}}, env={})
    assert "providers" in str(info.value)


@pytest.mark.parametrize("kwargs, path", [
    ({"base_url": "api.anthropic.com"}, "providers.anthropic.base_url"),
    ({"max_retries": -1}, "providers.anthropic.max_retries"),
    ({"top": {"pool": {"max_size": 0}}}, "pool.max_size"),
    ({"top": {"pool": {"acquire_timeout": -5}}}, "pool.acquire_timeout"),
    ({"top": {"rate_limit_backend": "postgres://db"}}, "rate_limit_backend"),
    ({"top": {"on_backend_error": "explode"}}, "on_backend_error"),
    ({"top": {"local_share": 1.5}}, "local_share"),
])
def test_bad_values_name_the_field(kwargs, path):
    assert path in config_error(**kwargs)


def test_base_url_trailing_slash_dropped_and_backends_accepted():
    config = cfg(base_url="https://api.anthropic.test/", top={"rate_limit_backend": "redis://localhost:6379/0"})
    assert config.providers[A].base_url == "https://api.anthropic.test"
    assert config.rate_limit_backend == "redis://localhost:6379/0"


# --- timeouts -----------------------------------------------------------------------------


def test_default_timeout():
    timeout = cfg().providers[A].timeout
    assert (timeout.connect, timeout.read, timeout.total) == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, None)


@pytest.mark.parametrize("value, connect, read", [
    (30, min(30.0, DEFAULT_CONNECT_TIMEOUT), 30.0),
    (2.5, 2.5, 2.5),
    (120, DEFAULT_CONNECT_TIMEOUT, 120.0),
])
def test_timeout_number(value, connect, read):
    timeout = cfg(timeout=value).providers[A].timeout
    assert timeout.connect == connect
    assert timeout.read == read
    assert timeout.total is None


def test_timeout_mapping():
    timeout = cfg(timeout={"connect": 3, "read": 40, "total": 90}).providers[A].timeout
    assert (timeout.connect, timeout.read, timeout.total) == (3.0, 40.0, 90.0)
    partial = cfg(timeout={"read": 7}).providers[A].timeout
    assert (partial.connect, partial.read) == (DEFAULT_CONNECT_TIMEOUT, 7.0)


@pytest.mark.parametrize("value", [0, -1, True, "soon", {"connect": -1}, {"total": 0}])
def test_bad_timeout_named(value):
    assert "providers.anthropic.timeout" in config_error(timeout=value)


@pytest.mark.parametrize("value, field", [
    (float("inf"), "timeout"), (float("nan"), "timeout"),
    ({"connect": float("inf")}, "timeout.connect"), ({"read": float("inf")}, "timeout.read"),
    ({"read": float("nan")}, "timeout.read"), ({"total": float("nan")}, "timeout.total"),
    ({"total": float("inf")}, "timeout.total"), ({"total": "inf"}, "timeout.total"),
])
def test_a_timeout_must_be_finite(value, field):
    """inf is no bound, and nan compares false with every deadline."""
    message = config_error(timeout=value)
    assert f"providers.anthropic.{field}" in message and "finite" in message


# --- files and the environment ------------------------------------------------------


YAML = """
providers:
  anthropic:
    api_keys:
      - ${ANTHROPIC_TEST_KEY}
    models: [claude-test-1, claude-test-2]
    base_url: ${ANTHROPIC_TEST_URL:-https://api.anthropic.test}
    timeout: {connect: 2, read: 30}
    rate_limits:
      - requests_per_minute: 12
        input_tokens_per_minute: 5000
        output_tokens_per_minute: 2000
  openai:
    api_keys: "k-one,k-two"
    base_url: http://127.0.0.1:8000/v1
pool:
  max_size: 3
  acquire_timeout: 5
"""


def test_load_yaml_file(tmp_path: Path):
    path = tmp_path / "llm.yaml"
    path.write_text(YAML, encoding="utf-8")
    config = load_config(path, env={"ANTHROPIC_TEST_KEY": KEY0})
    anthropic = config.providers[A]
    assert keys_of(config) == [KEY0]
    assert anthropic.models == ["claude-test-1", "claude-test-2"]
    assert anthropic.base_url == "https://api.anthropic.test"
    assert (anthropic.timeout.connect, anthropic.timeout.read) == (2.0, 30.0)
    assert anthropic.limits_for_key(0).output_tokens_per_minute == 2000
    assert keys_of(config, O) == ["k-one", "k-two"]
    assert config.providers[O].base_url == "http://127.0.0.1:8000/v1"
    assert config.pool.max_size == 3 and config.pool.acquire_timeout == 5.0
    assert load_config(str(path), env={"ANTHROPIC_TEST_KEY": KEY0}) == config


def test_yaml_flow_list_with_quoted_env(tmp_path: Path):
    path = tmp_path / "llm.yaml"
    path.write_text('providers:\n  anthropic:\n    api_keys: ["${K1}", "${K2:-' + KEY2 + '}"]\n', encoding="utf-8")
    assert keys_of(load_config(path, env={"K1": KEY0})) == [KEY0, KEY2]


def test_load_yaml_file_missing_env(tmp_path: Path):
    path = tmp_path / "llm.yaml"
    path.write_text(YAML, encoding="utf-8")
    with pytest.raises(LLMConfigError) as info:
        load_config(path, env={})
    assert "ANTHROPIC_TEST_KEY" in str(info.value)
    assert "providers.anthropic.api_keys[0]" in str(info.value)


def test_manager_from_yaml(tmp_path: Path, monkeypatch):
    path = tmp_path / "llm.yaml"
    path.write_text(YAML, encoding="utf-8")
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", KEY0)
    with LLMManager.from_yaml(path) as manager:
        assert manager.get_client("anthropic").model == "claude-test-1"
        assert manager.get_status("anthropic")["total_clients"] == 3
        assert manager.get_status("openai")["total_clients"] == 3
        assert len(manager.get_status("openai")["client_statuses"]) == 2


@pytest.mark.parametrize("text, words", [
    ("providers: [unclosed", "YAML"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_yaml_file(tmp_path: Path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LLMConfigError) as info:
        load_config(path, env={})
    assert words in str(info.value)


def test_missing_yaml_file(tmp_path: Path):
    with pytest.raises(LLMConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert "nope.yaml" in str(info.value)


def test_config_from_env():
    config = config_from_env({
        "ANTHROPIC_API_KEY": f"{KEY0},{KEY1}",
        "OPENAI_API_KEY": "sk-test-openai",
        "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
    })
    assert keys_of(config) == [KEY0, KEY1]
    assert keys_of(config, O) == ["sk-test-openai"]
    assert config.providers[O].base_url == "http://127.0.0.1:8000/v1"
    assert config.providers[A].base_url is None


def test_config_from_env_one_provider():
    config = config_from_env({"OPENAI_API_KEY": "sk-test-openai", "ANTHROPIC_API_KEY": "  "})
    assert list(config.providers) == [O]


def test_config_from_env_without_keys():
    with pytest.raises(LLMConfigError) as info:
        config_from_env({})
    assert "ANTHROPIC_API_KEY" in str(info.value)


def test_load_config_without_source_uses_env_path_then_keys(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./config/llm.yaml here
    assert keys_of(load_config(None, env={"ANTHROPIC_API_KEY": KEY2})) == [KEY2]
    path = tmp_path / "elsewhere.yaml"
    path.write_text(YAML, encoding="utf-8")
    config = load_config(None, env={"LLM_SYNC_CONFIG": str(path), "ANTHROPIC_TEST_KEY": KEY1,
                                    "ANTHROPIC_API_KEY": KEY2})
    assert keys_of(config) == [KEY1]
    assert O in config.providers


def test_load_config_without_source_reads_default_path(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "llm.yaml").write_text(YAML, encoding="utf-8")
    config = load_config(None, env={"ANTHROPIC_TEST_KEY": KEY1, "ANTHROPIC_API_KEY": KEY2})
    assert keys_of(config) == [KEY1]


def test_config_objects_are_frozen_values():
    config = cfg()
    with pytest.raises(Exception):
        config.pool = None  # type: ignore[misc]
    assert cfg() == config
    assert load_config(config) is config
    assert LLMConfig.from_dict({"providers": {"anthropic": {"api_keys": [KEY0]}}}) == config


def test_shipped_example_config_loads(monkeypatch):
    """config/llm.yaml must parse and validate as shipped."""
    from pathlib import Path

    from llm_sync.config import load_config

    path = Path(__file__).resolve().parents[1] / "config" / "llm.yaml"
    config = load_config(path, env={"ANTHROPIC_API_KEY": "sk-ant-example-1,sk-ant-example-2"})
    anthropic = config.providers["anthropic"]
    assert len(anthropic.api_keys) == 2
    assert anthropic.rate_limits[0].requests_per_minute == 12
    assert config.pool.max_size == 4


def test_yaml_syntax_error_names_position_but_never_quotes_the_line(tmp_path):
    from llm_sync.config import load_config

    path = tmp_path / "llm.yaml"
    path.write_text("providers:\n  openai:\n    api_keys: [gw-7f3a9c2e5b1d4f60a8e2\n")
    with pytest.raises(LLMConfigError) as info:
        load_config(path)
    assert "gw-7f3a9c2e5b1d4f60a8e2" not in str(info.value)
    assert "line" in str(info.value)


def test_a_redis_backend_is_built_and_shown_without_its_password():
    """Status names the backend; one at a dead port has failed open."""
    with LLMManager.from_dict({"providers": {"anthropic": {"api_keys": ["k"]}},
                               "rate_limit_backend": "redis://:s3cret-pw@127.0.0.1:1/0",
                               "backend_processes": 4}) as manager:
        backend = manager.get_status("anthropic")["rate_limit_backend"]
        assert backend["backend"] == "redis" and backend["mode"] == "local" and not backend["healthy"]
        assert backend["fallbacks"] == 1 and "ConnectionError" in backend["last_error"]
        assert backend["local_share"] == 0.25 and backend["on_backend_error"] == "fail_open"
        assert "s3cret-pw" not in repr(backend) and "127.0.0.1:1" in backend["url"]
        assert "s3cret-pw" not in repr(manager.config)


def test_the_memory_backend_is_the_default_and_shown():
    with LLMManager.from_dict({"providers": {"anthropic": {"api_keys": ["k"]}}}) as manager:
        assert manager.get_status("anthropic")["rate_limit_backend"] == {"backend": "memory", "healthy": True}


# --- endpoints: names and kinds ---------------------------------------------------------


def endpoints(providers: dict[str, Any]) -> LLMConfig:
    return load_config({"providers": providers}, env={})


def test_kind_defaults_to_the_name():
    config = endpoints({"Anthropic": {"api_keys": [KEY0]}, "openai": {"api_keys": [KEY1]}})
    assert list(config.providers) == ["anthropic", "openai"]
    assert config.kind_of(A) == "anthropic" and config.kind_of("OPENAI") == "openai"
    assert config.providers[A].kind == "anthropic"


def test_named_endpoints_side_by_side():
    config = endpoints({
        "openai": {"api_keys": [KEY0]},
        "local": {"kind": "openai", "api_keys": [KEY1], "base_url": "http://127.0.0.1:8000/v1"},
        "claude-eu": {"kind": "Anthropic", "api_keys": [KEY2], "base_url": "https://eu.gw.test/anthropic"},
    })
    assert {name: c.kind for name, c in config.providers.items()} == \
        {"openai": "openai", "local": "openai", "claude-eu": "anthropic"}
    assert config.endpoint("LOCAL").base_url == "http://127.0.0.1:8000/v1"


def test_an_endpoint_named_after_no_kind_needs_one():
    with pytest.raises(LLMConfigError) as info:
        endpoints({"local": {"api_keys": [KEY0], "base_url": "http://127.0.0.1:8000"}})
    message = str(info.value)
    assert "providers.local.kind" in message and "anthropic or openai" in message


def test_an_unknown_kind_names_the_field():
    with pytest.raises(LLMConfigError) as info:
        endpoints({"local": {"kind": "gemini", "api_keys": [KEY0]}})
    message = str(info.value)
    assert "providers.local.kind" in message and "unknown provider kind 'gemini'" in message
    assert "anthropic, openai" in message


def test_a_kind_may_name_another_builtin():
    # an endpoint called "openai" that speaks the Anthropic format: odd, but explicit
    config = endpoints({"openai": {"kind": "anthropic", "api_keys": [KEY0]}})
    assert config.kind_of("openai") == "anthropic"


@pytest.mark.parametrize("name", ["", "my endpoint", "-x", "a/b"])
def test_bad_endpoint_names(name):
    with pytest.raises(LLMConfigError, match="endpoint name"):
        endpoints({name: {"kind": "openai", "api_keys": [KEY0]}})


def test_endpoint_names_are_case_insensitive_and_unique():
    with pytest.raises(LLMConfigError, match="'local' is configured twice"):
        endpoints({"local": {"kind": "openai", "api_keys": [KEY0]}, "LOCAL": {"kind": "openai", "api_keys": [KEY1]}})


def test_unknown_endpoint_lookup_lists_the_configured():
    config = endpoints({"openai": {"api_keys": [KEY0]}, "local": {"kind": "openai", "api_keys": [KEY1]}})
    with pytest.raises(LLMConfigError, match=r"endpoint 'anthropic' is not configured \(configured: openai, local\)"):
        config.endpoint(A)


def test_provider_config_objects_get_their_kind_from_the_name():
    from llm_sync.config import ProviderConfig

    entry = ProviderConfig(api_keys=[SecretStr(KEY0)])
    assert entry.kind is None
    config = LLMConfig(providers={"openai": entry})
    assert config.providers["openai"].kind == "openai"
    with pytest.raises(Exception, match="local.kind: required"):
        LLMConfig(providers={"local": entry})


def test_defaults_per_kind():
    from llm_sync.config import DEFAULT_BASE_URLS, DEFAULT_MODELS, default_base_url, default_model

    assert DEFAULT_BASE_URLS["openai"] == default_base_url("openai") == "https://api.openai.com"
    assert DEFAULT_BASE_URLS[A] == default_base_url("anthropic") == "https://api.anthropic.com"
    assert default_model("openai") == DEFAULT_MODELS[O] == "gpt-4o-mini"
    with pytest.raises(LLMConfigError, match="unknown provider kind"):
        default_model("nope")


def test_config_from_env_keeps_the_builtin_names():
    config = config_from_env({"ANTHROPIC_API_KEY": KEY0, "OPENAI_API_KEY": KEY1,
                              "OPENAI_BASE_URL": "https://gw.test/openai"})
    assert {name: c.kind for name, c in config.providers.items()} == {"anthropic": "anthropic", "openai": "openai"}
    assert config.providers[O].base_url == "https://gw.test/openai"


def test_shipped_example_config_endpoints_validate_when_uncommented():
    """The commented-out endpoints in config/llm.yaml are valid as written."""
    import re

    path = Path(__file__).resolve().parents[1] / "config" / "llm.yaml"
    text = re.sub(r"(?m)^  # ", "  ", path.read_text(encoding="utf-8"))
    env = {"ANTHROPIC_API_KEY": KEY0, "OPENAI_API_KEY": KEY1, "GEMINI_API_KEY": KEY2}
    import yaml

    config = load_config(yaml.safe_load(text), env=env)
    assert {name: c.kind for name, c in config.providers.items()} == {
        "anthropic": "anthropic", "openai": "openai", "local": "openai", "gemini": "openai"}


def test_readme_config_examples_validate():
    import re

    import yaml

    readme = Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```yaml\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)
    blocks = [b for b in blocks if re.search(r"(?m)^providers:", b)]
    assert blocks, "README has a providers: example"
    env = {"ANTHROPIC_API_KEY": KEY0, "OPENAI_API_KEY": KEY1, "GEMINI_API_KEY": KEY1 + "-g"}
    for block in blocks:
        assert load_config(yaml.safe_load(block), env=env).providers


@pytest.mark.parametrize("field, value", [
    ("pool.acquire_timeout", float("inf")), ("pool.acquire_timeout", float("nan")),
    ("pool.idle_timeout", float("inf")), ("providers.anthropic.retry_budget", float("inf")),
    ("providers.anthropic.rate_limits[0].burst_seconds", float("nan")),
])
def test_every_duration_in_the_config_is_finite(field: str, value: float):
    data: dict = {"providers": {"anthropic": {"api_keys": ["sk-fin-1"], "rate_limits": [{}]}}, "pool": {}}
    target = data
    parts = field.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    target[parts[-1]] = value
    with pytest.raises(LLMConfigError, match=re.escape(field.split(".")[-1])):
        load_config(data, env={})


def test_a_rediss_backend_takes_its_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SYNC_TEST_REDIS_PW", "pw-from-env-7f3a")
    with LLMManager.from_dict({"providers": {"anthropic": {"api_keys": ["k"]}},
                               "rate_limit_backend": "rediss://:${LLM_SYNC_TEST_REDIS_PW}@127.0.0.1:1/0"}) as manager:
        assert manager.config.rate_limit_backend == "rediss://:pw-from-env-7f3a@127.0.0.1:1/0"
        backend = manager.get_status("anthropic")["rate_limit_backend"]
        assert backend["url"] == "rediss://***@127.0.0.1:1/0"
        assert "pw-from-env-7f3a" not in repr(backend) + repr(manager.config) + repr(manager)


def test_a_redis_password_given_in_the_query_never_shows() -> None:
    with LLMManager.from_dict({"providers": {"anthropic": {"api_keys": ["k"]}},
                               "rate_limit_backend": "redis://127.0.0.1:1/0?password=q-s3cret-9"}) as manager:
        shown = repr(manager.get_status("anthropic")["rate_limit_backend"]) + repr(manager.config)
        assert "q-s3cret-9" not in shown and "password=***" in shown
