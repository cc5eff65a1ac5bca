"""Content blocks as the simulator checks and counts them, for both kinds.

A request's prompt becomes a list of :class:`Piece` in the order a prompt
cache sees it (tool definitions, system, then each message's blocks), each
with its tokens and canonical JSON, so the same pass validates the
content, counts input tokens and finds cache breakpoints.

Token rules (on top of the text rule of :mod:`.replies`): a tool definition
or tool call counts the tokens of its JSON; an Anthropic image
``ceil(w * h / 750)`` after scaling its long edge to 1568 px, or
:data:`IMAGE_TOKENS` when the size cannot be read (a URL, WebP); an OpenAI
image ``85 + 170`` per 512-px tile (``85`` with ``detail: "low"``,
:data:`OPENAI_IMAGE_TOKENS` when unreadable); a PDF one token per
:data:`PDF_BYTES_PER_TOKEN` bytes. Malformed blocks raise :class:`BlockError`
(a 400 for the caller), as the real APIs refuse them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .replies import count_tokens

__all__ = [
    "IMAGE_TOKENS",
    "OPENAI_IMAGE_TOKENS",
    "PDF_BYTES_PER_TOKEN",
    "BlockError",
    "Piece",
    "anthropic_image_tokens",
    "anthropic_pieces",
    "check_anthropic_tools_defined",
    "image_size",
    "openai_image_tokens",
    "openai_pieces",
]

IMAGE_TOKENS = 1600
OPENAI_IMAGE_TOKENS = 765
PDF_BYTES_PER_TOKEN = 4
URL_DOCUMENT_TOKENS = 1600
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_PER_MESSAGE = 3
_PER_REQUEST = 3
_CACHE_TTLS = {"5m": 300.0, "1h": 3600.0}
_ANTHROPIC_ROLE_BLOCKS = {
    "user": ("text", "image", "document", "tool_result"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}


class BlockError(ValueError):
    """Why a block is malformed; ``param`` names it (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Piece:
    """One cacheable unit of a prompt: its tokens, canonical JSON and, when a
    ``cache_control`` breakpoint ends here, the cache lifetime in seconds."""

    tokens: int
    material: str
    ttl: float | None = None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def image_size(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """(media type, (width, height)) read from an image's first bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        size = struct.unpack(">II", data[16:24]) if len(data) >= 24 else (0, 0)
        return "image/png", (size[0], size[1]) if all(size) else None
    if data[:6] in (b"GIF87a", b"GIF89a"):
        size = struct.unpack("<HH", data[6:10]) if len(data) >= 10 else (0, 0)
        return "image/gif", (size[0], size[1]) if all(size) else None
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp", None
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", None
    return None, None


def anthropic_image_tokens(size: tuple[int, int] | None) -> int:
    """Anthropic's rule: ``w * h / 750`` once the long edge is at most 1568 px."""
    if size is None:
        return IMAGE_TOKENS
    width, height = size
    scale = min(1.0, 1568 / max(width, height))
    return max(1, math.ceil(width * scale * height * scale / 750))


def openai_image_tokens(size: tuple[int, int] | None, detail: str = "auto") -> int:
    """OpenAI's tile rule: fit 2048², shortest side to 768, 170 per 512-px tile + 85."""
    if detail == "low":
        return 85
    if size is None:
        return OPENAI_IMAGE_TOKENS
    width, height = float(size[0]), float(size[1])
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def _decode(data: Any, where: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise BlockError(f"{where}: Field required (base64 data)", where)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BlockError(f"{where}: invalid base64 data", where) from None


def _image_bytes_tokens(raw: bytes, media_type: Any, where: str, rule: str, detail: str = "auto") -> int:
    sniffed, size = image_size(raw)
    if sniffed is None:
        raise BlockError(f"{where}: Could not process image", where)
    if media_type != sniffed:
        raise BlockError(
            f"{where}: Image does not match the provided media type {media_type}", where
        )
    return anthropic_image_tokens(size) if rule == "anthropic" else openai_image_tokens(size, detail)


def _pdf_tokens(raw: bytes, where: str) -> int:
    if not raw.startswith(b"%PDF"):
        raise BlockError(f"{where}: The PDF specified was not valid.", where)
    return max(1, math.ceil(len(raw) / PDF_BYTES_PER_TOKEN))


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def _cache_ttl(block: dict[str, Any], where: str) -> float | None:
    control = block.get("cache_control")
    if control is None:
        return None
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise BlockError(f"{where}.cache_control: Input tag should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in _CACHE_TTLS:
        raise BlockError(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return _CACHE_TTLS[ttl]


# -- Anthropic ---------------------------------------------------------------------


def _anthropic_block(block: Any, allowed: tuple[str, ...], where: str) -> int:
    """Tokens of one Anthropic content block; raises BlockError if malformed."""
    if not isinstance(block, dict):
        raise BlockError(f"{where}: Input should be an object")
    kind = block.get("type")
    if kind not in allowed:
        raise BlockError(f"{where}.type: Input tag {str(kind)[:40]!r} is not allowed here; expected one of "
                         + ", ".join(allowed))
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise BlockError(f"{where}.text: Field required (a string)")
        return count_tokens(block["text"])
    if kind == "image":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "url" and _is_url(source.get("url")):
            return IMAGE_TOKENS
        if not isinstance(source, dict) or source.get("type") != "base64":
            raise BlockError(f"{where}.source: expected a base64 or url image source")
        if source.get("media_type") not in IMAGE_TYPES:
            raise BlockError(f"{where}.source.media_type: Input should be one of " + ", ".join(IMAGE_TYPES))
        raw = _decode(source.get("data"), f"{where}.source.data")
        return _image_bytes_tokens(raw, source["media_type"], f"{where}.source", "anthropic")
    if kind == "document":
        return _anthropic_document(block, where)
    if kind == "tool_use":
        if not isinstance(block.get("id"), str) or not block["id"]:
            raise BlockError(f"{where}.id: Field required")
        if not isinstance(block.get("name"), str) or not block["name"]:
            raise BlockError(f"{where}.name: Field required")
        if not isinstance(block.get("input"), dict):
            raise BlockError(f"{where}.input: Input should be a valid dictionary")
        return count_tokens(block["name"]) + count_tokens(_canonical(block["input"]))
    if kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
            raise BlockError(f"{where}.tool_use_id: Field required")
        if not isinstance(block.get("is_error", False), bool):
            raise BlockError(f"{where}.is_error: Input should be a valid boolean")
        content = block.get("content", "")
        if isinstance(content, str):
            return count_tokens(content)
        if not isinstance(content, list):
            raise BlockError(f"{where}.content: Input should be a string or a list of blocks")
        inner = ("text", "image", "document")
        return sum(_anthropic_block(item, inner, f"{where}.content.{i}") for i, item in enumerate(content))
    if kind == "thinking":
        if not isinstance(block.get("thinking"), str) or not isinstance(block.get("signature"), str):
            raise BlockError(f"{where}: a thinking block needs the thinking text and its signature")
        return count_tokens(block["thinking"])
    if not isinstance(block.get("data"), str):  # redacted_thinking
        raise BlockError(f"{where}.data: Field required")
    return max(1, len(block["data"]) // 4)


def _anthropic_document(block: dict[str, Any], where: str) -> int:
    source = block.get("source")
    if not isinstance(source, dict):
        raise BlockError(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            raise BlockError(f"{where}.source.media_type: Input should be 'application/pdf'")
        return _pdf_tokens(_decode(source.get("data"), f"{where}.source.data"), f"{where}.source")
    if kind == "text":
        if not isinstance(source.get("data"), str):
            raise BlockError(f"{where}.source.data: Field required (the document's text)")
        return count_tokens(source["data"])
    if kind == "url" and _is_url(source.get("url")):
        return URL_DOCUMENT_TOKENS
    raise BlockError(f"{where}.source.type: expected 'base64', 'text' or 'url'")


def anthropic_pieces(body: dict[str, Any]) -> list[Piece]:
    """Validate and count an Anthropic prompt: tools, system, messages (in cache order)."""
    pieces = [Piece(_PER_REQUEST, _canonical(body.get("model")))]
    for index, tool in enumerate(body.get("tools") or []):
        pieces.append(Piece(count_tokens(_canonical(tool)), _canonical(tool), _cache_ttl(tool, f"tools.{index}")))
    system = body.get("system")
    if isinstance(system, str):
        pieces.append(Piece(count_tokens(system), _canonical(system)))
    elif isinstance(system, list):
        for index, block in enumerate(system):
            where = f"system.{index}"
            tokens = _anthropic_block(block, ("text",), where)
            pieces.append(Piece(tokens, _canonical(block), _cache_ttl(block, where)))
    elif system is not None:
        raise BlockError("system: Input should be a valid string or a list of text blocks")
    for index, message in enumerate(body["messages"]):
        where = f"messages.{index}.content"
        content = message.get("content")
        role = message["role"]
        if isinstance(content, str):
            pieces.append(Piece(count_tokens(content) + _PER_MESSAGE, _canonical([role, content])))
            continue
        if not isinstance(content, list):
            raise BlockError(f"{where}: Input should be a valid string or a list of blocks")
        if not content:
            pieces.append(Piece(_PER_MESSAGE, _canonical([role])))
        for number, block in enumerate(content):
            tokens = _anthropic_block(block, _ANTHROPIC_ROLE_BLOCKS.get(role, ("text",)), f"{where}.{number}")
            _check_anthropic_placement(content, number, role, f"{where}.{number}")
            head = [role] if number == 0 else []
            pieces.append(Piece(tokens + (_PER_MESSAGE if number == 0 else 0),
                                _canonical([*head, block]), _cache_ttl(block, f"{where}.{number}")))
    breakpoints = sum(1 for piece in pieces if piece.ttl is not None)
    if breakpoints > 4:
        raise BlockError(f"A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}.")
    return pieces


def _check_anthropic_placement(content: list[Any], number: int, role: str, where: str) -> None:
    """What the real API rejects of a (well-formed) block in its place:
    text that is empty or whitespace only; a tool_result after other
    content of a user turn."""
    block = content[number]
    if block["type"] == "text" and not block["text"].strip():
        raise BlockError(f"{where}: messages: text content blocks must contain non-whitespace text")
    if role == "user" and block["type"] == "tool_result" and any(
            other["type"] != "tool_result" for other in content[:number]):
        raise BlockError(f"{where}: `tool_result` blocks must come first in the content of a user message, "
                         "before any other block")


def check_anthropic_tools_defined(body: dict[str, Any]) -> None:
    """A history holding tool_use or tool_result blocks needs ``tools``."""
    if body.get("tools"):
        return
    for message in body["messages"]:
        if _ids(message.get("content"), "tool_use", "id") or _ids(message.get("content"), "tool_result",
                                                                 "tool_use_id"):
            raise BlockError("Requests which include `tool_use` or `tool_result` blocks must define tools.")


def _ids(blocks: Any, kind: str, field: str) -> list[str]:
    if not isinstance(blocks, list):
        return []
    return [b[field] for b in blocks if isinstance(b, dict) and b.get("type") == kind]


def check_anthropic_tool_ids(messages: list[dict[str, Any]]) -> None:
    """Each ``tool_use`` answered in the next turn; each ``tool_result`` refers to the previous one."""
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            calls = _ids(message.get("content"), "tool_use", "id")
            if calls and index + 1 < len(messages):
                answered = set(_ids(messages[index + 1].get("content"), "tool_result", "tool_use_id"))
                missing = [call for call in calls if call not in answered]
                if missing:
                    raise BlockError(
                        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                        f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                        "corresponding `tool_result` block in the next message."
                    )
        else:
            previous = messages[index - 1].get("content") if index > 0 else None
            known = set(_ids(previous, "tool_use", "id"))
            for number, result in enumerate(_ids(message.get("content"), "tool_result", "tool_use_id")):
                if result not in known:
                    raise BlockError(
                        f"messages.{index}.content.{number}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {result}. Each `tool_result` block must have a "
                        "corresponding `tool_use` block in the previous message."
                    )


# -- OpenAI ------------------------------------------------------------------------


def _data_url(url: str, where: str) -> tuple[str, bytes]:
    head, _, data = url[5:].partition(";base64,")
    if not data:
        raise BlockError(f"Invalid '{where}'. Expected a base64-encoded data URL.", where)
    return head, _decode(data, where)


def _openai_part(part: Any, role: str, where: str) -> int:
    if not isinstance(part, dict):
        raise BlockError(f"Invalid type for '{where}': expected an object.", where)
    kind = part.get("type")
    allowed = {"user": ("text", "image_url", "file"), "assistant": ("text", "refusal")}.get(role, ("text",))
    if kind not in allowed:
        raise BlockError(f"Invalid value: '{str(kind)[:40]}'. Supported values for '{where}.type' "
                         f"with role '{role}' are: " + ", ".join(allowed) + ".", where + ".type")
    if kind in ("text", "refusal"):
        if not isinstance(part.get(kind), str):
            raise BlockError(f"Missing required parameter: '{where}.{kind}'.", f"{where}.{kind}")
        return count_tokens(part[kind])
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
        if detail not in ("auto", "low", "high"):
            raise BlockError(f"Invalid value for '{where}.image_url.detail'.", f"{where}.image_url.detail")
        if _is_url(url):
            return openai_image_tokens(None, detail)
        if not isinstance(url, str) or not url.startswith("data:"):
            raise BlockError(f"Invalid '{where}.image_url.url': expected an image URL or a data URL.",
                             f"{where}.image_url.url")
        media_type, raw = _data_url(url, f"{where}.image_url.url")
        if media_type not in IMAGE_TYPES:
            raise BlockError(f"Invalid MIME type '{media_type}' in '{where}.image_url.url'; expected one of "
                             + ", ".join(IMAGE_TYPES), f"{where}.image_url.url")
        try:
            return _image_bytes_tokens(raw, media_type, where, "openai", detail)
        except BlockError:
            raise BlockError("You uploaded an unsupported image. Please make sure your image is valid and of "
                             "one of the following formats: ['png', 'jpeg', 'gif', 'webp'].",
                             f"{where}.image_url.url") from None
    file = part.get("file")
    if not isinstance(file, dict):
        raise BlockError(f"Missing required parameter: '{where}.file'.", f"{where}.file")
    if isinstance(file.get("file_id"), str):
        return URL_DOCUMENT_TOKENS
    data = file.get("file_data")
    if not isinstance(data, str) or not data.startswith("data:"):
        raise BlockError(f"Missing required parameter: '{where}.file.file_data'.", f"{where}.file.file_data")
    if not isinstance(file.get("filename"), str):
        raise BlockError(f"Missing required parameter: '{where}.file.filename'.", f"{where}.file.filename")
    media_type, raw = _data_url(data, f"{where}.file.file_data")
    if media_type != "application/pdf":
        raise BlockError(f"Invalid file data: '{where}.file.file_data'. Expected a PDF.", f"{where}.file.file_data")
    return _pdf_tokens(raw, f"{where}.file.file_data")


def _openai_content(content: Any, role: str, where: str) -> Iterator[tuple[int, Any]]:
    if isinstance(content, str):
        yield count_tokens(content), content
        return
    if content is None and role == "assistant":
        return
    if not isinstance(content, list):
        raise BlockError(f"Invalid type for '{where}': expected a string or an array of content parts.", where)
    for index, part in enumerate(content):
        yield _openai_part(part, role, f"{where}[{index}]"), part


def _openai_tool_calls(message: dict[str, Any], where: str) -> int:
    calls = message.get("tool_calls")
    if calls is None:
        return 0
    if not isinstance(calls, list) or not calls:
        raise BlockError(f"Invalid '{where}.tool_calls': expected a non-empty array.", where + ".tool_calls")
    tokens = 0
    for index, call in enumerate(calls):
        at = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(function, dict):
            raise BlockError(f"Missing required parameter: '{at}.id' or '{at}.function'.", at)
        if not isinstance(function.get("name"), str) or not isinstance(function.get("arguments"), str):
            raise BlockError(f"Invalid '{at}.function': name and arguments (a JSON string) are required.",
                             at + ".function")
        tokens += count_tokens(function["name"]) + count_tokens(function["arguments"])
    return tokens


def openai_pieces(body: dict[str, Any]) -> list[Piece]:
    """Validate and count an OpenAI prompt: tools, then messages (in cache order)."""
    pieces = [Piece(_PER_REQUEST, _canonical(body.get("model")))]
    for tool in body.get("tools") or []:
        pieces.append(Piece(count_tokens(_canonical(tool)), _canonical(tool)))
    for index, message in enumerate(body["messages"]):
        where = f"messages[{index}]"
        role = message["role"]
        tokens = _PER_MESSAGE + _openai_tool_calls(message, where)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise BlockError(f"Missing required parameter: '{where}.tool_call_id'.", where + ".tool_call_id")
        parts = list(_openai_content(message.get("content"), role, where + ".content"))
        if not parts:
            pieces.append(Piece(tokens, _canonical(message)))
        for number, (part_tokens, part) in enumerate(parts):
            head = {k: v for k, v in message.items() if k != "content"} if number == 0 else {}
            pieces.append(Piece(part_tokens + (tokens if number == 0 else 0), _canonical([head, part])))
    return pieces


def check_openai_tool_ids(messages: list[dict[str, Any]]) -> None:
    """Each ``tool`` message answers a call of the assistant turn before it; every call is answered."""
    pending: list[Any] = []
    owner = 0
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                raise BlockError(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.", f"messages[{index}].role"
                )
            pending.remove(call_id)
            continue
        if pending:
            raise BlockError(_unanswered(pending), f"messages[{owner}].role")
        calls = message.get("tool_calls") if role == "assistant" else None
        pending = [c.get("id") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
        owner = index
    if pending and len(messages) > owner + 1:
        raise BlockError(_unanswered(pending), f"messages[{owner}].role")


def _unanswered(pending: list[Any]) -> str:
    return ("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(map(str, pending))}")


def count_input_tokens(
    messages: list[dict[str, Any]], system: Any = None, tools: list[dict[str, Any]] | None = None,
    *, kind: str = "anthropic",
) -> int:
    """Input tokens the simulator reports for a request of ``kind`` (its text
    rule plus content blocks and tool definitions); raises BlockError."""
    if kind == "openai":
        return sum(piece.tokens for piece in openai_pieces({"messages": messages, "tools": tools}))
    body = {"messages": messages, "system": system, "tools": tools}
    return sum(piece.tokens for piece in anthropic_pieces(body))
