"""Value types: Message construction and validation, normalize_messages, Usage, LLMResponse."""

from __future__ import annotations

import pickle

import pytest

from llm_sync import LLMProvider, LLMResponse, Message, MessageRole, Usage
from llm_sync.errors import LLMValidationError
from llm_sync.models import StopReason, normalize_messages


def test_message_positional():
    message = Message(MessageRole.USER, "hi")
    assert message.role is MessageRole.USER
    assert message.content == "hi"


def test_message_keyword():
    message = Message(role=MessageRole.ASSISTANT, content="hello")
    assert message.role is MessageRole.ASSISTANT
    assert message.content == "hello"


@pytest.mark.parametrize("role, expected", [
    ("user", MessageRole.USER), ("assistant", MessageRole.ASSISTANT), ("system", MessageRole.SYSTEM),
])
def test_message_plain_role_string(role, expected):
    assert Message(role, "x").role is expected
    assert Message(role=role, content="x").role is expected


def test_positional_and_keyword_messages_are_equal():
    assert Message(MessageRole.USER, "hi") == Message(role="user", content="hi")
    assert Message("user", "hi") != Message("user", "hello")


@pytest.mark.parametrize("role", ["bot", "function", "", "USERS", 3, None])
def test_message_bad_role(role):
    with pytest.raises(LLMValidationError) as info:
        Message(role, "hi") if role is not None else Message(content="hi")
    assert "role" in str(info.value)


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
def test_message_empty_content(content):
    with pytest.raises(LLMValidationError) as info:
        Message(MessageRole.USER, content)
    assert "content" in str(info.value)


@pytest.mark.parametrize("content", [5, 1.5, b"bytes", ["list"], {"type": "text"}, True])
def test_message_non_string_content(content):
    with pytest.raises(LLMValidationError) as info:
        Message(MessageRole.USER, content)
    assert "content" in str(info.value)


def test_message_missing_content():
    with pytest.raises(LLMValidationError):
        Message(MessageRole.USER)
    with pytest.raises(LLMValidationError):
        Message(role="user")


def test_message_validation_error_is_value_error():
    with pytest.raises(ValueError):
        Message("nobody", "hi")


def test_message_unknown_field_rejected():
    with pytest.raises(LLMValidationError):
        Message(role="user", content="hi", name="bob")


def test_message_is_frozen_and_hashable():
    message = Message("user", "hi")
    with pytest.raises(Exception):
        message.content = "changed"  # type: ignore[misc]
    assert message.content == "hi"
    assert len({message, Message("user", "hi")}) == 1


def test_message_repr_truncates():
    assert repr(Message("user", "hi")) == "Message(user, 'hi')"
    long = Message("user", "x" * 100)
    assert len(repr(long)) < 70 and "..." in repr(long)


def test_message_pickles():
    message = Message("assistant", "hello")
    assert pickle.loads(pickle.dumps(message)) == message


def test_role_enum_values():
    assert [r.value for r in MessageRole] == ["system", "user", "assistant", "tool"]
    assert str(MessageRole.USER) == "user"
    assert MessageRole("assistant") is MessageRole.ASSISTANT


# --- normalize_messages -------------------------------------------------------------


def test_normalize_string_is_one_user_turn():
    assert normalize_messages("hello") == [Message(MessageRole.USER, "hello")]


def test_normalize_dicts_and_messages_mixed():
    out = normalize_messages([
        {"role": "system", "content": "S"},
        Message("user", "U"),
        {"role": MessageRole.ASSISTANT, "content": "A"},
    ])
    assert out == [Message("system", "S"), Message("user", "U"), Message("assistant", "A")]
    assert all(isinstance(m, Message) for m in out)


def test_normalize_accepts_tuples_and_generators():
    assert normalize_messages((Message("user", "a"),)) == [Message("user", "a")]
    assert normalize_messages(Message("user", c) for c in "ab") == [Message("user", "a"), Message("user", "b")]


@pytest.mark.parametrize("bad", [
    [],
    [{"role": "system", "content": "only system"}],
    Message("user", "not in a list"),
    {"role": "user", "content": "a dict, not a list"},
    None,
    42,
])
def test_normalize_rejects(bad):
    with pytest.raises(LLMValidationError) as info:
        normalize_messages(bad)
    assert "messages" in str(info.value)


def test_normalize_names_bad_item_index():
    with pytest.raises(LLMValidationError) as info:
        normalize_messages([{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}])
    assert "messages[1]" in str(info.value)
    with pytest.raises(LLMValidationError) as info:
        normalize_messages([Message("user", "ok"), Message("user", "ok"), "a bare string"])
    assert "messages[2]" in str(info.value)
    with pytest.raises(LLMValidationError) as info:
        normalize_messages([{"role": "user", "content": ""}])
    assert "messages[0]" in str(info.value)


