"""SessionManager: a conversation's history, bounded by turns or tokens."""

from __future__ import annotations

import threading
from typing import Optional, Union

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

    def add_message(self, role: Union[MessageRole, str], content: str) -> Message:
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
        """Drop the oldest non-system turn until within limits; never drop
        the newest turn, nor any system message."""
        while self._over_limit():
            for index, message in enumerate(self._messages[:-1]):
                if message.role is not MessageRole.SYSTEM:
                    del self._messages[index]
                    break
            else:
                return


# The same class under the name that says what it holds.
Conversation = SessionManager
