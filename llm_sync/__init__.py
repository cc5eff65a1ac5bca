"""llm_sync: a synchronous, thread-safe client for LLM APIs.

Several API keys per provider, pooled keep-alive sessions, a middleware
chain per key, streaming, batches and futures — for code without asyncio.
"""

import logging

from .call import UNSET
from .client import LLMClient
from .config import LLMConfig
from .content import DocumentBlock, ImageBlock, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from .errors import (
    LLMAuthenticationError,
    LLMClosedError,
    LLMConfigError,
    LLMConnectionError,
    LLMError,
    LLMPoolExhaustedError,
    LLMProviderError,
    LLMQuotaExceededError,
    LLMRateLimitError,
    LLMStreamError,
    LLMStructuredOutputError,
    LLMTimeoutError,
    LLMTransportError,
    LLMValidationError,
)
from .manager import LLMManager, get_llm_manager, reset_llm_manager
from .middleware import (
    LoggingMiddleware,
    MetricsMiddleware,
    Middleware,
    MiddlewareChain,
    RateLimitMiddleware,
    RetryMiddleware,
)
from .models import LLMProvider, LLMResponse, Message, MessageRole, Usage
from .session import Conversation, SessionManager
from .streaming import Stream
from .tools import Tool, ToolCall

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "UNSET",
    "get_llm_manager",
    "reset_llm_manager",
    "LLMManager",
    "LLMClient",
    "LLMConfig",
    "LLMProvider",
    "LLMResponse",
    "Message",
    "MessageRole",
    "Usage",
    "SessionManager",
    "TextBlock",
    "ImageBlock",
    "DocumentBlock",
    "ToolUseBlock",
    "ToolResultBlock",
    "ThinkingBlock",
    "Tool",
    "ToolCall",
    "Conversation",
    "Stream",
    "Middleware",
    "MiddlewareChain",
    "LoggingMiddleware",
    "MetricsMiddleware",
    "RetryMiddleware",
    "RateLimitMiddleware",
    "LLMError",
    "LLMConfigError",
    "LLMValidationError",
    "LLMClosedError",
    "LLMPoolExhaustedError",
    "LLMTransportError",
    "LLMConnectionError",
    "LLMTimeoutError",
    "LLMStreamError",
    "LLMStructuredOutputError",
    "LLMProviderError",
    "LLMAuthenticationError",
    "LLMRateLimitError",
    "LLMQuotaExceededError",
]
