"""``llm-sync check``: the seed's basic functionality test as a command,
against the simulator (``--simulate``, or a config naming it) and against
a dead endpoint (non-zero exit, one line per failure, never a key)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from llm_sync.cli import main


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_simulate_passes_every_step_on_both_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--simulate"]) == 0
    out = capsys.readouterr().out
    for endpoint in ("anthropic", "openai"):
        assert f"{endpoint} ({endpoint}, model " in out
    for step in ("completion", "stream", "conversation", "pool status"):
        assert out.count(f"  ok   {step} (") == 2, out
    assert "FAIL" not in out and out.endswith("8/8 checks passed\n")
    assert "2 turns, history of 4 messages" in out
    assert "sk-sim" not in out


def test_check_one_configured_endpoint(llm_simulator: Any, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "llm.yaml"
    config.write_text("providers:\n"
                      f"  anthropic: {{api_keys: [{', '.join(llm_simulator.keys)}], base_url: '{llm_simulator.base_url}'}}\n"
                      f"  openai: {{api_keys: [sk-sim-1], base_url: '{llm_simulator.base_url}/v1'}}\n")
    assert main(["check", "--config", str(config), "--provider", "openai"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("openai (openai, model ") and "anthropic" not in out
    assert out.endswith("4/4 checks passed\n")
    assert {r.path for r in llm_simulator.requests} == {"/v1/chat/completions"}


def test_check_against_a_dead_endpoint_fails_with_a_line_per_failure(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "llm.yaml"
    config.write_text("providers:\n  anthropic:\n    api_keys: [sk-secret-dead-key]\n"
                      f"    base_url: 'http://127.0.0.1:{_closed_port()}'\n    max_retries: 0\n"
                      "    timeout: {connect: 2, read: 2}\n")
    assert main(["check", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    for step in ("completion", "stream", "conversation"):
        assert any(line.startswith(f"  FAIL {step}: LLMConnectionError: ") for line in lines), lines
    assert any(line.startswith("  ok   pool status") for line in lines)  # the pool itself is fine
    assert lines[-1] == "3 of 4 checks FAILED"
    assert "sk-secret-dead-key" not in captured.out + captured.err


def test_check_a_step_with_an_empty_answer_fails(llm_simulator: Any, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    llm_simulator.set_reply(lambda messages: "")
    config = tmp_path / "llm.yaml"
    config.write_text(f"providers:\n  anthropic: {{api_keys: [sk-sim-1], base_url: '{llm_simulator.base_url}'}}\n")
    try:
        assert main(["check", "--config", str(config)]) == 1
    finally:
        llm_simulator.set_reply(None)
    assert "  FAIL completion: CheckFailed: the answer was empty" in capsys.readouterr().out


def test_check_with_an_unknown_endpoint_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--simulate", "--provider", "nowhere"]) == 1
    assert "endpoint 'nowhere' is not configured" in capsys.readouterr().err
