"""Content blocks and tools as values: construction, native dicts of
either provider, token estimates, and the assistant turn of a response."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from pydantic import BaseModel

from llm_sync import LLMResponse, Message, MessageRole
from llm_sync.content import (
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    parse_block,
)
from llm_sync.errors import LLMValidationError
from llm_sync.tokens import estimate_content_tokens
from llm_sync.tools import Tool, ToolCall, normalize_tool_choice, normalize_tools


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_positional_and_keyword_construction():
    assert TextBlock("hi") == TextBlock(text="hi")
    assert ToolUseBlock("t1", "get", {"a": 1}).input == {"a": 1}
    result = ToolResultBlock("t1", "42", True)
    assert result.is_error and result.content == "42"
    assert ThinkingBlock("hmm", "sig").signature == "sig"


def test_images_from_bytes_know_their_type_and_size(tmp_path):
    image = ImageBlock.from_bytes(png(750, 100))
    assert (image.media_type, image.width, image.height) == ("image/png", 750, 100)
    assert base64.b64decode(image.data or "") == png(750, 100)
    path = tmp_path / "a.png"
    path.write_bytes(png(10, 10))
    assert ImageBlock.from_path(path).width == 10
    assert ImageBlock.from_url("https://example.test/a.png").url == "https://example.test/a.png"
    assert estimate_content_tokens([image]) == 100  # width × height / 750


@pytest.mark.parametrize("make", [
    lambda: ImageBlock(),
    lambda: ImageBlock(url="ftp://x/a.png"),
    lambda: ImageBlock(data="AAAA", media_type="text/html"),
    lambda: ImageBlock.from_bytes(b"not an image"),
    lambda: DocumentBlock(),
    lambda: DocumentBlock.from_bytes(b"not a pdf"),
    lambda: ToolUseBlock("", "x"),
    lambda: TextBlock(),
    lambda: parse_block({"type": "video"}),
    lambda: parse_block("text"),
])
def test_bad_blocks_are_validation_errors(make):
    with pytest.raises(LLMValidationError):
        make()


def test_native_dicts_of_either_provider_become_the_same_blocks():
    data = base64.b64encode(png(2, 2)).decode()
    anthropic = parse_block({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}})
    openai = parse_block({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
    assert anthropic == openai
    pdf = base64.b64encode(b"%PDF-1.4 x").decode()
    a_doc = parse_block({"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                         "data": pdf}})
    o_doc = parse_block({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}"}})
    assert a_doc.data == o_doc.data == pdf
    assert parse_block({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "x"}]}) \
        == ToolResultBlock("t", [TextBlock("x")])
    assert parse_block({"type": "redacted_thinking", "data": "zzz"}).redacted == "zzz"


def test_messages_hold_blocks_and_tool_results():
    message = Message(MessageRole.USER, [{"type": "text", "text": "What is this?"}, ImageBlock.from_bytes(png(1, 1))])
    assert message.text == "What is this?" and len(message.blocks) == 2
    answer = Message.tool_result("toolu_1", "sunny")
    assert answer.role is MessageRole.TOOL and answer.content == [ToolResultBlock("toolu_1", "sunny")]
    with pytest.raises(LLMValidationError):
        Message(MessageRole.USER, [])


def test_to_message_keeps_text_thinking_and_tool_calls():
    response = LLMResponse(content="Let me look.", blocks=[ThinkingBlock("plan", "sig"), TextBlock("Let me look.")],
                           tool_calls=[ToolCall(id="t1", name="weather", arguments={"city": "Oslo"})])
    turn = response.to_message()
    assert turn.role is MessageRole.ASSISTANT
    assert [b.type for b in turn.blocks] == ["thinking", "text", "tool_use"]
    assert turn.blocks[2] == ToolUseBlock("t1", "weather", {"city": "Oslo"})
    assert LLMResponse(content="plain").to_message() == Message(MessageRole.ASSISTANT, "plain")


class Weather(BaseModel):
    """The weather in a city."""

    city: str


def test_tools_in_every_shape_become_one_form():
    tools = normalize_tools([
        Tool("search", "Search the web", {"type": "object", "properties": {"q": {"type": "string"}}}),
        Weather,
        {"name": "calc", "description": "Add", "input_schema": {"type": "object"}},
        {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}},
    ])
    assert [t.name for t in tools] == ["search", "Weather", "calc", "time"]
    assert tools[1].description == "The weather in a city." and "city" in tools[1].input_schema["properties"]
    assert normalize_tool_choice("search", tools) == ("tool", "search")
    assert normalize_tool_choice({"type": "any"}, tools) == "required"
    assert normalize_tool_choice("auto", tools) == "auto"
    with pytest.raises(LLMValidationError):
        normalize_tool_choice("missing", tools)
    with pytest.raises(LLMValidationError):
        normalize_tools([Tool("a"), Tool("a")])
    with pytest.raises(LLMValidationError):
        Tool("bad name!")
    assert ToolCall(id="1", name="Weather", arguments={"city": "Oslo"}).parse(Weather) == Weather(city="Oslo")


def test_a_huge_image_is_estimated_as_the_provider_scales_it():
    from llm_sync.tokens import image_tokens

    assert image_tokens(750, 100) == 100
    assert image_tokens(6000, 6000) <= 1600  # scaled down first, never "larger than a bucket"
    assert image_tokens(20000, 100) <= 1600
    assert image_tokens(1, 1) == 1
# --- LLMResponse.to_message: refusals, empty answers, block order ------------------


def test_to_message_of_a_refusal_is_the_refusal_text():
    refused = LLMResponse(content="", refusal="I can't help with that.", stop_reason="refusal")
    assert refused.to_message() == Message(MessageRole.ASSISTANT, "I can't help with that.")


@pytest.mark.parametrize("response", [
    LLMResponse(content="", stop_reason="max_tokens"),
    LLMResponse(content="  \n", blocks=[TextBlock("  \n")]),
    LLMResponse(content="", blocks=[ThinkingBlock("hmm", "sig")], stop_reason="max_tokens"),
])
def test_to_message_of_an_empty_answer_is_a_placeholder_not_whitespace(response):
    turn = response.to_message()
    assert turn.role is MessageRole.ASSISTANT and turn.text == "(no text)"
    assert [type(b) for b in turn.blocks][-1] is TextBlock


def test_to_message_keeps_interleaved_blocks_in_order():
    blocks = [ThinkingBlock("plan", "sig"), TextBlock("First A."), ToolUseBlock("toolu_1", "a", {}),
              TextBlock("Then B."), ToolUseBlock("toolu_2", "b", {"x": 1})]
    response = LLMResponse(content="First A.Then B.", blocks=blocks,
                           tool_calls=[ToolCall(id="toolu_1", name="a"), ToolCall(id="toolu_2", name="b",
                                                                                  arguments={"x": 1})])
    assert response.to_message().content == blocks


def test_to_message_drops_whitespace_text_blocks_and_adds_calls_without_a_block():
    response = LLMResponse(content="\n\n", blocks=[TextBlock("\n\n"), ToolUseBlock("toolu_1", "f", {})],
                           tool_calls=[ToolCall(id="toolu_1", name="f"), ToolCall(id="call_2", name="g")])
    assert response.to_message().content == [ToolUseBlock("toolu_1", "f", {}), ToolUseBlock("call_2", "g", {})]


def test_to_message_of_an_openai_answer_puts_the_text_before_the_calls():
    response = LLMResponse(content="Checking.", tool_calls=[ToolCall(id="call_1", name="f")])
    assert response.to_message().content == [TextBlock("Checking."), ToolUseBlock("call_1", "f", {})]


# --- Anthropic-specific settings on tools and tool blocks --------------------------

EPHEMERAL = {"type": "ephemeral"}


def test_native_anthropic_tool_keeps_cache_control():
    [tool] = normalize_tools([{"name": "f", "description": "d", "input_schema": {"type": "object"},
                               "cache_control": EPHEMERAL}])
    assert tool == Tool("f", "d", {"type": "object"}, cache_control=EPHEMERAL)
    assert normalize_tools([{"type": "custom", "name": "g"}])[0].cache_control is None


def test_native_tool_blocks_keep_cache_control():
    result = parse_block({"type": "tool_result", "tool_use_id": "t1", "content": "x", "cache_control": EPHEMERAL})
    assert result == ToolResultBlock("t1", "x", cache_control=EPHEMERAL)
    use = parse_block({"type": "tool_use", "id": "t1", "name": "f", "input": {}, "cache_control": EPHEMERAL})
    assert use == ToolUseBlock("t1", "f", {}, cache_control=EPHEMERAL)


@pytest.mark.parametrize("server_tool", [
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    {"type": "code_execution_20250522", "name": "code_execution"},
    {"type": "web_search"},  # OpenAI Responses-style
])
def test_server_tools_are_refused_not_turned_into_empty_custom_tools(server_tool):
    with pytest.raises(LLMValidationError, match=rf"tools\[0\]: tool type '{server_tool['type']}': server tools"):
        normalize_tools([server_tool])


# --- native shapes: documents by URL, OpenAI image detail --------------------------


def test_native_anthropic_document_by_url():
    block = parse_block({"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"},
                         "title": "A", "cache_control": EPHEMERAL})
    assert block == DocumentBlock(url="https://x.test/a.pdf", title="A", cache_control=EPHEMERAL)
    assert block == DocumentBlock.from_url("https://x.test/a.pdf", title="A").model_copy(
        update={"cache_control": EPHEMERAL})
    assert block.data is None and block.text is None and block.media_type == "application/pdf"


@pytest.mark.parametrize("kwargs", [
    {}, {"url": "https://x.test/a.pdf", "text": "t"}, {"url": "https://x.test/a.pdf", "data": "JVBERg=="},
    {"url": "ftp://x.test/a.pdf"},
])
def test_a_document_has_exactly_one_source(kwargs):
    with pytest.raises(LLMValidationError):
        DocumentBlock(**kwargs)


def test_openai_image_detail_is_kept():
    block = parse_block({"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}})
    assert block == ImageBlock.from_url("https://x.test/a.png", detail="low")
    data_url = "data:image/png;base64,iVBORw0KGgo="
    assert parse_block({"type": "image_url", "image_url": {"url": data_url, "detail": "high"}}).detail == "high"
    assert parse_block({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}).detail is None
    with pytest.raises(LLMValidationError):
        ImageBlock.from_url("https://x.test/a.png", detail="medium")
