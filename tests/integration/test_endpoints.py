"""Named endpoints over real sockets: two OpenAI-kind endpoints and an
Anthropic one, served by two simulators (one under Gemini's
``/v1beta/openai`` prefix), used at once from many threads."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest

from llm_sync import LLMAuthenticationError, LLMManager, LLMProvider
from llm_sync.testing import Simulator

MAIN_KEYS = ("sk-sim-main-1", "sk-sim-main-2")
LOCAL_KEYS = ("sk-sim-local-1", "sk-sim-local-2", "sk-sim-local-3")


@pytest.fixture
def main_sim() -> Iterator[Simulator]:
    with Simulator(keys=MAIN_KEYS) as sim:
        yield sim


@pytest.fixture
def local_sim() -> Iterator[Simulator]:
    with Simulator(keys=LOCAL_KEYS, path_prefix="/v1beta/openai") as sim:
        yield sim


@pytest.fixture
def manager(main_sim: Simulator, local_sim: Simulator) -> Iterator[LLMManager]:
    config: dict[str, Any] = {
        "providers": {
            "anthropic": {"api_keys": list(MAIN_KEYS), "base_url": main_sim.base_url,
                          "models": ["claude-3-5-haiku-20241022"]},
            "openai": {"api_keys": list(MAIN_KEYS), "base_url": main_sim.base_url, "models": ["gpt-4o-mini"]},
            "local": {"kind": "openai", "api_keys": list(LOCAL_KEYS), "base_url": local_sim.api_url,
                      "models": ["gemini-2.0-flash"], "max_retries": 0},
        },
        "pool": {"max_size": 6, "acquire_timeout": 10.0},
    }
    with LLMManager(config) as manager:
        yield manager


def test_three_endpoints_at_once(manager: LLMManager, main_sim: Simulator, local_sim: Simulator) -> None:
    names = ["anthropic", "openai", "local"]
    barrier = threading.Barrier(24)

    def worker(index: int) -> tuple[str, str, Any]:
        name = names[index % 3]
        barrier.wait()
        prompt = f"{name} call {index}"
        return name, prompt, manager.get_client(name).complete(prompt, max_tokens=32)

    with ThreadPoolExecutor(max_workers=24) as executor:
        results = list(executor.map(worker, range(48)))

    for name, prompt, response in results:
        assert response.content == f"Simulated reply to: {prompt}"
        assert response.endpoint == name
        assert response.client_id.startswith(f"{name}-")
    kinds = {name: {r.provider for n, _, r in results if n == name} for name in names}
    assert kinds == {"anthropic": {LLMProvider.ANTHROPIC}, "openai": {LLMProvider.OPENAI},
                     "local": {LLMProvider.OPENAI}}
    assert {r.model for n, _, r in results if n == "local"} == {"gemini-2.0-flash"}

    # each endpoint reached only its own server, at its own path
    assert Counter(r.path for r in main_sim.requests) == {"/v1/messages": 16, "/v1/chat/completions": 16}
    assert Counter(r.path for r in local_sim.requests) == {"/v1beta/openai/chat/completions": 16}
    assert all(r.status == 200 for r in main_sim.requests + local_sim.requests)
    # the local endpoint's three keys all served; the main keys never reached it
    assert {r.key_id for r in local_sim.requests} == {0, 1, 2}

    for name in names:
        status = manager.get_status(name)
        assert status["in_flight"] == 0 and status["available_clients"] == 6
        assert sum(s["total_requests"] for s in status["client_statuses"]) == 16
        assert manager.metrics(name)["successful_requests"] == 16
    assert [s["client_id"] for s in manager.get_status("local")["client_statuses"]] == \
        ["local-0", "local-1", "local-2"]
    text = manager.metrics_text()
    for name in names:
        assert f'provider="{name}"' in text


def test_streams_on_every_endpoint(manager: LLMManager, local_sim: Simulator) -> None:
    for name in ("anthropic", "openai", "local"):
        with manager.get_client(name).stream(f"stream {name}", max_tokens=40) as stream:
            text = "".join(stream)
        assert text == f"Simulated reply to: stream {name}"
        assert stream.response.endpoint == name and stream.response.usage.output_tokens > 0
    assert [r.path for r in local_sim.requests] == ["/v1beta/openai/chat/completions"]


def test_an_error_names_the_endpoint(manager: LLMManager, local_sim: Simulator) -> None:
    local_sim.inject(401, count=3)
    with pytest.raises(LLMAuthenticationError) as info:
        manager.get_client("local").complete("hi")
    assert info.value.provider == "local" and info.value.status_code == 401


def test_anthropic_kind_behind_a_gateway_prefix() -> None:
    with Simulator(keys=MAIN_KEYS, path_prefix="/anthropic/v1") as sim:
        config = {"providers": {"claude-gw": {"kind": "anthropic", "api_keys": list(MAIN_KEYS),
                                              "base_url": sim.base_url + "/anthropic"}}}
        with LLMManager(config) as manager:
            response = manager.get_client("claude-gw").complete("via gateway", max_tokens=20)
        assert response.content == "Simulated reply to: via gateway"
        assert (response.provider, response.endpoint) == (LLMProvider.ANTHROPIC, "claude-gw")
        assert [r.path for r in sim.requests] == ["/anthropic/v1/messages"]


def test_cli_complete_on_a_named_endpoint(local_sim: Simulator, tmp_path: Any) -> None:
    import io

    from llm_sync.cli import build_parser, run_complete

    path = tmp_path / "llm.yaml"
    path.write_text(
        "providers:\n"
        f"  local: {{kind: openai, api_keys: [{LOCAL_KEYS[0]}], base_url: '{local_sim.api_url}', models: [m1]}}\n"
    )
    out = io.StringIO()
    args = build_parser().parse_args(["complete", "from the cli", "--config", str(path), "--json"])
    assert run_complete(args, out) == 0  # the first endpoint by default
    args = build_parser().parse_args(["complete", "again", "--provider", "LOCAL", "--config", str(path)])
    assert run_complete(args, out) == 0
    answer = out.getvalue()
    assert '"endpoint": "local"' in answer and '"provider": "openai"' in answer
    assert answer.rstrip().endswith("Simulated reply to: again")
    assert [r.path for r in local_sim.requests] == ["/v1beta/openai/chat/completions"] * 2


def test_cli_demo_uses_a_named_endpoint() -> None:
    import io

    from llm_sync.cli import run_demo

    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    assert "served by local-0 (endpoint local, kind openai)" in text
    assert " local\n" in text and "Done: no network beyond 127.0.0.1" in text


def test_examples_endpoints_script() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "endpoints.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert "local     (openai, local-0): Simulated reply to: Hello, local!" in result.stdout
    assert "['/v1beta/openai/chat/completions']" in result.stdout
