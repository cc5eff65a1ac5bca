"""Rate-limit buckets for the provider simulator, per scope and model class.

Clients must be tested against limits that behave like the real providers',
so every configured figure is a continuous-refill token bucket: it refills at
``limit / 60`` per second up to ``limit * burst_seconds / 60``.  All maths uses
the simulator's injectable monotonic ``clock`` so tests can move time by hand;
header timestamps use the injectable ``wall_clock``.

Anthropic keys get ``requests``, ``input_tokens`` and ``output_tokens`` buckets
(output is charged ``max_tokens`` up front and the unused part is refunded).
OpenAI keys get ``requests`` and one ``tokens`` bucket charged prompt tokens
plus the requested completion tokens, never refunded.  The two families have
separate buckets, as if each key were an account at each provider.

A :class:`KeyLimiter` is one such set of buckets. A :class:`ScopeLimiter`
holds every set of one scope (a key, or a group of keys sharing limits as an
organisation does): one set per model class (models matching a class's
``fnmatch`` patterns share it) and, for the models no class matches, one set
per model name (``per_model``, as real providers) or one shared by all of
them, with the scope's default limits; each set is created full on first use.
"""

from __future__ import annotations

import fnmatch
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

__all__ = [
    "Admission",
    "KeyLimiter",
    "ModelClass",
    "ScopeLimiter",
    "SimLimits",
    "TokenBucket",
    "format_duration",
    "format_rfc3339",
    "whole_seconds",
]

Clock = Callable[[], float]
_EPSILON = 1e-9