def test_normalize_dict_with_extra_key_is_rejected():
    with pytest.raises(LLMValidationError):
        normalize_messages([{"role": "user", "content": "hi", "tool_calls": []}])


# --- Usage and LLMResponse -----------------------------------------------------------


def test_usage_total():
    usage = Usage(input_tokens=12, output_tokens=30)
    assert usage.total_tokens == 42
    assert usage.model_dump()["total_tokens"] == 42
    assert Usage().total_tokens == 0


def test_usage_allows_extra_provider_fields():
    usage = Usage(input_tokens=1, output_tokens=2, cache_read_input_tokens=7)
    assert usage.cache_read_input_tokens == 7
    assert usage.total_tokens == 3


def test_response_defaults_are_not_shared():
    first, second = LLMResponse(content="a"), LLMResponse(content="b")
    first.metadata["seen"] = True
    first.usage.input_tokens = 99
    assert second.metadata == {}
    assert second.usage.input_tokens == 0
    assert first.stop_reason is None and first.provider is None and first.client_id is None


def test_response_repr_has_no_headers_or_raw():
    response = LLMResponse(content="hello", model="m", stop_reason="end_turn",
                           usage=Usage(input_tokens=1, output_tokens=2), client_id="openai-0",
                           raw={"secret_field": "zzz"}, headers={"set-cookie": "zzz"})
    text = repr(response)
    assert "hello" in text and "openai-0" in text and "end_turn" in text
    assert "zzz" not in text


def test_provider_enum_and_parse():
    assert LLMProvider.ANTHROPIC.value == "anthropic" and LLMProvider.OPENAI.value == "openai"
    assert LLMProvider.parse("OpenAI") is LLMProvider.OPENAI
    assert LLMProvider.parse(LLMProvider.ANTHROPIC) is LLMProvider.ANTHROPIC
    with pytest.raises(LLMValidationError) as info:
        LLMProvider.parse("gemini")
    assert "gemini" in str(info.value)


def test_stop_reason_values():
    assert {r.value for r in StopReason} == {"end_turn", "max_tokens", "stop_sequence", "tool_use"}


def test_role_given_twice_is_an_error_not_a_silent_override():
    with pytest.raises(LLMValidationError, match="both positionally and by keyword"):
        Message("user", "hi", role="assistant")


# --- which blocks each role may hold (checked at construction, both kinds) ---------


def _wrong_role_cases():
    from llm_sync import ImageBlock, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
    image = ImageBlock.from_url("https://example.test/x.png")
    return [
        ("user", [TextBlock("hi"), ToolUseBlock("t1", "f", {})], "a user turn cannot hold a tool_use block"),
        ("user", [ThinkingBlock("x", "sig"), TextBlock("hi")], "a user turn cannot hold a thinking block"),
        ("assistant", [ToolResultBlock("t1", "x")], "an assistant turn cannot hold a tool_result block"),
        ("assistant", [image], "an assistant turn cannot hold an image block"),
        ("tool", "just text", "a tool turn holds tool_result blocks only"),
        ("tool", [ToolResultBlock("t1", "x"), TextBlock("extra")], "a tool turn cannot hold a text block"),
        ("system", [image], "a system turn cannot hold an image block"),
        ("system", [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}],
         "a system turn cannot hold a tool_result block"),
    ]


@pytest.mark.parametrize("role, content, words", _wrong_role_cases())
def test_a_block_the_role_cannot_hold_is_refused_at_construction(role, content, words):
    with pytest.raises(LLMValidationError) as info:
        Message(role, content)
    assert words in info.value.message


def test_each_role_takes_its_blocks():
    from llm_sync import DocumentBlock, ImageBlock, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
    Message("user", [TextBlock("a"), ImageBlock.from_url("https://example.test/x.png"),
                     DocumentBlock.from_text("doc"), ToolResultBlock("t1", "x")])
    Message("assistant", [ThinkingBlock("x", "sig"), TextBlock("a"), ToolUseBlock("t1", "f", {})])
    Message("tool", [ToolResultBlock("t1", "x"), ToolResultBlock("t2", "y")])
    Message("system", [TextBlock("rules")])
    Message.tool_result("t1", "sunny")


def test_a_dict_message_with_a_wrong_block_names_its_index():
    with pytest.raises(LLMValidationError, match=r"messages\[1\].*a user turn cannot hold a tool_use block"):
        normalize_messages([{"role": "user", "content": "hi"},
                            {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}])
