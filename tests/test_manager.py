"""LLMManager and the get_llm_manager() singleton: endpoints by name,
lifecycle, and which configs the singleton accepts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import responses

from llm_sync import (
    LLMConfig,
    LLMConfigError,
    LLMError,
    LLMManager,
    LLMProvider,
    LLMValidationError,
    get_llm_manager,
    reset_llm_manager,
)
from llm_sync.middleware.base import Middleware

KEY_A = "sk-ant-test-SECRET-mgr-0001"
KEY_O = "sk-test-SECRET-mgr-0002"
KEY_L = "sk-test-SECRET-mgr-0003"


def config(**extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "anthropic": {"api_keys": [KEY_A], "base_url": "https://anthropic.test"},
            "openai": {"api_keys": [KEY_O], "base_url": "https://openai.test", "models": ["gpt-x"]},
            "local": {"kind": "openai", "api_keys": [KEY_L, KEY_O], "base_url": "http://vllm.test:8000/v1",
                      "models": ["qwen"], "max_retries": 0},
            **extra,
        },
        "pool": {"max_size": 2},
    }


@pytest.fixture(autouse=True)
def _fresh_singleton(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("LLM_SYNC_CONFIG", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./config/llm.yaml
    reset_llm_manager()
    yield
    reset_llm_manager()


@pytest.fixture
def manager() -> Iterator[LLMManager]:
    with LLMManager(config()) as manager:
        yield manager


# --- endpoints ------------------------------------------------------------------------


def test_endpoints_by_name(manager: LLMManager) -> None:
    assert manager.providers == ["anthropic", "openai", "local"]
    assert repr(manager) == "<LLMManager open endpoints=['anthropic', 'openai', 'local']>"
    assert [manager.kind(name) for name in manager.providers] == ["anthropic", "openai", "openai"]
    local = manager.get_client("local")
    assert local.provider == "local" and local.model == "qwen"
    assert manager.get_client("LOCAL") is local
    assert [key.client_id for key in manager.pool("local").clients] == ["local-0", "local-1"]
    assert manager.pool("local").name == "local"
    assert repr(manager.pool("local")) == "<KeyPool local 2/2 idle, 0 waiting>"
    status = manager.get_status("local")
    assert status["total_clients"] == 2
    assert [s["client_id"] for s in status["client_statuses"]] == ["local-0", "local-1"]


def test_llm_provider_members_are_names(manager: LLMManager) -> None:
    assert manager.get_client(LLMProvider.OPENAI) is manager.get_client("openai")
    assert manager.get_client(LLMProvider.ANTHROPIC).model == "claude-3-5-haiku-20241022"
    assert manager.pool(LLMProvider.ANTHROPIC) is manager.pool("anthropic")
    assert manager._pools[LLMProvider.OPENAI] is manager.pool("openai")
    assert LLMProvider.OPENAI in manager.providers
    assert manager.get_status(LLMProvider.ANTHROPIC)["client_statuses"][0]["client_id"] == "anthropic-0"


def test_unknown_endpoint_lists_the_configured_ones(manager: LLMManager) -> None:
    for lookup in (manager.get_client, manager.pool, manager.get_status, manager.metrics, manager.kind):
        with pytest.raises(LLMConfigError, match=r"endpoint 'gemini' is not configured "
                                                 r"\(configured: anthropic, openai, local\)"):
            lookup("gemini")
    with pytest.raises(LLMConfigError, match="configured: anthropic, openai, local"):
        manager.add_middleware(Middleware(), provider="nope")


def test_endpoint_names_must_be_strings(manager: LLMManager) -> None:
    with pytest.raises(LLMValidationError, match="endpoint name"):
        manager.get_client(3)  # type: ignore[arg-type]


def test_only_openai_configured() -> None:
    with LLMManager({"providers": {"openai": {"api_keys": [KEY_O]}}}) as manager:
        with pytest.raises(LLMConfigError, match=r"'anthropic' is not configured \(configured: openai\)"):
            manager.get_client(LLMProvider.ANTHROPIC)


def test_two_openai_endpoints_send_to_their_own_servers(manager: LLMManager) -> None:
    answer = {"id": "c", "object": "chat.completion", "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    with responses.RequestsMock() as mock:
        mock.post("https://openai.test/v1/chat/completions", json={**answer, "model": "from-openai"})
        mock.post("http://vllm.test:8000/v1/chat/completions", json={**answer, "model": "from-local"})
        official = manager.get_client("openai").complete("a")
        local = manager.get_client("local").complete("b")
    assert (official.model, official.endpoint, official.client_id) == ("from-openai", "openai", "openai-0")
    assert (local.model, local.endpoint) == ("from-local", "local")
    assert local.client_id in ("local-0", "local-1")
    assert official.provider is LLMProvider.OPENAI and local.provider is LLMProvider.OPENAI
    assert manager.metrics("local")["total_requests"] == 1
    assert manager.metrics("openai")["total_requests"] == 1
    assert 'provider="local"' in manager.metrics_text()


def test_add_middleware_to_one_endpoint(manager: LLMManager) -> None:
    class Marker(Middleware):
        pass

    marker = Marker()
    manager.add_middleware(marker, provider="local")
    assert all(key.middleware_chain.get_middleware(Marker) is marker for key in manager.pool("local").clients)
    assert all(key.middleware_chain.get_middleware(Marker) is None for key in manager.pool("openai").clients)


# --- lifecycle -------------------------------------------------------------------------


def test_close_is_idempotent_and_refuses_use() -> None:
    manager = LLMManager(config())
    client = manager.get_client("local")
    manager.close()
    manager.close()
    assert manager.closed and repr(manager).startswith("<LLMManager closed")
    with pytest.raises(LLMError, match="closed"):
        manager.get_client("local")
    with pytest.raises(LLMError, match="closed"):
        client.complete("hi")


def test_context_manager_closes() -> None:
    with LLMManager.from_dict(config()) as manager:
        assert not manager.closed
    assert manager.closed


# --- the singleton -----------------------------------------------------------------------


def test_singleton_is_shared_across_threads() -> None:
    cfg = config()
    seen: list[LLMManager] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        seen.append(get_llm_manager(cfg))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and all(m is seen[0] for m in seen)
    assert get_llm_manager() is seen[0]


def test_same_config_reuses_the_manager(tmp_path: Path) -> None:
    first = get_llm_manager(config())
    assert get_llm_manager(config()) is first  # an equal dict
    assert get_llm_manager(first.config) is first  # the validated config itself
    assert get_llm_manager(LLMConfig.from_dict(config())) is first  # an equal LLMConfig
    reset_llm_manager()
    path = tmp_path / "llm.yaml"
    path.write_text("providers:\n  local: {kind: openai, api_keys: [k1], base_url: 'http://h/v1'}\n")
    from_path = get_llm_manager(path)
    assert get_llm_manager(str(path)) is from_path
    assert from_path.providers == ["local"]


def test_different_config_is_refused() -> None:
    first = get_llm_manager(config())
    with pytest.raises(LLMConfigError, match="different config"):
        get_llm_manager({"providers": {"openai": {"api_keys": [KEY_O]}}})
    assert get_llm_manager() is first and not first.closed


def test_a_closed_singleton_is_replaced() -> None:
    first = get_llm_manager(config())
    first.close()
    second = get_llm_manager({"providers": {"openai": {"api_keys": [KEY_O]}}})
    assert second is not first and second.providers == ["openai"]


def test_without_any_configuration() -> None:
    with pytest.raises(LLMConfigError, match="no configuration found"):
        get_llm_manager()


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", f"{KEY_A},{KEY_L}")
    monkeypatch.setenv("OPENAI_API_KEY", KEY_O)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    manager = get_llm_manager()
    assert manager.providers == ["anthropic", "openai"]
    assert [k.client_id for k in manager.pool(LLMProvider.ANTHROPIC).clients] == ["anthropic-0", "anthropic-1"]
    assert manager.get_client("openai").model == "gpt-4o-mini"


def test_reset_closes_the_singleton() -> None:
    first = get_llm_manager(config())
    reset_llm_manager()
    reset_llm_manager()
    assert first.closed


def test_close_closes_every_endpoint_even_if_one_fails(caplog: Any):
    import logging

    manager = LLMManager(config())
    pools = manager._pools
    names = list(pools)
    first = pools[names[0]]

    def broken() -> None:
        raise RuntimeError("user data: SECRET-close")

    first.close = broken  # type: ignore[method-assign]
    workers = [runtime.workers for runtime in manager._runtimes.values()]
    for w in workers:
        w.submit(lambda: None).result(5)  # start every endpoint's threads
    with caplog.at_level(logging.WARNING, logger="llm_sync"):
        manager.close()  # must not raise
    assert manager.closed
    assert all(pools[name].closed for name in names[1:])  # the later endpoints were closed
    assert all(w._closed and w._executor is None for w in workers)  # every endpoint's threads stopped
    warnings = [r for r in caplog.records if r.name == "llm_sync"]
    assert any("RuntimeError" in r.getMessage() for r in warnings)
    assert all("SECRET" not in r.getMessage() for r in warnings)
