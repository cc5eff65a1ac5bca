"""Content blocks: what a message holds beyond plain text.

Provider-neutral, typed, frozen values. Each endpoint kind translates them
to its wire format (Anthropic blocks, OpenAI content parts, ``tool_calls``
and ``tool`` messages). Native dicts of either provider are accepted by
:func:`parse_block` and become the same typed blocks, so a history read
back from one provider can be sent to the other.

Threading contract: blocks are immutable values, shared freely.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import struct
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import LLMValidationError

__all__ = [
    "TextBlock",
    "ImageBlock",
    "DocumentBlock",
    "ToolUseBlock",
    "ToolResultBlock",
    "ThinkingBlock",
    "ContentBlock",
    "parse_block",
    "parse_blocks",
    "blocks_text",
    "IMAGE_MEDIA_TYPES",
]

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
ImageDetail = Literal["low", "high", "auto"]  # OpenAI's image_url.detail
CacheControl = Optional[dict[str, Any]]


def _given(*args: Any) -> tuple[Any, ...]:
    """Positional arguments up to the last one given (None = not given)."""
    given = list(args)
    while given and given[-1] is None:
        given.pop()
    return tuple(given)


class _Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, *args: Any, **data: Any) -> None:
        names = self._positional()
        if len(args) > len(names):
            raise LLMValidationError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            if name in data:
                raise LLMValidationError(f"{type(self).__name__} got {name} both positionally and by keyword")
            data[name] = value
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
            raise LLMValidationError(f"invalid {type(self).__name__}: {problems}") from None

    @classmethod
    def _positional(cls) -> tuple[str, ...]:
        return ()


class TextBlock(_Block):
    """Text. ``cache_control={"type": "ephemeral"}`` marks an Anthropic
    prompt-cache breakpoint (ignored by OpenAI, which caches by itself)."""

    type: Literal["text"] = "text"
    text: str
    cache_control: CacheControl = None

    def __init__(self, text: Any = None, /, **data: Any) -> None:
        super().__init__(*(() if text is None else (text,)), **data)

    @classmethod
    def _positional(cls) -> tuple[str, ...]:
        return ("text",)


class ImageBlock(_Block):
    """An image, inline (base64 ``data`` with its ``media_type``) or by
    ``url``. ``width``/``height`` (when known) size the token estimate;
    ``detail`` (``"low"``, ``"high"``, ``"auto"``) is OpenAI's resolution
    setting (Anthropic has none)."""

    type: Literal["image"] = "image"
    media_type: Optional[str] = None
    data: Optional[str] = None  # base64
    url: Optional[str] = None
    width: Optional[int] = Field(default=None, gt=0)
    height: Optional[int] = Field(default=None, gt=0)
    detail: Optional[ImageDetail] = None
    cache_control: CacheControl = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("https://", "http://", "data:")):
            raise ValueError("url must be an http(s) or data: URL")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ImageBlock":
        if (self.data is None) == (self.url is None):
            raise ValueError("give exactly one of data (base64) and url")
        if self.data is not None and self.media_type not in IMAGE_MEDIA_TYPES:
            raise ValueError(f"media_type must be one of {sorted(IMAGE_MEDIA_TYPES)}")
        return self

    @classmethod
    def from_bytes(cls, data: bytes, media_type: Optional[str] = None) -> "ImageBlock":
        """An inline image; the media type and size are read from the bytes."""
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise LLMValidationError("ImageBlock.from_bytes needs the image's bytes")
        sniffed, size = _sniff_image(bytes(data))
        media_type = media_type or sniffed
        if media_type is None:
            raise LLMValidationError("cannot tell the image type: pass media_type (image/png, image/jpeg, ...)")
        width, height = size if size else (None, None)
        return cls(media_type=media_type, data=base64.b64encode(bytes(data)).decode("ascii"),
                   width=width, height=height)

    @classmethod
    def from_path(cls, path: Union[str, Path], media_type: Optional[str] = None) -> "ImageBlock":
        return cls.from_bytes(_read(path, "image"), media_type or mimetypes.guess_type(str(path))[0])

    @classmethod
    def from_url(cls, url: str, detail: Optional[ImageDetail] = None) -> "ImageBlock":
        return cls(url=url, detail=detail)


class DocumentBlock(_Block):
    """A document: a PDF (base64 ``data``, ``media_type="application/pdf"``,
    or a PDF's http(s) ``url``) or plain ``text``; ``title`` names it
    (OpenAI's ``filename``)."""

    type: Literal["document"] = "document"
    media_type: str = "application/pdf"
    data: Optional[str] = None  # base64, for PDFs
    text: Optional[str] = None  # for plain-text documents
    url: Optional[str] = None  # a PDF on the web
    title: Optional[str] = None
    cache_control: CacheControl = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "DocumentBlock":
        if sum(source is not None for source in (self.data, self.text, self.url)) != 1:
            raise ValueError("give exactly one of data (base64 PDF), text and url")
        return self

    @classmethod
    def from_url(cls, url: str, title: Optional[str] = None) -> "DocumentBlock":
        """A PDF by its http(s) URL (the provider fetches it)."""
        return cls(url=url, title=title)

    @classmethod
    def from_bytes(cls, data: bytes, title: Optional[str] = None) -> "DocumentBlock":
        if not isinstance(data, (bytes, bytearray)) or not bytes(data).startswith(b"%PDF"):
            raise LLMValidationError("DocumentBlock.from_bytes needs the bytes of a PDF")
        return cls(data=base64.b64encode(bytes(data)).decode("ascii"), title=title)

    @classmethod
    def from_path(cls, path: Union[str, Path]) -> "DocumentBlock":
        data = _read(path, "document")
        if data.startswith(b"%PDF"):
            return cls.from_bytes(data, title=Path(path).name)
        try:
            return cls.from_text(data.decode("utf-8"), title=Path(path).name)
        except UnicodeDecodeError:
            raise LLMValidationError(f"{Path(path).name} is neither a PDF nor UTF-8 text") from None

    @classmethod
    def from_text(cls, text: str, title: Optional[str] = None) -> "DocumentBlock":
        return cls(media_type="text/plain", text=text, title=title)


class ToolUseBlock(_Block):
    """A tool call the assistant made: ``id``, tool ``name``, ``input``."""

    type: Literal["tool_use"] = "tool_use"
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)
    cache_control: CacheControl = None  # Anthropic prompt-cache breakpoint

    def __init__(self, id: Any = None, name: Any = None, input: Any = None, /, **data: Any) -> None:
        super().__init__(*_given(id, name, input), **data)

    @classmethod
    def _positional(cls) -> tuple[str, ...]:
        return ("id", "name", "input")


class ToolResultBlock(_Block):
    """The answer to the tool call ``tool_use_id``: text or blocks.
    ``cache_control`` marks an Anthropic prompt-cache breakpoint."""

    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str = Field(min_length=1)
    content: Union[str, list["ContentBlock"]] = ""
    is_error: bool = False
    cache_control: CacheControl = None  # Anthropic prompt-cache breakpoint

    def __init__(self, tool_use_id: Any = None, content: Any = None, is_error: Any = None, /,
                 **data: Any) -> None:
        super().__init__(*_given(tool_use_id, content, is_error), **data)

    @classmethod
    def _positional(cls) -> tuple[str, ...]:
        return ("tool_use_id", "content", "is_error")

    @field_validator("content", mode="before")
    @classmethod
    def _blocks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [parse_block(item) for item in value]
        return value


class ThinkingBlock(_Block):
    """The model's reasoning (Anthropic ``thinking`` with its
    ``signature``; ``redacted`` holds a ``redacted_thinking`` block's data).
    Sent back unchanged in a tool round trip, as Anthropic requires."""

    type: Literal["thinking"] = "thinking"
    thinking: str = ""
    signature: Optional[str] = None
    redacted: Optional[str] = None

    def __init__(self, thinking: Any = None, signature: Any = None, /, **data: Any) -> None:
        super().__init__(*_given(thinking, signature), **data)

    @classmethod
    def _positional(cls) -> tuple[str, ...]:
        return ("thinking", "signature")


ContentBlock = Union[TextBlock, ImageBlock, DocumentBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock]
ToolResultBlock.model_rebuild()
_TYPED = (TextBlock, ImageBlock, DocumentBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock)


def parse_block(value: Any) -> ContentBlock:
    """A typed block from a typed block, or a native dict of either
    provider (Anthropic content blocks, OpenAI content parts)."""
    if isinstance(value, _TYPED):
        return value
    if not isinstance(value, dict):
        raise LLMValidationError(f"a content block must be a block or a dict, got {type(value).__name__}")
    kind = value.get("type")
    cache = value.get("cache_control")
    if kind in ("text", "input_text"):
        return TextBlock(text=value.get("text"), cache_control=cache)
    if kind == "image":
        source = value.get("source") or {}
        if source.get("type") == "url":
            return ImageBlock(url=source.get("url"), cache_control=cache)
        return ImageBlock(media_type=source.get("media_type"), data=source.get("data"), cache_control=cache)
    if kind == "image_url":
        image_url = value.get("image_url")
        if isinstance(image_url, dict):
            return _image_from_url(image_url.get("url"), image_url.get("detail"))
        return _image_from_url(image_url)
    if kind == "document":
        source = value.get("source") or {}
        if source.get("type") == "text":
            return DocumentBlock(media_type=source.get("media_type") or "text/plain", text=source.get("data"),
                                 title=value.get("title"), cache_control=cache)
        if source.get("type") == "url":
            return DocumentBlock(url=source.get("url"), title=value.get("title"), cache_control=cache)
        return DocumentBlock(media_type=source.get("media_type") or "application/pdf", data=source.get("data"),
                             title=value.get("title"), cache_control=cache)
    if kind == "file":
        file = value.get("file") or {}
        data_url = file.get("file_data") or ""
        media_type, data = _split_data_url(data_url)
        return DocumentBlock(media_type=media_type or "application/pdf", data=data, title=file.get("filename"))
    if kind == "tool_use":
        return ToolUseBlock(id=value.get("id"), name=value.get("name"), input=value.get("input") or {},
                            cache_control=cache)
    if kind == "tool_result":
        return ToolResultBlock(tool_use_id=value.get("tool_use_id"), content=value.get("content", ""),
                               is_error=bool(value.get("is_error", False)), cache_control=cache)
    if kind == "thinking":
        return ThinkingBlock(thinking=value.get("thinking", ""), signature=value.get("signature"))
    if kind == "redacted_thinking":
        return ThinkingBlock(redacted=value.get("data"))
    raise LLMValidationError(f"unknown content block type {str(kind)[:40]!r}")


def parse_blocks(value: Any) -> list[ContentBlock]:
    if not isinstance(value, (list, tuple)):
        raise LLMValidationError(f"content must be a string or a list of blocks, got {type(value).__name__}")
    blocks = []
    for index, item in enumerate(value):
        try:
            blocks.append(parse_block(item))
        except LLMValidationError as exc:
            raise LLMValidationError(f"content[{index}]: {exc.message}") from None
    return blocks


def blocks_text(blocks: Union[str, list[ContentBlock]]) -> str:
    """The plain text of some content (text blocks and text documents)."""
    if isinstance(blocks, str):
        return blocks
    parts = []
    for block in blocks:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolResultBlock):
            parts.append(blocks_text(block.content))
    return "".join(parts)


