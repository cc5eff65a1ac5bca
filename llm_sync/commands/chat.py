"""``llm-sync chat``: an interactive session with history.

Lines are sent as user turns (the answer streams as it arrives); ``/reset``
clears the history, ``/model NAME`` switches the model, ``/status`` shows
the pool, ``/quit`` (or end of input) ends. On a terminal there is a banner
and a prompt; when stdin is not a terminal (piped input) stdout carries
only the answers (and what ``/status`` shows), one per line, and failures
go to stderr, so ``printf 'hi\\n' | llm-sync chat`` composes with other tools.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterator, Optional, TextIO

from ..errors import LLMError
from ..manager import LLMManager
from ..models import Message, MessageRole
from ..session import SessionManager
from .target import add_target_arguments, endpoints, open_manager, write_status

__all__ = ["Chat", "add_parser", "run_chat"]

PROMPT = "you> "
HELP = "commands: /reset (clear the history), /status, /model NAME, /help, /quit"


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser("chat", help="an interactive session with history (reads piped input too)")
    add_target_arguments(parser)
    parser.add_argument("--system", help="a system prompt for the whole session")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--max-messages", type=int, default=50, help="history kept (oldest turns dropped first)")
    parser.set_defaults(handler=run_chat)


class Chat:
    """One conversation: the history, the model, the slash commands.

    Threading contract: one thread (the command's)."""

    def __init__(self, manager: LLMManager, endpoint: str, args: argparse.Namespace,
                 out: TextIO, err: TextIO, interactive: bool) -> None:
        self.manager = manager
        self.endpoint = endpoint
        self.client = manager.get_client(endpoint)
        self.model: str = args.model or self.client.model
        self.system: Optional[str] = args.system
        self.max_tokens: int = args.max_tokens
        self.history = SessionManager(max_messages=args.max_messages)
        self.out, self.err = out, err
        self.interactive = interactive
        self.failures = 0

    def note(self, text: str) -> None:
        """Chatter for a person at a terminal; nothing when input is piped."""
        if self.interactive:
            self.out.write(f"({text})\n")

    def handle(self, line: str) -> bool:
        """One line of input; False once the session should end."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self.ask(line)
            return True
        command, _, rest = line.partition(" ")
        rest = rest.strip()
        if command in ("/quit", "/exit"):
            return False
        if command == "/reset":
            self.history.clear()
            self.note("history cleared")
        elif command == "/model":
            if rest:
                self.model = rest
                self.note(f"model: {rest}")
            else:
                self.out.write(f"model: {self.model}\n")
        elif command == "/status":
            self.out.write(f"{self.endpoint}, model {self.model}, {len(self.history)} messages in history\n")
            write_status(self.manager, self.endpoint, self.out)
        elif command == "/help":
            self.out.write(HELP + "\n")
        else:
            self.err.write(f"unknown command {command}; {HELP}\n")
        return True

    def ask(self, text: str) -> None:
        """Stream the answer to ``text``; both turns join the history only
        once the answer is whole (a failed turn leaves no trace)."""
        messages = [*self.history.get_messages(), Message(MessageRole.USER, text)]
        wrote = False
        try:
            with self.client.stream(messages, model=self.model, max_tokens=self.max_tokens,
                                    system=self.system) as stream:
                for chunk in stream:
                    self.out.write(chunk)
                    self.out.flush()
                    wrote = True
        except BaseException as exc:
            if wrote:  # a cut answer ends its line too
                self.out.write("\n")
                self.out.flush()
            if not isinstance(exc, LLMError):
                raise  # Ctrl-C: the caller decides
            self.failures += 1
            self.err.write(f"llm-sync chat: {type(exc).__name__}: {exc}\n")
            return
        self.out.write("\n")
        self.out.flush()
        answer = stream.response.content
        self.history.add_message(MessageRole.USER, text)
        self.history.add_message(MessageRole.ASSISTANT, answer)


def _lines(stdin: TextIO, out: TextIO, interactive: bool) -> Iterator[str]:
    """Input lines; on a terminal after a prompt (``input()``: line editing)."""
    while True:
        if interactive and stdin is sys.stdin and out is sys.stdout:
            try:
                yield input(PROMPT)
            except EOFError:
                out.write("\n")
                return
            continue
        if interactive:
            out.write(PROMPT)
            out.flush()
        line = stdin.readline()
        if not line:
            return
        yield line


def run_chat(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None,
             stdin: Optional[TextIO] = None) -> int:
    """0, or 1 when input was piped and a turn failed (a script should know)."""
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    interactive = stdin.isatty()
    with open_manager(args) as manager:
        chat = Chat(manager, endpoints(manager, args)[0], args, out, err, interactive)
        if interactive:
            out.write(f"llm-sync chat with {chat.endpoint} ({chat.model}); {HELP}\n")
        for line in _lines(stdin, out, interactive):
            try:
                if not chat.handle(line):
                    break
            except KeyboardInterrupt:
                if not interactive:
                    raise
                out.write("\n(interrupted)\n")  # Ctrl-C during an answer: back to the prompt
    return 1 if chat.failures and not interactive else 0
