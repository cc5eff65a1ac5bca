"""Integration fixtures: the real client, over real sockets, against the
project's simulator on 127.0.0.1 (the ``llm_simulator`` fixture comes from
the package's own pytest plugin)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from llm_sync import LLMManager, reset_llm_manager



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder is an integration test (``-m integration``)."""
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)


def simulator_config(sim: Any, *, max_size: int = 8, **provider: Any) -> dict[str, Any]:
    """A config that points both providers at ``sim`` with all its keys."""
    common = {"api_keys": list(sim.keys), **provider}
    return {
        "providers": {
            "anthropic": {"base_url": sim.base_url, **common},
            "openai": {"base_url": sim.base_url + "/v1", **common},
        },
        "pool": {"max_size": max_size, "acquire_timeout": 10.0},
    }


@pytest.fixture
def sim_config(llm_simulator: Any) -> Callable[..., dict[str, Any]]:
    return lambda **kwargs: simulator_config(llm_simulator, **kwargs)


@pytest.fixture
def make_manager(llm_simulator: Any) -> Iterator[Callable[..., LLMManager]]:
    managers: list[LLMManager] = []

    def make(**kwargs: Any) -> LLMManager:
        manager = LLMManager(simulator_config(llm_simulator, **kwargs))
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.close()


@pytest.fixture(autouse=True)
def _fresh_singleton() -> Iterator[None]:
    reset_llm_manager()
    yield
    reset_llm_manager()
