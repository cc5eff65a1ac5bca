"""SessionManager: a conversation's history, bounded by turns or tokens.

Turns may hold content blocks, tool calls and tool results. Truncation
drops whole exchanges: an assistant turn that calls tools goes together
with the turns holding its tool results (a provider refuses a tool result
whose call is gone, and a call left without its result)."""

from __future__ import annotations

import threading
from typing import Any, Optional, Union

from .content import ToolResultBlock, ToolUseBlock
from .errors import LLMValidationError
from .models import Message, MessageRole
from .tokens import estimate_tokens

__all__ = ["SessionManager", "Conversation"]


class SessionManager:
    """Keeps the turns of one conversation. When ``max_messages`` or
    ``max_tokens`` (a local estimate) is exceeded, the oldest non-system
    turns are dropped; system messages are always kept.

    Threading contract: safe to share between threads; the history is owned
    by the SessionManager and guarded by its ``_lock``.
    """

    def __init__(self, max_messages: Optional[int] = None, max_tokens: Optional[int] = None) -> None:
        for name, value in (("max_messages", max_messages), ("max_tokens", max_tokens)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise LLMValidationError(f"{name} must be a positive integer or None, got {value!r}")
        self.max_messages = max_messages
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._messages: list[Message] = []

    def add_message(self, role: Union[MessageRole, str, Message], content: Any = None) -> Message:
        """Append a turn: ``add_message(role, content)`` with text or a list
        of blocks, or ``add_message(message)`` with a ready Message (e.g.
        ``response.to_message()``, ``Message.tool_result(...)``)."""
        if isinstance(role, Message):
            if content is not None:
                raise LLMValidationError("add_message(message) takes no content: the message holds it")
            message = role
        else:
            message = Message(role, content)
        with self._lock:
            self._messages.append(message)
            self._truncate()
        return message

    def get_messages(self) -> list[Message]:
        """A copy of the history, oldest first."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def __len__(self) -> int:
        return len(self._messages)

    def __repr__(self) -> str:
        return f"<SessionManager {len(self._messages)} messages>"

    def _over_limit(self) -> bool:
        if self.max_messages is not None and len(self._messages) > self.max_messages:
            return True
        return self.max_tokens is not None and estimate_tokens(self._messages) > self.max_tokens

    def _truncate(self) -> None:
        """Drop the oldest exchange until within limits: one turn, or a
        tool-calling assistant turn with the results answering it. Never
        the newest turn (nor its exchange), nor any system message."""
        while self._over_limit():
            newest = len(self._messages) - 1
            droppable = [unit for unit in self._exchanges() if newest not in unit]
            if not droppable:
                return
            for index in reversed(droppable[0]):
                del self._messages[index]

    def _exchanges(self) -> list[list[int]]:
        """Indices of the non-system turns, grouped into what is dropped together."""
        units: list[list[int]] = []
        messages = self._messages
        index = 0
        while index < len(messages):
            message = messages[index]
            index += 1
            if message.role is MessageRole.SYSTEM:
                continue
            unit = [index - 1]
            if message.role is MessageRole.ASSISTANT and any(isinstance(b, ToolUseBlock) for b in message.blocks):
                while index < len(messages) and any(isinstance(b, ToolResultBlock) for b in messages[index].blocks):
                    unit.append(index)
                    index += 1
            units.append(unit)
        return units


# The same class under the name that says what it holds.
Conversation = SessionManager
