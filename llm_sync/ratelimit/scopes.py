"""Which scope a call is charged to: its key (or the key's group) × its
model's class.

A class is a ``rate_limits`` entry with ``models`` (``fnmatch`` patterns,
first match wins), named by its patterns; a model no class matches is a
class of its own, named by the model, with its key's limits (providers
limit per model). Scopes are made on first use and kept: their
bookkeeping (probing, calls in flight) outlives any one call.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterator, Optional, Sequence

from ..config import RateLimitConfig
from .key import KeyLimiter, Scope, scope_id

__all__ = ["Scopes", "class_name"]


def class_name(entry: RateLimitConfig) -> str:
    """A model class's name: its patterns, comma-separated."""
    return ",".join(entry.models or ())


class Scopes:
    """Every scope of one limiter, by id. No lock of its own: only used
    under the owning ProviderLimiter's lock (or before it is shared)."""

    def __init__(self, model_classes: Sequence[RateLimitConfig], default_model: str, *,
                 refunds_output: bool) -> None:
        self.model_classes = [entry for entry in model_classes if entry.models]
        self.default_model = default_model
        self.refunds_output = refunds_output
        self._scopes: dict[str, Scope] = {}

    def __repr__(self) -> str:
        return f"<Scopes {len(self._scopes)}>"

    def __iter__(self) -> Iterator[Scope]:
        return iter(list(self._scopes.values()))

    def model_class(self, key: KeyLimiter, model: str) -> tuple[str, Optional[RateLimitConfig]]:
        """``model``'s class and its limits on ``key``: the first class whose
        patterns match, else the model itself with the key's limits."""
        for entry in self.model_classes:
            if any(fnmatchcase(model, pattern) for pattern in entry.models or ()):
                return class_name(entry), entry
        return model, key.config

    def resolve(self, key: KeyLimiter, model: Optional[str]) -> Scope:
        """``key``'s scope for ``model`` (None or empty: the default model),
        made on first use."""
        model_class, config = self.model_class(key, model or self.default_model)
        sid = scope_id(key.owner, model_class)
        scope = self._scopes.get(sid)
        if scope is None:
            scope = self._scopes[sid] = Scope(key.owner, model_class, config, refunds_output=self.refunds_output)
        return scope

    def moved(self, scope: Scope, owner: str) -> tuple[Scope, bool]:
        """``scope``'s model class under another owner (a key that learned
        its organisation), made on first use with ``scope``'s configured
        limits; and whether it was made now."""
        sid = scope_id(owner, scope.model_class)
        found = self._scopes.get(sid)
        if found is not None:
            return found, False
        found = self._scopes[sid] = Scope(owner, scope.model_class, None, refunds_output=self.refunds_output)
        found.configured = dict(scope.configured)
        found.burst_seconds = scope.burst_seconds
        return found, True

    def label(self, scope: Scope) -> str:
        """How status names a scope: its class (or model)."""
        return scope.model_class or self.default_model
