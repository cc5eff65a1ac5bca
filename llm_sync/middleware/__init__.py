"""Middleware: the base class, the chain, and the built-ins."""

from .base import Middleware, MiddlewareChain

__all__ = ["Middleware", "MiddlewareChain"]