@dataclass(frozen=True)
class SimLimits:
    """Per-minute limits for one key, group or model class; ``None`` leaves
    that figure unlimited.

    ``tokens_per_minute`` is the OpenAI combined figure (falls back to
    ``input_tokens_per_minute``); Anthropic uses the input/output figures.
    ``burst_seconds`` sets bucket capacity: 60 lets a whole minute's worth
    through at once, 2 only two seconds' worth.
    """

    requests_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in (
            "requests_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
            "tokens_per_minute",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if not self.burst_seconds > 0:
            raise ValueError(f"burst_seconds must be positive, got {self.burst_seconds!r}")


class TokenBucket:
    """A continuous-refill bucket; callers hold the owning key's lock."""

    def __init__(self, per_minute: float, burst_seconds: float, now: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = per_minute * burst_seconds / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        """Add what has trickled in since the last look (a clock going back adds nothing)."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0 if it fits now)."""
        return max(0.0, (amount - self.level) / self.rate)

    def seconds_to_full(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)

    def remaining(self) -> int:
        """The level as providers report it: a whole number, rounded down."""
        return max(0, math.floor(self.level + _EPSILON))


@dataclass
class Admission:
    """Outcome of charging a request against a key's buckets."""

    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float = 0.0
    exceeded: str | None = None
    limit: float = 0.0
    requested: float = 0.0
    used: float = 0.0


def whole_seconds(seconds: float) -> int:
    """Round a wait up to whole seconds, at least 1 (the ``retry-after`` value)."""
    return max(1, math.ceil(seconds - _EPSILON))


def format_rfc3339(timestamp: float) -> str:
    """Format a POSIX time as RFC 3339 UTC, rounded up to the second."""
    moment = datetime.fromtimestamp(math.ceil(timestamp - _EPSILON), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    """Format a wait the way OpenAI's reset headers do: ``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``."""
    millis = max(0, math.ceil(seconds * 1000 - _EPSILON))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0").rstrip(".") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _figure(value: float) -> str:
    """Render a configured limit without a spurious ``.0``."""
    return str(int(value)) if float(value).is_integer() else str(value)


class KeyLimiter:
    """All buckets of one key, guarded by one lock so charges are atomic."""

    def __init__(self, limits: SimLimits | None, clock: Clock, wall_clock: Clock) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall_clock = wall_clock
        self.limits = limits
        now = clock()
        self._anthropic: dict[str, TokenBucket] = {}
        self._openai: dict[str, TokenBucket] = {}
        if limits is None:
            return
        burst = limits.burst_seconds
        figures = {
            "requests": limits.requests_per_minute,
            "input_tokens": limits.input_tokens_per_minute,
            "output_tokens": limits.output_tokens_per_minute,
        }
        for name, value in figures.items():
            if value is not None:
                self._anthropic[name] = TokenBucket(value, burst, now)
        tokens = limits.tokens_per_minute or limits.input_tokens_per_minute
        if limits.requests_per_minute is not None:
            self._openai["requests"] = TokenBucket(limits.requests_per_minute, burst, now)
        if tokens is not None:
            self._openai["tokens"] = TokenBucket(tokens, burst, now)

    def levels(self, api: str = "anthropic") -> dict[str, float]:
        """Current (refilled) level of each configured bucket of one API family."""
        with self._lock:
            buckets = self._family(api)
            now = self._clock()
            for bucket in buckets.values():
                bucket.refill(now)
            return {name: bucket.level for name, bucket in buckets.items()}

    def acquire_anthropic(self, input_tokens: int, max_tokens: int) -> Admission:
        """Charge a Messages call: 1 request, its input tokens, ``max_tokens`` output."""
        wanted = {"requests": 1, "input_tokens": input_tokens, "output_tokens": max_tokens}
        with self._lock:
            admission = self._charge(self._anthropic, wanted)
            admission.headers = self._anthropic_headers()
            return admission

    def refund_output(self, unused: int) -> None:
        """Give back the output tokens a reply did not use (Anthropic only)."""
        bucket = self._anthropic.get("output_tokens")
        if bucket is None or unused <= 0:
            return
        with self._lock:
            bucket.refill(self._clock())
            bucket.level = min(bucket.capacity, bucket.level + unused)

    def acquire_openai(self, tokens: int) -> Admission:
        """Charge a chat completion: 1 request and prompt + max completion tokens."""
        with self._lock:
            admission = self._charge(self._openai, {"requests": 1, "tokens": tokens})
            admission.headers = self._openai_headers()
            return admission

    def _family(self, api: str) -> dict[str, TokenBucket]:
        if api == "anthropic":
            return self._anthropic
        if api == "openai":
            return self._openai
        raise ValueError(f"api must be 'anthropic' or 'openai', got {api!r}")

    def _charge(self, buckets: dict[str, TokenBucket], wanted: dict[str, int]) -> Admission:
        """Take every amount or nothing; on refusal report the longest wait."""
        now = self._clock()
        worst: tuple[float, str] | None = None
        for name, bucket in buckets.items():
            bucket.refill(now)
            wait = bucket.wait_for(wanted[name])
            if wait > _EPSILON and (worst is None or wait > worst[0]):
                worst = (wait, name)
        if worst is not None:
            bucket = buckets[worst[1]]
            return Admission(
                allowed=False,
                retry_after=worst[0],
                exceeded=worst[1],
                limit=bucket.limit,
                requested=wanted[worst[1]],
                used=bucket.capacity - bucket.level,
            )
        for name, bucket in buckets.items():
            bucket.level -= wanted[name]
        return Admission(allowed=True)

    def _reset_at(self, bucket: TokenBucket) -> str:
        return format_rfc3339(self._wall_clock() + bucket.seconds_to_full())

    def _anthropic_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in self._anthropic.items():
            prefix = "anthropic-ratelimit-" + name.replace("_", "-")
            headers[prefix + "-limit"] = _figure(bucket.limit)
            headers[prefix + "-remaining"] = str(bucket.remaining())
            headers[prefix + "-reset"] = self._reset_at(bucket)
        token_buckets = [
            self._anthropic[name]
            for name in ("input_tokens", "output_tokens")
            if name in self._anthropic
        ]
        if token_buckets:
            tightest = min(token_buckets, key=lambda bucket: bucket.remaining())
            headers["anthropic-ratelimit-tokens-limit"] = _figure(tightest.limit)
            headers["anthropic-ratelimit-tokens-remaining"] = str(tightest.remaining())
            headers["anthropic-ratelimit-tokens-reset"] = self._reset_at(tightest)
        return headers

    def _openai_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in self._openai.items():
            headers[f"x-ratelimit-limit-{name}"] = _figure(bucket.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining())
            headers[f"x-ratelimit-reset-{name}"] = format_duration(bucket.seconds_to_full())
        return headers


@dataclass(frozen=True)
class ModelClass:
    """Models sharing one set of buckets: those matching any of ``patterns``
    (``fnmatch`` globs, case-sensitive, such as ``"claude-opus-*"``)."""

    patterns: tuple[str, ...]
    limits: SimLimits | None

    def matches(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.patterns)


class ScopeLimiter:
    """The limits and buckets of one scope (a key or a group of keys).

    ``default`` applies to every model no class matches, each model name
    getting its own buckets if ``per_model``, else all of them sharing one
    set; ``classes`` are tried in order, the first match wins. Bucket sets
    are made (full) on first use.
    """

    def __init__(
        self, default: SimLimits | None, clock: Clock, wall_clock: Clock, *, per_model: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self.per_model = per_model
        self._clock = clock
        self._wall_clock = wall_clock
        self.default = default
        self.classes: list[ModelClass] = []
        self._sets: dict[tuple[str, str], KeyLimiter] = {}

    def copy_config(self) -> ScopeLimiter:
        """A scope with the same limits and classes, its buckets full."""
        with self._lock:
            other = ScopeLimiter(self.default, self._clock, self._wall_clock, per_model=self.per_model)
            other.classes = list(self.classes)
        return other

    def set_limits(self, limits: SimLimits | None, patterns: Sequence[str] | None) -> None:
        """Replace the default limits (``patterns`` None) or one class's; the
        affected buckets start full. A class is named by its patterns: the same
        patterns replace it, new ones add a class after the others."""
        with self._lock:
            if patterns is None:
                self.default = limits
                self._sets = {name: item for name, item in self._sets.items() if name[0] == "class"}
                return
            wanted = ModelClass(tuple(patterns), limits)
            for index, item in enumerate(self.classes):
                if item.patterns == wanted.patterns:
                    self.classes[index] = wanted
                    self._sets.pop(("class", str(index)), None)
                    return
            self.classes.append(wanted)
            self._sets = {
                name: item for name, item in self._sets.items()
                if name[0] != "model" or not wanted.matches(name[1])
            }

    def refill(self) -> None:
        """Forget every bucket set (they come back full)."""
        with self._lock:
            self._sets.clear()

    def _slot(self, model: str) -> tuple[tuple[str, str], SimLimits | None]:
        for index, item in enumerate(self.classes):
            if item.matches(model):
                return ("class", str(index)), item.limits
        return ("model", model) if self.per_model else ("shared", ""), self.default

    def for_model(self, model: str) -> KeyLimiter:
        """The buckets a request for ``model`` is charged to."""
        with self._lock:
            slot, limits = self._slot(model)
            limiter = self._sets.get(slot)
            if limiter is None:
                limiter = self._sets[slot] = KeyLimiter(limits, self._clock, self._wall_clock)
            return limiter

    def levels(self, api: str, model: str | None) -> dict[str, float]:
        """Levels of the buckets ``model`` is charged to; with ``model`` None, of
        the only model no class matched (full default buckets if none was used)."""
        if model is not None:
            return self.for_model(model).levels(api)
        with self._lock:
            used = {name[1]: item for name, item in self._sets.items() if name[0] != "class"}
            default = self.default
        if len(used) > 1:
            raise ValueError(f"several models have buckets here ({', '.join(sorted(used))}): pass model=")
        if used:
            return next(iter(used.values())).levels(api)
        return KeyLimiter(default, self._clock, self._wall_clock).levels(api)
