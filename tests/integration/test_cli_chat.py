"""``llm-sync chat``: piped input prints only the answers; /reset, /model,
/status and /quit work; a terminal gets a banner and prompts; the config
comes from ``--config`` or ``$LLM_SYNC_CONFIG``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm_sync.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_env(llm_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$LLM_SYNC_CONFIG naming a config that points at the simulator."""
    config = tmp_path / "llm.yaml"
    config.write_text("providers:\n"
                      f"  anthropic: {{api_keys: [{', '.join(llm_simulator.keys)}], base_url: '{llm_simulator.base_url}'}}\n")
    monkeypatch.setenv("LLM_SYNC_CONFIG", str(config))
    return config


def _chat(monkeypatch: pytest.MonkeyPatch, text: str, *args: str, stdin: Any = None) -> int:
    monkeypatch.setattr(sys, "stdin", stdin if stdin is not None else io.StringIO(text))
    return main(["chat", *args])


def _messages(request: Any) -> list[str]:
    return [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
            for m in request.body["messages"]]


def test_piped_input_prints_only_answers_and_the_commands_work(
        config_env: Path, llm_simulator: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    script = "hello\n/model claude-other\n\nsecond\n/reset\nthird\n/status\n/quit\nnever sent\n"
    assert _chat(monkeypatch, script) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:3] == ["Simulated reply to: hello", "Simulated reply to: second", "Simulated reply to: third"]
    assert lines[3] == "anthropic, model claude-other, 2 messages in history"  # /status, asked for
    assert lines[4].startswith("  pool: ") and all(line.startswith("    anthropic-") for line in lines[5:])
    assert "you>" not in captured.out and "llm-sync chat" not in captured.out  # no prompt, no banner
    assert captured.err == ""
    first, second, third = llm_simulator.requests  # /quit: the last line was never sent
    assert _messages(first) == ["hello"]
    assert _messages(second) == ["hello", "Simulated reply to: hello", "second"]  # the history
    assert second.body["model"] == "claude-other" and first.body["model"] != "claude-other"
    assert _messages(third) == ["third"]  # after /reset


def test_end_of_input_ends_the_session(config_env: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert _chat(monkeypatch, "only line") == 0  # no trailing newline, no /quit
    assert capsys.readouterr().out == "Simulated reply to: only line\n"


def test_a_failed_turn_goes_to_stderr_and_leaves_no_history(
        config_env: Path, llm_simulator: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    llm_simulator.inject(status=400)
    assert _chat(monkeypatch, "refused\nagain\n/bogus\n") == 1  # a script learns that a turn failed
    captured = capsys.readouterr()
    assert captured.out == "Simulated reply to: again\n"
    err = captured.err.splitlines()
    assert err[0].startswith("llm-sync chat: LLMProviderError: ") and err[1].startswith("unknown command /bogus")
    assert _messages(llm_simulator.requests[-1]) == ["again"]
    assert "sk-sim" not in captured.out + captured.err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_banner_prompts_and_notes(config_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _chat(monkeypatch, "", stdin=_Terminal("hi\n/reset\n/model m2\n/help\n")) == 0
    out = capsys.readouterr().out
    assert out.startswith("llm-sync chat with anthropic (")
    assert "you> Simulated reply to: hi\n" in out  # the prompt is written, the typed line is the terminal's
    assert "(history cleared)\n" in out and "(model: m2)\n" in out and "commands: /reset" in out
    assert out.endswith("you> \n")  # end of input (Ctrl-D) at the prompt ends the line


def test_chat_simulate_in_a_subprocess_with_piped_input() -> None:
    result = subprocess.run([sys.executable, "-m", "llm_sync.cli", "chat", "--simulate", "--provider", "openai"],
                            input="one\ntwo\n/quit\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Simulated reply to: one\nSimulated reply to: two\n"
