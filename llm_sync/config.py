"""Configuration: pydantic models, YAML loading and ``${ENV}`` interpolation.

Validated once, when a manager is built; the hot path only reads the
resulting frozen objects. Any problem raises :class:`LLMConfigError` naming
the field path (``providers.anthropic.rate_limits[1].requests_per_minute``).
Unknown fields are errors, never silently ignored.

Config errors never carry a secret, whatever the entry point (YAML, a
dict, ``LLMConfig(...)``, ``model_validate``): messages are built from
field paths and our own words, never from pydantic's text about the input;
a field name that is not ours (an indentation slip can turn a key into
one) is shown only when it looks like a name. Keys, header values and
``base_url`` are checked once here (:mod:`llm_sync.sendable`) so that
nothing unsendable reaches a call; ``base_url`` credentials are refused.

Every key under ``providers:`` is an endpoint name (case-insensitive, kept
lower-case); its ``kind`` names the wire format, looked up in the provider
registry (:func:`llm_sync.providers.register_provider`), and defaults to
the name, so ``anthropic:`` and ``openai:`` need no ``kind``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping, Optional, TypeVar, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from .budget import DEFAULT_MAX_PAUSE as _DEFAULT_MAX_PAUSE
from .config_source import ENDPOINT_NAME, config_errors, interpolate, looks_like_name, read_yaml
from .errors import LLMConfigError, redact
from .models import LLMProvider
from .providers import provider_class, provider_kinds
from .sendable import base_url_problem, header_name_problem, header_value_problem, key_problem

__all__ = [
    "LLMConfig",
    "ProviderConfig",
    "PoolConfig",
    "RateLimitConfig",
    "TimeoutConfig",
    "load_config",
    "config_from_env",
    "DEFAULT_BASE_URLS",
    "DEFAULT_MODELS",
    "default_base_url",
    "default_model",
    "endpoint_name",
]

# Per kind. A registered third-party kind may carry its own as the class
# attributes ``default_base_url`` / ``default_model``.
DEFAULT_BASE_URLS: dict[str, str] = {
    LLMProvider.ANTHROPIC.value: "https://api.anthropic.com",
    LLMProvider.OPENAI.value: "https://api.openai.com",
}
DEFAULT_MODELS: dict[str, str] = {
    LLMProvider.ANTHROPIC.value: "claude-3-5-haiku-20241022",
    LLMProvider.OPENAI.value: "gpt-4o-mini",
}
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_RETRY_BUDGET = 60.0  # seconds a call may spend waiting between re-sends
# The longest a server's retry hint may pause a key (budget.DEFAULT_MAX_PAUSE).
DEFAULT_MAX_PAUSE = _DEFAULT_MAX_PAUSE
DEFAULT_ACQUIRE_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 90.0
# Without pool.max_size: this many calls in flight per key.
DEFAULT_LEASES_PER_KEY = 4
ENV_KEY_VARIABLES = {
    LLMProvider.ANTHROPIC.value: ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    LLMProvider.OPENAI.value: ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
}
CONFIG_PATH_VARIABLE = "LLM_SYNC_CONFIG"
DEFAULT_CONFIG_PATH = Path("config") / "llm.yaml"


def endpoint_name(name: Union[LLMProvider, str]) -> str:
    """The canonical (lower-case) form of an endpoint name; LLMProvider
    members are names too."""
    return str(name.value if isinstance(name, LLMProvider) else name).strip().lower()


def default_base_url(kind: str) -> Optional[str]:
    """Where an endpoint of ``kind`` goes without a ``base_url``."""
    return getattr(provider_class(kind), "default_base_url", None) or DEFAULT_BASE_URLS.get(kind)


def default_model(kind: str) -> Optional[str]:
    """The model an endpoint of ``kind`` uses without ``models``."""
    return getattr(provider_class(kind), "default_model", None) or DEFAULT_MODELS.get(kind)


_M = TypeVar("_M", bound="_Strict")


class _Strict(BaseModel):
    """Frozen, unknown fields refused, and built from any entry point
    (``Model(...)``, ``model_validate``, ``model_validate_json``) with an
    :class:`LLMConfigError` rather than pydantic's ValidationError, whose
    text quotes the input (a key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        config_errors(lambda: super(_Strict, self).__init__(**data))

    # Only a direct call comes here: nested models are validated by pydantic
    # itself, so an error deep down keeps its whole path (RootModel does the same).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls: type[_M], obj: Any, *args: Any, **kwargs: Any) -> _M:
        return config_errors(lambda: super(_Strict, cls).model_validate(obj, *args, **kwargs))

    @classmethod
    def model_validate_json(cls: type[_M], json_data: Any, *args: Any, **kwargs: Any) -> _M:
        return config_errors(lambda: super(_Strict, cls).model_validate_json(json_data, *args, **kwargs))

    @classmethod
    def model_validate_strings(cls: type[_M], obj: Any, *args: Any, **kwargs: Any) -> _M:
        return config_errors(lambda: super(_Strict, cls).model_validate_strings(obj, *args, **kwargs))


def _api_key(value: Any) -> Any:
    """One key, as it will be sent: problems name the key's index, never its text."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    problem = key_problem(value)
    if problem:
        raise ValueError(f"the key {problem}")
    return value


# Seconds a wait may last: ``inf`` is no bound at all and ``nan`` compares
# false with everything, so neither is a timeout.
FiniteSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TimeoutConfig(_Strict):
    """``connect`` and ``read`` go to requests; ``total`` bounds a whole call
    (waiting for a lease, limits and retries included). Each is a positive,
    finite number of seconds (no ``total``: None)."""

    connect: FiniteSeconds = DEFAULT_CONNECT_TIMEOUT
    read: FiniteSeconds = DEFAULT_READ_TIMEOUT
    total: Optional[FiniteSeconds] = None

    @classmethod
    def coerce(cls, value: Any) -> Any:
        """A bare number sets connect (capped at the default) and read."""
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            if not 0 < value < float("inf"):
                raise ValueError("timeout must be a positive, finite number of seconds")
            return {"connect": min(float(value), DEFAULT_CONNECT_TIMEOUT), "read": float(value)}
        return value


class RateLimitConfig(_Strict):
    """Per-minute limits of one key (or group); ``None`` means not limited
    (or learned from the provider's headers). With ``models`` (``fnmatch``
    patterns) the entry is a model class: the models it matches share one
    set of buckets with these limits, on every key or group."""

    requests_per_minute: Optional[PositiveInt] = None
    input_tokens_per_minute: Optional[PositiveInt] = None
    output_tokens_per_minute: Optional[PositiveInt] = None
    tokens_per_minute: Optional[PositiveInt] = None
    burst_seconds: Optional[FiniteSeconds] = None
    models: Optional[list[Annotated[str, Field(min_length=1)]]] = Field(default=None, min_length=1)

    def limits_equal(self, other: "RateLimitConfig") -> bool:
        """The same limits (``models`` aside)."""
        return self.model_dump(exclude={"models"}) == other.model_dump(exclude={"models"})


class ApiKeyEntry(_Strict):
    """The long form of an ``api_keys`` entry: ``{key: ..., group: acme}``.
    Keys of one group share one set of buckets (one organisation's limit)."""

    key: Annotated[SecretStr, BeforeValidator(_api_key)]
    group: Optional[Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]] = None


class PoolConfig(_Strict):
    max_size: Optional[PositiveInt] = None
    acquire_timeout: FiniteSeconds = DEFAULT_ACQUIRE_TIMEOUT
    idle_timeout: FiniteSeconds = DEFAULT_IDLE_TIMEOUT


class ProviderConfig(_Strict):
    """One endpoint. ``kind`` is filled in from the endpoint's name by
    :class:`LLMConfig` when left out."""

    kind: Optional[str] = None
    api_keys: list[Annotated[SecretStr, BeforeValidator(_api_key)]] = Field(min_length=1)
    models: list[str] = Field(default_factory=list)
    base_url: Optional[str] = None
    timeout: TimeoutConfig = TimeoutConfig()
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=20)
    retry_budget: Optional[FiniteSeconds] = DEFAULT_RETRY_BUDGET
    # Seconds; a longer or absurd retry-after from the server is cut to it.
    max_pause: float = Field(default=DEFAULT_MAX_PAUSE, gt=0, allow_inf_nan=False)
    rate_limits: list[RateLimitConfig] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    pool: Optional[PoolConfig] = None
    token_counting: Literal["estimate", "native"] = "estimate"
    # Do prompt-cache reads count toward input-token limits? None: the
    # kind's default (openai: yes; anthropic: no, as on current models).
    cache_reads_count_toward_limits: Optional[bool] = None
    # Each key's group (None: the key is its own scope), from ``api_keys``.
    _groups: tuple[Optional[str], ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _key_groups(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> "ProviderConfig":
        """``{key, group}`` entries of ``api_keys`` become plain keys; their
        groups are kept beside them (see :meth:`key_group`)."""
        groups: Optional[list[Optional[str]]] = None
        if isinstance(data, Mapping) and isinstance(data.get("api_keys"), list):
            keys: list[Any] = []
            groups = []
            for index, item in enumerate(data["api_keys"]):
                if isinstance(item, Mapping):
                    entry = _key_entry(index, item)
                    keys.append(entry.key)
                    groups.append(entry.group)
                elif isinstance(item, str) and "," in item:
                    parts = [part for part in re.split(r"[ \t]*,[ \t]*", item) if part]
                    keys.extend(parts)
                    groups.extend([None] * len(parts))
                elif item != "":
                    keys.append(item)
                    groups.append(None)
            data = {**data, "api_keys": keys}
        model = handler(data)
        assert isinstance(model, ProviderConfig)
        if groups is not None and any(groups):
            model._groups = tuple(groups)
            model._check_groups()
        return model

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """Accept a comma-separated string (how env vars carry several keys).
        Spaces around the commas separate; any other whitespace is refused
        with the key, not stripped."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            keys: list[Any] = []
            for item in value:
                if isinstance(item, str) and "," in item:
                    keys.extend(part for part in re.split(r"[ \t]*,[ \t]*", item) if part)
                elif item != "":
                    keys.append(item)
            return keys
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _registered_kind(cls, value: Any) -> Any:
        if value is None:  # only LLMConfig passes an explicit None: the name is no kind
            raise ValueError(
                "required: the endpoint's name is not a provider kind, so say which wire format it "
                f"speaks (kind: {' or '.join(provider_kinds())})"
            )
        if not isinstance(value, str):
            return value
        try:
            provider_class(value)
        except LLMConfigError as exc:
            raise ValueError(exc.message) from None
        return value.strip().lower()

    @field_validator("timeout", mode="before")
    @classmethod
    def _coerce_timeout(cls, value: Any) -> Any:
        return TimeoutConfig.coerce(value)

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _single_limit(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        problem = base_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """Sent on every request: refused now if they cannot be. A bad name
        is not quoted (a slip can make it a key); values never are. A header
        the key's own auth header would overwrite (``authorization`` on
        OpenAI-kind, ``x-api-key`` on Anthropic-kind) is a mistake; other
        credential headers a gateway needs are fine (never shown)."""
        taken = {name.lower() for name in _auth_header_names(info.data.get("kind"))}
        for index, (name, header) in enumerate(value.items()):
            if header_name_problem(name):
                raise ValueError(f"header #{index + 1}: its name is not a valid HTTP header name")
            if name.lower() in taken:
                raise ValueError(f"{name} is set from api_keys on every request; put the key in api_keys")
            problem = header_value_problem(header)
            if problem:
                raise ValueError(f"the value of header {name} {problem}")
        return value

    def __repr_args__(self) -> Iterator[tuple[Optional[str], Any]]:
        """Header values may be credentials (a gateway's token): names only."""
        for name, value in super().__repr_args__():
            yield name, ({header: "***" for header in value} if name == "headers" else value)

    @model_validator(mode="after")
    def _limits_match_keys(self) -> "ProviderConfig":
        n_limits, n_keys = len(self.key_limits), len(self.api_keys)
        if n_limits not in (0, 1, n_keys):
            raise ValueError(
                f"rate_limits has {n_limits} entries without models but api_keys has {n_keys}: "
                "give one entry for every key, or a single entry for all"
            )
        seen: set[str] = set()
        for entry in self.model_classes:
            for pattern in entry.models or ():
                if pattern in seen:
                    raise ValueError(f"rate_limits: the models pattern {pattern!r} is in two entries")
                seen.add(pattern)
        if len({key.get_secret_value() for key in self.api_keys}) != n_keys:
            raise ValueError("api_keys contains the same key twice")
        return self

    @model_validator(mode="after")
    def _has_base_url(self) -> "ProviderConfig":
        if self.kind is not None and self.base_url is None and default_base_url(self.kind) is None:
            raise ValueError(f"base_url is required: kind {self.kind!r} has no default server")
        return self

    def _check_groups(self) -> None:
        """A group is one organisation's limit: per-key entries (one
        ``rate_limits`` entry per key) must give every key of a group the
        same limits, or the group's limit would be ambiguous."""
        first: dict[str, int] = {}
        for index, group in enumerate(self._groups):
            if group is None:
                continue
            if group not in first:
                first[group] = index
                continue
            mine, theirs = self.limits_for_key(index), self.limits_for_key(first[group])
            if mine is not None and theirs is not None and not mine.limits_equal(theirs):
                raise ValueError(
                    f"rate_limits: keys #{first[group] + 1} and #{index + 1} are both in group {group!r} "
                    "but have different limits; a group shares one limit, so give its keys the same entry"
                )

    @property
    def key_limits(self) -> list[RateLimitConfig]:
        """The ``rate_limits`` entries without ``models``: per key, or one for all."""
        return [entry for entry in self.rate_limits if entry.models is None]

    @property
    def model_classes(self) -> list[RateLimitConfig]:
        """The ``rate_limits`` entries with ``models``, in order (first match wins)."""
        return [entry for entry in self.rate_limits if entry.models is not None]

    def limits_for_key(self, index: int) -> Optional[RateLimitConfig]:
        """Key ``index``'s limits for models no class matches."""
        limits = self.key_limits
        if not limits:
            return None
        return limits[index if len(limits) > 1 else 0]

    def key_group(self, index: int) -> Optional[str]:
        """Key ``index``'s group (None: the key is a scope of its own)."""
        return self._groups[index] if index < len(self._groups) else None


def _key_entry(index: int, item: Mapping[Any, Any]) -> ApiKeyEntry:
    """One ``{key, group}`` entry; problems name the entry's index and
    field, never the key."""
    unknown = [name for name in item if name not in ("key", "group")]
    if unknown:
        shown = ", ".join(repr(n) if isinstance(n, str) and looks_like_name(n) else "?" for n in unknown)
        raise ValueError(f"api_keys[{index}]: unknown field {shown} (an entry has key and group)")
    try:
        return ApiKeyEntry.model_validate(dict(item))
    except LLMConfigError as exc:
        detail = exc.message.removeprefix("invalid configuration: ")
        raise ValueError(f"api_keys[{index}].{detail}") from None


class LLMConfig(_Strict):
    """``providers`` maps endpoint names to their settings; every entry's
    ``kind`` is set once validated."""

    providers: dict[str, ProviderConfig] = Field(min_length=1)
    pool: PoolConfig = PoolConfig()
    rate_limit_backend: str = "memory"
    on_backend_error: Literal["fail_open", "fail_closed"] = "fail_open"
    # Fail-open fallback of a shared backend: each process limits itself to
    # local_share of every limit; unset, 1/backend_processes (how many
    # processes share the limits).
    local_share: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    backend_processes: int = Field(default=1, ge=1, le=100_000)

    @field_validator("providers", mode="before")
    @classmethod
    def _endpoint_names(cls, value: Any) -> Any:
        """Names to lower case; ``kind`` defaults to the name when that is a
        registered kind (else ProviderConfig refuses the missing kind)."""
        if not isinstance(value, Mapping):
            return value
        kinds = set(provider_kinds())
        endpoints: dict[str, Any] = {}
        for raw_name, entry in value.items():
            if not isinstance(raw_name, str) or not ENDPOINT_NAME.match(endpoint_name(raw_name)):
                shown = repr(raw_name) if isinstance(raw_name, str) and looks_like_name(raw_name) else \
                    f"#{len(endpoints) + 1}"
                raise ValueError(
                    f"endpoint name {shown} must be letters, digits, '_', '.' or '-' "
                    "(names are case-insensitive)"
                )
            name = endpoint_name(raw_name)
            if name in endpoints:
                raise ValueError(f"endpoint {name!r} is configured twice (names are case-insensitive)")
            implicit = name if name in kinds else None
            if isinstance(entry, Mapping) and "kind" not in entry:
                entry = {"kind": implicit, **entry}
            elif isinstance(entry, ProviderConfig) and entry.kind is None:
                if implicit is None:
                    raise ValueError(f"{name}.kind: required, the name {name!r} is not a provider kind")
                entry = entry.model_copy(update={"kind": implicit})
            endpoints[name] = entry
        return endpoints

    @field_validator("rate_limit_backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be 'memory' or a redis:// URL")
        return value

    @property
    def fallback_share(self) -> float:
        """The share of each limit a process keeps when a shared backend
        fails open."""
        return self.local_share if self.local_share is not None else 1.0 / self.backend_processes

    def __repr_args__(self) -> Iterator[tuple[Optional[str], Any]]:
        """A ``redis://:password@host`` backend URL shows without its password."""
        for name, value in super().__repr_args__():
            yield name, (redact(value) if name == "rate_limit_backend" else value)

    def endpoint(self, name: Union[LLMProvider, str]) -> ProviderConfig:
        """The settings of endpoint ``name``; LLMConfigError naming the
        configured endpoints when there is none by that name."""
        settings = self.providers.get(endpoint_name(name))
        if settings is None:
            configured = ", ".join(self.providers) or "none"
            raise LLMConfigError(f"endpoint {endpoint_name(name)!r} is not configured (configured: {configured})")
        return settings

    def kind_of(self, name: Union[LLMProvider, str]) -> str:
        kind = self.endpoint(name).kind
        assert kind is not None  # set by validation
        return kind

    def pool_for(self, provider: Union[LLMProvider, str]) -> PoolConfig:
        return self.endpoint(provider).pool or self.pool

    # Convenience constructors mirror the manager's.
    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "LLMConfig":
        return load_config(Path(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LLMConfig":
        return load_config(dict(data))


def _auth_header_names(kind: Optional[str]) -> list[str]:
    """The headers an endpoint of ``kind`` puts its key in (empty for a
    kind that cannot be asked)."""
    if kind is None:
        return []
    try:
        probe = provider_class(kind)(default_base_url(kind) or "http://localhost", {}, endpoint=kind)
        return list(probe.auth_headers("probe"))
    except Exception:  # a third-party kind with other needs: not checked
        return []


def load_config(
    source: Union["LLMConfig", Mapping[str, Any], str, Path, None] = None,
    env: Optional[Mapping[str, str]] = None,
) -> LLMConfig:
    """Build a validated config from an LLMConfig, a dict or a YAML path.

    With no source: ``$LLM_SYNC_CONFIG``, then ``./config/llm.yaml``, then
    provider keys from the environment.
    """
    env = os.environ if env is None else env
    if isinstance(source, LLMConfig):
        return source
    if source is None:
        if env.get(CONFIG_PATH_VARIABLE):
            source = Path(env[CONFIG_PATH_VARIABLE])
        elif DEFAULT_CONFIG_PATH.is_file():
            source = DEFAULT_CONFIG_PATH
        else:
            return config_from_env(env)
    if isinstance(source, (str, Path)):
        source = read_yaml(Path(source))
    if not isinstance(source, Mapping):
        raise LLMConfigError(f"config must be a path, a dict or an LLMConfig, got {type(source).__name__}")
    data = interpolate(dict(source), "", env)
    return LLMConfig.model_validate(data)


def config_from_env(env: Optional[Mapping[str, str]] = None) -> LLMConfig:
    """Providers from ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` (several
    keys comma-separated) and the matching ``*_BASE_URL``."""
    env = os.environ if env is None else env
    providers: dict[str, Any] = {}
    for provider, (key_var, url_var) in ENV_KEY_VARIABLES.items():
        if env.get(key_var, "").strip():
            entry: dict[str, Any] = {"api_keys": env[key_var]}
            if env.get(url_var):
                entry["base_url"] = env[url_var]
            providers[provider] = entry
    if not providers:
        raise LLMConfigError(
            f"no configuration found: pass a config, set ${CONFIG_PATH_VARIABLE}, create "
            f"{DEFAULT_CONFIG_PATH}, or set ANTHROPIC_API_KEY / OPENAI_API_KEY"
        )
    return load_config({"providers": providers}, env)
