"""The web and futures examples, offline against the simulator: the Flask
app through Flask's test client (skipped without Flask), the Django views
and the futures script as their docstrings say to run them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLM_SYNC_SIMULATE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def _sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


@pytest.fixture
def flask_app(llm_simulator: Any) -> Iterator[Any]:
    pytest.importorskip("flask", reason="Flask is a dev extra, not a dependency")
    module = _load("flask_app")
    config = {"providers": {"anthropic": {"api_keys": list(llm_simulator.keys), "base_url": llm_simulator.base_url}}}
    app = module.create_app(config)
    app.testing = True
    yield app


def test_flask_complete_view(flask_app: Any) -> None:
    reply = flask_app.test_client().post("/complete", json={"prompt": "Hello Flask", "max_tokens": 20})
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["content"] == "Simulated reply to: Hello Flask" and body["client_id"].startswith("anthropic-")
    assert body["usage"]["output_tokens"] > 0


def test_flask_streaming_view_sends_server_sent_events(flask_app: Any, llm_simulator: Any) -> None:
    reply = flask_app.test_client().get("/stream?prompt=Write+a+story")
    assert reply.status_code == 200 and reply.mimetype == "text/event-stream"
    events = _sse(reply.get_data(as_text=True))
    assert "".join(data["text"] for kind, data in events if kind == "message") == "Simulated reply to: Write a story"
    assert events[-1] == ("done", {"stop_reason": "end_turn"})
    status = flask_app.test_client().get("/status").get_json()
    assert status["available_clients"] == status["total_clients"]  # the stream gave its lease back


def test_flask_errors_are_json_and_never_show_a_key(flask_app: Any, llm_simulator: Any) -> None:
    llm_simulator.inject(status=400)
    reply = flask_app.test_client().post("/complete", json={"prompt": "refused"})
    assert reply.status_code == 502 and reply.get_json()["error"].startswith("LLMProviderError")
    assert "sk-sim" not in reply.get_data(as_text=True)


def test_flask_app_runs_on_the_simulator_with_LLM_SYNC_SIMULATE(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask", reason="Flask is a dev extra, not a dependency")
    monkeypatch.setenv("LLM_SYNC_SIMULATE", "1")
    module = _load("flask_app")
    try:
        reply = module.create_app().test_client().post("/complete", json={"prompt": "offline"})
        assert reply.get_json()["content"] == "Simulated reply to: offline"
    finally:
        module._simulator.stop()


def test_django_views_example() -> None:
    pytest.importorskip("django", reason="Django is not a dependency; the example says how to install it")
    result = _run("django_views.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["complete: Simulated reply to: Hello from Django (anthropic-0)",
                                          "stream:   Simulated reply to: Write a story",
                                          "status:   8 leases free"]


def test_futures_batch_example() -> None:
    result = _run("futures_batch.py", "-n", "6")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("batch: 6/6 answered in ") and "'Simulated reply to: Question 0'" in lines[0]
    assert lines[-1].startswith("calls per key: {'anthropic-0': ")
    assert "6/6" in result.stderr  # the progress bar (tqdm or the plain line)
