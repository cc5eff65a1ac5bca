"""``llm-sync``'s entry point: every command is registered, Ctrl-C exits 130
with one line, an LLMError exits 1 with its type (never a traceback)."""

from __future__ import annotations

import argparse

import pytest

from llm_sync import cli
from llm_sync.commands import check
from llm_sync.errors import LLMConfigError


def test_every_command_is_registered() -> None:
    parser = cli.build_parser()
    for argv in (["check"], ["chat"], ["load-test", "-n", "3", "-c", "2", "--stream", "--json"], ["demo"],
                 ["complete", "hi"], ["simulate"]):
        assert parser.parse_args(argv).command == argv[0]


@pytest.mark.parametrize("error, code, line", [
    (KeyboardInterrupt(), 130, "llm-sync: interrupted"),
    (LLMConfigError("providers.anthropic.api_keys is required"), 1,
     "llm-sync: LLMConfigError: providers.anthropic.api_keys is required"),
])
def test_interrupts_and_llm_errors_end_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str],
                                                    error: BaseException, code: int, line: str) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(check, "run_check", fail)
    assert cli.main(["check", "--simulate"]) == code
    assert capsys.readouterr().err.strip() == line