def _image_from_url(url: Any, detail: Any = None) -> ImageBlock:
    if isinstance(url, str) and url.startswith("data:"):
        media_type, data = _split_data_url(url)
        return ImageBlock(media_type=media_type, data=data, detail=detail)
    return ImageBlock(url=url, detail=detail)


def _split_data_url(url: str) -> tuple[Optional[str], Optional[str]]:
    """(media type, base64 data) of a ``data:<mime>;base64,<data>`` URL."""
    if not url.startswith("data:") or ";base64," not in url:
        raise LLMValidationError("expected a data:<media type>;base64,<data> URL")
    head, data = url[5:].split(";base64,", 1)
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise LLMValidationError("the data: URL does not hold base64 data") from None
    return head or None, data


def _read(path: Union[str, Path], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise LLMValidationError(f"cannot read the {what} {Path(path).name}: {exc.strerror}") from None


def _sniff_image(data: bytes) -> tuple[Optional[str], Optional[tuple[int, int]]]:
    """(media type, (width, height)) from an image's first bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", (width, height) if width and height else None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "image/gif", (width, height) if width and height else None
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp", None
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg", _jpeg_size(data)
    return None, None


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        length = struct.unpack(">H", data[index + 2:index + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5:index + 9])
            return (width, height) if width and height else None
        index += 2 + length
    return None
