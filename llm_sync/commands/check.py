"""``llm-sync check``: the seed's basic functionality test, as a command.

For each endpoint: a completion, a stream, a two-turn conversation with
history, and the pool status. One line per step (``ok`` or ``FAIL`` with the
error's type and message: never a key, llm_sync errors never carry one);
the exit status is 1 when any step failed.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from typing import Any, Callable, Optional, TextIO

from ..client import LLMClient
from ..manager import LLMManager
from ..models import MessageRole
from ..session import SessionManager
from .target import add_target_arguments, endpoints, open_manager, write_status

__all__ = ["add_parser", "run_check"]


class CheckFailed(Exception):
    """A step got an answer, but not a usable one."""


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser("check", help="completion, stream, conversation and pool status per endpoint")
    add_target_arguments(parser)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    parser.set_defaults(handler=run_check)


def _answer(text: str) -> str:
    if not text.strip():
        raise CheckFailed("the answer was empty")
    return text if len(text) <= 60 else text[:57] + "..."


def _completion(client: LLMClient, call: dict[str, Any]) -> str:
    response = client.complete("Say hello in five words.", **call)
    return (f"{_answer(response.content)!r} from {response.client_id}, "
            f"{response.usage.input_tokens} in / {response.usage.output_tokens} out tokens")


def _stream(client: LLMClient, call: dict[str, Any]) -> str:
    with client.stream("Count from one to five.", **call) as stream:
        chunks = list(stream)
    return f"{_answer(''.join(chunks))!r} in {len(chunks)} chunks, stop_reason={stream.response.stop_reason}"


def _conversation(client: LLMClient, call: dict[str, Any]) -> str:
    session = SessionManager()
    for turn in ("My name is Alice.", "What is my name?"):
        session.add_message(MessageRole.USER, turn)
        response = client.complete(session.get_messages(), **call)
        session.add_message(MessageRole.ASSISTANT, _answer(response.content))
    return f"2 turns, history of {len(session)} messages; last {_answer(response.content)!r}"


def _status(manager: LLMManager, endpoint: str) -> str:
    status = manager.get_status(endpoint)
    if status.get("closed") or not status["total_clients"]:
        raise CheckFailed("the pool is closed or has no leases")
    lines = io.StringIO()
    write_status(manager, endpoint, lines)
    return f"{len(status['client_statuses'])} keys\n" + "".join(f"  {line}\n" for line in lines.getvalue().splitlines()).rstrip("\n")


def run_check(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    failed = total = 0
    with open_manager(args) as manager:
        for endpoint in endpoints(manager, args, every=True):
            client = manager.get_client(endpoint, args.model)
            out.write(f"{endpoint} ({manager.kind(endpoint)}, model {client.model})\n")
            call = {"max_tokens": args.max_tokens, "timeout": args.timeout}
            steps: list[tuple[str, Callable[[], str]]] = [
                ("completion", lambda: _completion(client, call)),
                ("stream", lambda: _stream(client, call)),
                ("conversation", lambda: _conversation(client, call)),
                ("pool status", lambda: _status(manager, endpoint)),
            ]
            for name, step in steps:
                total += 1
                started = time.monotonic()
                try:
                    detail = step()
                except Exception as exc:  # every failure is reported, and the next step still runs
                    failed += 1
                    out.write(f"  FAIL {name}: {type(exc).__name__}: {exc}\n")
                else:
                    out.write(f"  ok   {name} ({(time.monotonic() - started) * 1000:.0f} ms): {detail}\n")
                out.flush()
    out.write(f"{total - failed}/{total} checks passed\n" if not failed else f"{failed} of {total} checks FAILED\n")
    return 1 if failed else 0
