"""Configuration: pydantic models, YAML loading and ``${ENV}`` interpolation.

Validated once, when a manager is built; the hot path only reads the
resulting frozen objects. Any problem raises :class:`LLMConfigError` naming
the field path (``providers.anthropic.rate_limits[1].requests_per_minute``).
Unknown fields are errors, never silently ignored.

Every key under ``providers:`` is an endpoint name (case-insensitive, kept
lower-case); its ``kind`` names the wire format, looked up in the provider
registry (:func:`llm_sync.providers.register_provider`), and defaults to
the name, so ``anthropic:`` and ``openai:`` need no ``kind``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .budget import DEFAULT_MAX_PAUSE as _DEFAULT_MAX_PAUSE
from .errors import LLMConfigError
from .models import LLMProvider
from .providers import provider_class, provider_kinds

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
_ENDPOINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    """Per-minute limits of one key; ``None`` means not limited (or learned
    from the provider's headers)."""

    requests_per_minute: Optional[PositiveInt] = None
    input_tokens_per_minute: Optional[PositiveInt] = None
    output_tokens_per_minute: Optional[PositiveInt] = None
    tokens_per_minute: Optional[PositiveInt] = None
    burst_seconds: Optional[PositiveFloat] = None


class PoolConfig(_Strict):
    max_size: Optional[PositiveInt] = None
    acquire_timeout: PositiveFloat = DEFAULT_ACQUIRE_TIMEOUT
    idle_timeout: PositiveFloat = DEFAULT_IDLE_TIMEOUT


class ProviderConfig(_Strict):
    """One endpoint. ``kind`` is filled in from the endpoint's name by
    :class:`LLMConfig` when left out."""

    kind: Optional[str] = None
    api_keys: list[SecretStr] = Field(min_length=1)
    models: list[str] = Field(default_factory=list)
    base_url: Optional[str] = None
    timeout: TimeoutConfig = TimeoutConfig()
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=20)
    retry_budget: Optional[PositiveFloat] = DEFAULT_RETRY_BUDGET
    # Seconds; a longer or absurd retry-after from the server is cut to it.
    max_pause: float = Field(default=DEFAULT_MAX_PAUSE, gt=0, allow_inf_nan=False)
    rate_limits: list[RateLimitConfig] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    pool: Optional[PoolConfig] = None
    token_counting: Literal["estimate", "native"] = "estimate"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """Accept a comma-separated string (how env vars carry several keys)."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            keys: list[Any] = []
            for item in value:
                if isinstance(item, str):
                    keys.extend(part.strip() for part in item.split(",") if part.strip())
                else:
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
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("base_url must start with http:// or https:// and name a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _limits_match_keys(self) -> "ProviderConfig":
        n_limits, n_keys = len(self.rate_limits), len(self.api_keys)
        if n_limits not in (0, 1, n_keys):
            raise ValueError(
                f"rate_limits has {n_limits} entries but api_keys has {n_keys}: "
                "give one entry for every key, or a single entry for all"
            )
        if len({key.get_secret_value() for key in self.api_keys}) != n_keys:
            raise ValueError("api_keys contains the same key twice")
        return self

    @model_validator(mode="after")
    def _has_base_url(self) -> "ProviderConfig":
        if self.kind is not None and self.base_url is None and default_base_url(self.kind) is None:
            raise ValueError(f"base_url is required: kind {self.kind!r} has no default server")
        return self

    def limits_for_key(self, index: int) -> Optional[RateLimitConfig]:
        if not self.rate_limits:
            return None
        return self.rate_limits[index if len(self.rate_limits) > 1 else 0]


class LLMConfig(_Strict):
    """``providers`` maps endpoint names to their settings; every entry's
    ``kind`` is set once validated."""

    providers: dict[str, ProviderConfig] = Field(min_length=1)
    pool: PoolConfig = PoolConfig()
    rate_limit_backend: str = "memory"
    on_backend_error: Literal["fail_open", "fail_closed"] = "fail_open"
    local_share: float = Field(default=1.0, gt=0.0, le=1.0)

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
            if not isinstance(raw_name, str) or not _ENDPOINT_NAME.match(endpoint_name(raw_name)):
                raise ValueError(
                    f"endpoint name {raw_name!r} must be letters, digits, '_', '.' or '-' "
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


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _interpolate(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise LLMConfigError(
                f"{path or 'config'}: environment variable {name} is not set "
                f"(write ${{{name}:-}} to make it optional)"
            )

        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "constrained-")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "config"


def _validation_message(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{_field_path(err['loc'])}: {message}")
    return "invalid configuration: " + "; ".join(lines)


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
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise LLMConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            # Only the problem and its position: the YAML error's own text
            # quotes the offending line, which may hold a key.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise LLMConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
        if not isinstance(data, Mapping):
            raise LLMConfigError(f"config file {path} must hold a mapping at the top level")
        source = data
    if not isinstance(source, Mapping):
        raise LLMConfigError(f"config must be a path, a dict or an LLMConfig, got {type(source).__name__}")
    data = _interpolate(dict(source), "", env)
    try:
        return LLMConfig.model_validate(data)
    except ValidationError as exc:
        raise LLMConfigError(_validation_message(exc)) from None


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
