"""Wire formats, and the registry that maps an endpoint ``kind`` to its class.

Every key under ``providers:`` in the config is an endpoint name; its
``kind`` (``anthropic``, ``openai``, or one a third party registered) picks
the :class:`Provider` class that speaks its wire format::

    from llm_sync.providers import register_provider
    from llm_sync.providers.openai import OpenAIProvider

    class AcmeProvider(OpenAIProvider):
        default_base_url = "https://llm.acme.test"   # optional
        default_model = "acme-small"                # optional

    register_provider("acme", AcmeProvider)
    # config: providers: {acme: {api_keys: [...]}}  or  {mine: {kind: acme, ...}}

Threading contract: registration normally happens at import time; the
registry is guarded by a lock, so it may also happen from any thread. A
kind registered after a manager was built affects only later managers.
"""

from __future__ import annotations

import inspect
import re
import threading
from typing import Mapping, Optional

from ..errors import LLMConfigError
from .anthropic import AnthropicProvider
from .base import LLMRequest, Provider, StreamDecoder
from .openai import OpenAIProvider

__all__ = [
    "AnthropicProvider",
    "OpenAIProvider",
    "Provider",
    "LLMRequest",
    "StreamDecoder",
    "create_provider",
    "provider_class",
    "provider_kinds",
    "register_provider",
    "unregister_provider",
]

_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]*$")
_BUILTIN: dict[str, type[Provider]] = {"anthropic": AnthropicProvider, "openai": OpenAIProvider}
_registry: dict[str, type[Provider]] = dict(_BUILTIN)
_registry_lock = threading.Lock()


def _normalise(kind: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"a provider kind is a string, got {type(kind).__name__}")
    return str(getattr(kind, "value", kind)).strip().lower()


def register_provider(kind: str, cls: type[Provider], *, replace: bool = False) -> None:
    """Make ``kind`` (case-insensitive) resolve to ``cls``.

    ``cls`` is a concrete :class:`Provider` subclass constructed as
    ``cls(base_url, headers, endpoint=name)``; optional class attributes
    ``default_base_url`` and ``default_model`` are used when an endpoint of
    this kind leaves ``base_url`` or ``models`` out. Registering a taken kind
    raises ValueError unless ``replace=True`` (registering the same class
    again is a no-op).
    """
    name = _normalise(kind)
    if not _KIND_PATTERN.match(name):
        raise ValueError(f"provider kind {kind!r} must be letters, digits, '_', '.' or '-', starting with a letter")
    if not (inspect.isclass(cls) and issubclass(cls, Provider)):
        raise TypeError(f"{cls!r} is not a subclass of llm_sync.providers.Provider")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise TypeError(f"{cls.__name__} is abstract (missing: {missing})")
    with _registry_lock:
        current = _registry.get(name)
        if current is not None and current is not cls and not replace:
            raise ValueError(f"provider kind {name!r} is already registered to {current.__name__}; "
                             "pass replace=True to replace it")
        _registry[name] = cls


def unregister_provider(kind: str) -> None:
    """Forget a registered kind; a built-in kind goes back to its own class."""
    name = _normalise(kind)
    with _registry_lock:
        if name in _BUILTIN:
            _registry[name] = _BUILTIN[name]
        else:
            _registry.pop(name, None)


def provider_kinds() -> list[str]:
    """The registered kinds, sorted."""
    with _registry_lock:
        return sorted(_registry)


def provider_class(kind: str) -> type[Provider]:
    """The class registered for ``kind``; LLMConfigError for an unknown kind."""
    name = _normalise(kind)
    with _registry_lock:
        cls = _registry.get(name)
        known = sorted(_registry)
    if cls is None:
        raise LLMConfigError(
            f"unknown provider kind {name!r}; registered kinds: {', '.join(known)} "
            "(llm_sync.providers.register_provider adds one)"
        )
    return cls


def create_provider(kind: str, base_url: str, headers: Optional[Mapping[str, str]] = None,
                    *, endpoint: Optional[str] = None) -> Provider:
    """A provider of ``kind`` for the endpoint called ``endpoint`` (default: the kind)."""
    name = _normalise(kind)
    provider = provider_class(name)(base_url, dict(headers or {}), endpoint=endpoint or name)
    provider.kind = name  # the kind it was registered under, also for a subclass of a built-in
    return provider
