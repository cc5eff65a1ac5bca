"""Wire formats. ``create_provider`` maps an LLMProvider to its class."""

from __future__ import annotations

from typing import Optional

from ..models import LLMProvider
from .anthropic import AnthropicProvider
from .base import LLMRequest, Provider, StreamDecoder
from .openai import OpenAIProvider

__all__ = ["AnthropicProvider", "OpenAIProvider", "Provider", "LLMRequest", "StreamDecoder", "create_provider"]

PROVIDER_CLASSES: dict[LLMProvider, type[Provider]] = {
    LLMProvider.ANTHROPIC: AnthropicProvider,
    LLMProvider.OPENAI: OpenAIProvider,
}


def create_provider(provider: LLMProvider, base_url: str, headers: Optional[dict[str, str]] = None) -> Provider:
    return PROVIDER_CLASSES[provider](base_url, headers)
