"""Fork keeps the configuration: gunicorn ``--preload`` and app factories
call ``get_llm_manager(cfg)`` in the master; every forked worker's
``get_llm_manager()`` must then work, with a manager of its own (fresh
sockets and locks) built from the parent's configuration."""

from __future__ import annotations

import json
import os
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from llm_sync import LLMConfigError, get_llm_manager, reset_llm_manager

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")

CHILD_THREADS = 16


@pytest.fixture(autouse=True)
def _no_other_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Only the parent's configuration can be found: no env keys, no file."""
    for name in ("LLM_SYNC_CONFIG", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def run_in_child(body: Callable[[], Any], timeout: float = 60.0) -> tuple[int, Any]:
    """Fork; run ``body`` in the child and return (exit code, its JSON result
    or the child's traceback). The child never returns into pytest."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_end)
            try:
                payload: Any = {"ok": body()}
                code = 0
            except BaseException:
                payload = {"error": traceback.format_exc()}
            with os.fdopen(write_end, "w") as pipe:
                json.dump(payload, pipe)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        raw = pipe.read()  # EOF when the child exits
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    result = json.loads(raw) if raw else {"error": "no output"}
    assert code == 0, result.get("error")
    return code, result["ok"]


def call_from_threads(count: int) -> dict[str, Any]:
    """In the child: ``count`` threads call get_llm_manager() with no argument
    at the same moment, and each makes a real call on both endpoints."""
    barrier = threading.Barrier(count)
    managers: list[int] = []
    answers: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            barrier.wait()
            manager = get_llm_manager()
            a = manager.get_client("anthropic").complete(f"child thread {index}", max_tokens=32)
            o = manager.get_client("local").complete(f"child local {index}", max_tokens=32)
            with lock:
                managers.append(id(manager))
                answers.extend([a.content, o.content])
        except BaseException as exc:  # reported to the parent
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    manager = get_llm_manager()
    status = manager.get_status("anthropic")
    return {
        "errors": errors,
        "managers": sorted(set(managers)),
        "answers": sorted(answers),
        "pid": os.getpid(),
        "requests": sum(s["total_requests"] for s in status["client_statuses"]),
        "in_flight": status["in_flight"],
    }


def config_for(sim: Any) -> dict[str, Any]:
    return {
        "providers": {
            "anthropic": {"api_keys": list(sim.keys), "base_url": sim.base_url},
            "local": {"kind": "openai", "api_keys": list(sim.keys)[:2], "base_url": sim.api_url,
                      "models": ["served-model"]},
        },
        "pool": {"max_size": 4, "acquire_timeout": 20.0},
    }


def test_forked_child_calls_get_llm_manager_from_16_threads(llm_simulator: Any) -> None:
    parent = get_llm_manager(config_for(llm_simulator))
    # the parent holds live keep-alive connections when it forks
    assert parent.get_client("anthropic").complete("parent before").content == "Simulated reply to: parent before"
    parent_requests = sum(s["total_requests"] for s in parent.get_status("anthropic")["client_statuses"])
    connections_before = llm_simulator.connection_count

    _, result = run_in_child(lambda: call_from_threads(CHILD_THREADS))

    assert result["errors"] == []
    assert len(result["managers"]) == 1 and result["managers"][0] != id(parent)
    assert result["pid"] != os.getpid()
    expected = sorted([f"Simulated reply to: child thread {i}" for i in range(CHILD_THREADS)]
                      + [f"Simulated reply to: child local {i}" for i in range(CHILD_THREADS)])
    assert result["answers"] == expected
    # the child's manager started from zero: it counted only its own calls
    assert result["requests"] == CHILD_THREADS and result["in_flight"] == 0
    # ... over sockets of its own
    assert llm_simulator.connection_count > connections_before

    # the parent's manager was not touched and still works on its own sockets
    assert get_llm_manager() is parent and not parent.closed
    assert parent.get_client("local").complete("parent after").content == "Simulated reply to: parent after"
    assert sum(s["total_requests"] for s in parent.get_status("anthropic")["client_statuses"]) == parent_requests
    assert parent.get_status("anthropic")["in_flight"] == 0


def test_child_may_pass_the_same_config_again(llm_simulator: Any) -> None:
    config = config_for(llm_simulator)
    parent = get_llm_manager(config)

    def child() -> list[Any]:
        first = get_llm_manager(config_for(llm_simulator))  # an equal dict, as an app factory would
        again = get_llm_manager()
        return [id(first) != id(parent), first is again, first.get_client("local").complete("x").content]

    _, result = run_in_child(child)
    assert result == [True, True, "Simulated reply to: x"]


def test_child_may_configure_another_manager(llm_simulator: Any) -> None:
    get_llm_manager(config_for(llm_simulator))
    other = {"providers": {"solo": {"kind": "anthropic", "api_keys": [llm_simulator.keys[0]],
                                    "base_url": llm_simulator.base_url}}}

    def child() -> list[str]:
        return get_llm_manager(other).providers

    assert run_in_child(child)[1] == ["solo"]


def test_grandchild_inherits_too(llm_simulator: Any) -> None:
    get_llm_manager(config_for(llm_simulator))

    def child() -> Any:
        # fork again before this child ever used the manager
        return run_in_child(lambda: get_llm_manager().get_client("anthropic").complete("grandchild").content)[1]

    assert run_in_child(child)[1] == "Simulated reply to: grandchild"


def test_a_closed_manager_is_not_inherited(llm_simulator: Any) -> None:
    get_llm_manager(config_for(llm_simulator)).close()

    def child() -> str:
        try:
            get_llm_manager()
        except LLMConfigError as exc:
            return str(exc)
        return "built"

    assert "no configuration found" in run_in_child(child)[1]


def test_reset_in_the_child_forgets_the_parent_config(llm_simulator: Any) -> None:
    get_llm_manager(config_for(llm_simulator))

    def child() -> str:
        reset_llm_manager()
        try:
            get_llm_manager()
        except LLMConfigError:
            return "forgotten"
        return "still configured"

    assert run_in_child(child)[1] == "forgotten"


def test_the_inherited_manager_object_is_never_closed_by_the_child(llm_simulator: Any) -> None:
    parent = get_llm_manager(config_for(llm_simulator))
    parent.get_client("anthropic").complete("warm up")

    def child() -> bool:
        get_llm_manager().close()  # closes the child's own manager only
        import gc

        gc.collect()
        return parent.closed

    assert run_in_child(child)[1] is False
    assert parent.get_client("anthropic").complete("still fine").content == "Simulated reply to: still fine"

