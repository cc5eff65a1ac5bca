"""Value types shared by every layer: messages in, responses out."""

from __future__ import annotations

from enum import Enum
from typing import Any, Iterable, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, field_validator, model_validator

from .content import ContentBlock, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock, blocks_text, parse_blocks
from .errors import LLMValidationError
from .sendable import utf8_problem
from .tools import ToolCall

__all__ = [
    "MessageRole",
    "Message",
    "Usage",
    "LLMResponse",
    "LLMProvider",
    "StopReason",
    "normalize_messages",
]


class MessageRole(str, Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"  # answers a tool call: Message.tool_result(...)

    def __str__(self) -> str:
        return self.value


class LLMProvider(str, Enum):
    """The built-in endpoint kinds (wire formats). OpenAI-compatible servers
    (vLLM, Ollama, LM Studio, gateways) are ``OPENAI``-kind endpoints with a
    ``base_url``. Members also work as endpoint names: ``get_client(LLMProvider.OPENAI)``
    is ``get_client("openai")``."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "LLMProvider | str") -> "LLMProvider":
        try:
            return cls(value if isinstance(value, cls) else str(value).lower())
        except ValueError:
            known = ", ".join(p.value for p in cls)
            raise LLMValidationError(f"unknown provider {value!r}; expected one of: {known}") from None

    @classmethod
    def for_kind(cls, kind: str) -> "LLMProvider | str":
        """The member for a built-in kind, else the kind string itself
        (a kind registered by a third party)."""
        try:
            return cls(kind)
        except ValueError:
            return kind


# The assistant turn LLMResponse.to_message() gives for an answer with no
# text, tool call or refusal (an empty answer at max_tokens, say).
NO_TEXT = "(no text)"


class StopReason(str, Enum):
    """The normalised ``LLMResponse.stop_reason`` values (others pass through)."""

    END_TURN = "end_turn"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_USE = "tool_use"


# The blocks each role may hold, the same for every endpoint kind.
_BLOCKS_OF_ROLE: dict[MessageRole, frozenset[str]] = {
    MessageRole.USER: frozenset({"text", "image", "document", "tool_result"}),
    MessageRole.ASSISTANT: frozenset({"text", "thinking", "tool_use"}),
    MessageRole.TOOL: frozenset({"tool_result"}),
    MessageRole.SYSTEM: frozenset({"text"}),
}


class Message(BaseModel):
    """One conversation turn. ``Message(MessageRole.USER, "hi")`` and
    ``Message(role="user", content="hi")`` both work; bad input raises
    :class:`LLMValidationError` at construction, not at send time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: MessageRole
    content: Union[str, list[ContentBlock]]

    def __init__(self, role: Any = None, content: Any = None, /, **data: Any) -> None:
        for name, value in (("role", role), ("content", content)):
            if value is not None:
                if name in data:
                    raise LLMValidationError(f"Message got {name} both positionally and by keyword")
                data[name] = value
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise LLMValidationError(_describe(exc, "Message")) from None

    @field_validator("content", mode="before")
    @classmethod
    def _content_is_text_or_blocks(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("content must not be an empty list")
            try:
                blocks = parse_blocks(value)
            except LLMValidationError as exc:
                raise ValueError(exc.message) from None
            problem = utf8_problem(repr([b.model_dump() for b in blocks]))
            if problem:
                raise ValueError(f"content {problem}")
            return blocks
        if not isinstance(value, str):
            raise ValueError(f"content must be a string or a list of content blocks, got {type(value).__name__}")
        if not value.strip():
            raise ValueError("content must not be empty")
        problem = utf8_problem(value)
        if problem:
            raise ValueError(f"content {problem}")
        return value

    @model_validator(mode="after")
    def _blocks_fit_the_role(self) -> "Message":
        if isinstance(self.content, str):
            if self.role is MessageRole.TOOL:
                raise ValueError("a tool turn holds tool_result blocks only, not text: use Message.tool_result(...)")
            return self
        allowed = _BLOCKS_OF_ROLE[self.role]
        for index, block in enumerate(self.content):
            if block.type not in allowed:
                raise ValueError(f"content[{index}]: {_a(self.role.value)} turn cannot hold {_a(block.type)} block "
                                 f"(it holds {', '.join(sorted(allowed))})")
        return self

    @property
    def text(self) -> str:
        """The plain text of the content (text blocks joined)."""
        return blocks_text(self.content)

    @property
    def blocks(self) -> list[ContentBlock]:
        """The content as blocks (a string is one TextBlock)."""
        return [TextBlock(self.content)] if isinstance(self.content, str) else list(self.content)

    @classmethod
    def tool_result(cls, tool_call_id: str, content: Union[str, list[Any]], is_error: bool = False) -> "Message":
        """The turn answering tool call ``tool_call_id`` (Anthropic: a user
        turn with a tool_result block; OpenAI: a ``tool`` message)."""
        return cls(MessageRole.TOOL, [ToolResultBlock(tool_call_id, content, is_error)])

    def __repr__(self) -> str:
        text = self.text if isinstance(self.content, str) else f"[{len(self.content)} blocks] {self.text}"
        preview = text if len(text) <= 40 else text[:37] + "..."
        return f"Message({self.role.value}, {preview!r})"


def _a(word: str) -> str:
    return f"{'an' if word in ('assistant', 'image') else 'a'} {word}"


def _describe(exc: ValidationError, what: str) -> str:
    problems = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        loc = ".".join(str(part) for part in err["loc"])
        problems.append(f"{loc}: {message}" if loc else message)
    return f"invalid {what}: " + "; ".join(problems)


MessagesInput = Union[str, Iterable[Union[Message, dict[str, Any]]]]


def normalize_messages(messages: MessagesInput) -> list[Message]:
    """Accept a list of Message, a list of ``{"role", "content"}`` dicts,
    or a bare string (one user turn). Raises LLMValidationError otherwise."""
    if isinstance(messages, str):
        return [Message(MessageRole.USER, messages)]
    if isinstance(messages, (Message, dict)) or not isinstance(messages, Iterable):
        raise LLMValidationError(
            f"messages must be a list of Message, a list of dicts or a string, "
            f"got {type(messages).__name__}"
        )
    out: list[Message] = []
    for index, item in enumerate(messages):
        if isinstance(item, Message):
            out.append(item)
        elif isinstance(item, dict):
            try:
                out.append(Message(**item))
            except LLMValidationError as exc:
                raise LLMValidationError(f"messages[{index}]: {exc.message}") from None
        else:
            raise LLMValidationError(
                f"messages[{index}] must be a Message or a dict, got {type(item).__name__}"
            )
    if not out:
        raise LLMValidationError("messages must not be empty")
    if all(m.role is MessageRole.SYSTEM for m in out):
        raise LLMValidationError("messages must contain at least one user or assistant turn")
    return out


class Usage(BaseModel):
    """Tokens a call used. The cache and reasoning figures are None when
    the server did not say (Anthropic reports cache reads and writes apart
    from ``input_tokens``; OpenAI's ``cached_tokens`` are part of them)."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: Optional[int] = None
    cache_read_input_tokens: Optional[int] = None
    reasoning_tokens: Optional[int] = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class LLMResponse(BaseModel):
    """A finished completion. ``client_id`` names the pooled key that served
    it (an id, never the key); ``metadata`` is for middleware to annotate."""

    content: str
    model: str = ""
    stop_reason: str | None = None
    usage: Usage = Usage()
    provider: LLMProvider | str | None = None  # the endpoint's kind (a member for built-in kinds)
    endpoint: str | None = None  # the configured endpoint name that served it
    client_id: str | None = None
    request_id: str | None = None
    latency_ms: float = 0.0
    metadata: dict[str, Any] = {}
    raw: dict[str, Any] | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    refusal: Optional[str] = None
    thinking: Optional[str] = None
    blocks: list[ContentBlock] = Field(default_factory=list)
    parsed: Any = None  # the response_model instance, for structured output

    def to_message(self) -> "Message":
        """The assistant turn, tool calls (and thinking) included, ready to
        append to the history for the next call of a tool round trip.

        The blocks keep the order they came in (text, thinking and tool
        calls interleaved); text blocks that are empty or whitespace only
        are dropped (Anthropic refuses them). An answer without text or
        tool calls becomes its refusal text, else ``"(no text)"``: a
        history turn is never empty."""
        blocks: list[ContentBlock] = [
            b for b in self.blocks
            if isinstance(b, (ThinkingBlock, ToolUseBlock)) or (isinstance(b, TextBlock) and b.text.strip())
        ]
        if not any(isinstance(b, TextBlock) for b in self.blocks) and self.content.strip():
            # no text blocks (an OpenAI answer): the text goes before the tool calls
            at = next((i for i, b in enumerate(blocks) if isinstance(b, ToolUseBlock)), len(blocks))
            blocks.insert(at, TextBlock(self.content))
        known = {b.id for b in blocks if isinstance(b, ToolUseBlock)}
        blocks += [ToolUseBlock(c.id, c.name, c.arguments) for c in self.tool_calls if c.id not in known]
        if not any(isinstance(b, (TextBlock, ToolUseBlock)) for b in blocks):
            refusal = (self.refusal or "").strip()
            blocks.append(TextBlock(refusal if refusal else NO_TEXT))
        if len(blocks) == 1 and isinstance(blocks[0], TextBlock) and blocks[0].cache_control is None:
            return Message(MessageRole.ASSISTANT, blocks[0].text)
        return Message(MessageRole.ASSISTANT, blocks)

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_member(cls, value: Any) -> Any:
        return LLMProvider.for_kind(value) if isinstance(value, str) else value

    def __repr__(self) -> str:
        preview = self.content if len(self.content) <= 40 else self.content[:37] + "..."
        return (
            f"LLMResponse({preview!r}, model={self.model!r}, stop_reason={self.stop_reason!r}, "
            f"usage={self.usage.input_tokens}/{self.usage.output_tokens}, client_id={self.client_id!r})"
        )
