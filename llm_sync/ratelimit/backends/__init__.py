"""Where rate-limit bucket state lives: this process, or a shared store."""

from .base import RateLimitBackend
from .memory import MemoryBackend

__all__ = ["RateLimitBackend", "MemoryBackend"]
