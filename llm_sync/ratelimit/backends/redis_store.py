"""Bucket state on a Redis server, shared by every process and host that
uses the same keys: the ``rate_limit_backend: redis://...`` backend.

Each operation is one Lua script (see ``redis_lua``), so it is atomic for
every process at once, and time is the Redis server's: hosts with skewed
clocks still agree on every bucket. A request costs two round trips on its
happy path: :meth:`admit` (quote every candidate key and take the best)
and :meth:`settle` (correction and header sync).

Redis key names are ``<prefix>`` plus a hash of the scope id (which holds a
hash of the API key, never the key, and perhaps an organisation id); they
expire after ``idle_seconds`` without use, and a scope that expired is made
again from its declared limits by whichever script touches it next.

Needs the optional ``redis`` extra (``pip install "llm_sync[redis]"``).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from typing import Any, Callable, Mapping, Optional, Sequence

from ...errors import LLMConfigError, redact
from ..state import BucketView, Observation, Quote, ScopeSnapshot
from . import redis_lua
from .base import Admission, BackendError, RateLimitBackend

__all__ = ["RedisBackend", "DEFAULT_PREFIX", "DEFAULT_IDLE_SECONDS", "redis_key"]

DEFAULT_PREFIX = "llm_sync:rl:"
# A scope unused this long is dropped (refilled buckets hold no news; a
# learned limit is learned again from the next answer's headers).
DEFAULT_IDLE_SECONDS = 900.0
# Every wait on the Redis server is bounded: a backend that does not answer
# in this long counts as down (see ``failover``).
DEFAULT_SOCKET_TIMEOUT = 1.0

_Spec = tuple[str, ...]


def redis_key(prefix: str, scope: str) -> str:
    """The Redis key of ``scope``: a fixed-length hash, whatever the id holds."""
    return prefix + hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32]


def _text(value: Optional[float]) -> str:
    if value is None:
        return ""
    return repr(float(value))


def _str(raw: Any) -> str:
    """A script's reply item as text (redis-py gives bytes unless told otherwise)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _number(raw: Any) -> float:
    return float(_str(raw))


class RedisBackend(RateLimitBackend):
    """Every scope's state in one Redis database.

    Threading contract: the redis-py client (and its connection pool) is
    thread-safe; ``_lock`` guards only the local table of declared scopes
    and the round-trip counter. Redis errors surface as
    :class:`BackendError`, never as redis-py's own types. ``clock``: tests
    only (every script then uses it instead of the server's ``TIME``).
    """

    shared = True

    def __init__(self, url: str = "", *, client: Any = None, prefix: str = DEFAULT_PREFIX,
                 idle_seconds: float = DEFAULT_IDLE_SECONDS, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
                 clock: Optional[Callable[[], float]] = None) -> None:
        self.url = url
        self.prefix = prefix
        self.idle_ms = max(1, int(idle_seconds * 1000))
        self.clock = clock
        self.socket_timeout = socket_timeout
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._specs: dict[str, _Spec] = {}
        self.round_trips = 0
        self._client = client if client is not None else self._connect()
        self._scripts = self._register()

    def __repr__(self) -> str:
        return f"<RedisBackend {redact(self.url)} {len(self._specs)} scopes>"

    def _connect(self) -> Any:
        try:
            import redis
        except ImportError:  # pragma: no cover - exercised without the extra
            raise LLMConfigError(
                "rate_limit_backend: a redis:// backend needs the redis extra (pip install 'llm_sync[redis]')"
            ) from None
        try:
            return redis.Redis.from_url(
                self.url, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout,
                retry=None,  # no silent re-sends: a script that ran once must not run twice
            )
        except ValueError as exc:  # a malformed URL; its text may hold a password
            raise LLMConfigError(f"rate_limit_backend: not a usable Redis URL ({type(exc).__name__})") from None

    def _register(self) -> dict[str, Any]:
        sources = {"admit": redis_lua.ADMIT, "settle": redis_lua.SETTLE, "seed": redis_lua.SEED,
                   "pause": redis_lua.PAUSE, "snapshot": redis_lua.SNAPSHOT}
        return {name: self._client.register_script(source) for name, source in sources.items()}

    # --- plumbing ---------------------------------------------------------
    def _run(self, name: str, keys: list[str], args: list[str]) -> Any:
        """One script, one round trip; redis-py's errors become BackendError
        (its messages name the host, never the password)."""
        with self._lock:
            self.round_trips += 1
        try:
            return self._scripts[name](keys=keys, args=args)
        except Exception as exc:
            raise BackendError(f"Redis {name} failed: {type(exc).__name__}") from exc

    def _head(self) -> list[str]:
        return ["" if self.clock is None else repr(self.clock()), str(self.idle_ms)]

    def _spec(self, scope: str) -> _Spec:
        with self._lock:
            spec = self._specs.get(scope)
        if spec is None:
            raise KeyError(f"rate-limit scope {scope!r} was never declared")
        return spec

    def key(self, scope: str) -> str:
        return redis_key(self.prefix, scope)

    @staticmethod
    def _amounts(amounts: Mapping[str, float]) -> list[str]:
        return [_text(amounts.get(d)) for d in redis_lua.DIMENSIONS]

    @staticmethod
    def _observations(observations: Optional[Mapping[str, Observation]]) -> list[str]:
        args: list[str] = []
        for dimension in redis_lua.DIMENSIONS:
            seen = (observations or {}).get(dimension)
            if seen is None:
                args += ["", "", "", "", ""]
            else:
                args += [_text(seen.limit), _text(seen.remaining), _text(seen.reset_in),
                         _text(seen.since), _text(seen.offset)]
        return args

    # --- the interface ------------------------------------------------------
    def declare(self, scope: str, limits: Mapping[str, float], burst_seconds: Optional[float]) -> None:
        """Remember the scope's limits; no round trip: every script makes
        a scope it does not find (new, or expired while idle) from them."""
        spec = (_text(burst_seconds), *(_text(limits.get(d) or None) for d in redis_lua.DIMENSIONS))
        with self._lock:
            self._specs.setdefault(scope, spec)

    def admit(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float, *,
              take: bool, eligible: Optional[Sequence[bool]] = None, claimant: str = "") -> Admission:
        """See the base class; ``claimant``: the caller first in its
        process's line, which claims the capacity it waits for against
        other processes (see ``redis_lua.ADMIT``)."""
        args = self._head() + [repr(float(margin)), "1" if take else "0", claimant]
        for index, (scope, amounts) in enumerate(requests):
            allowed = True if eligible is None else eligible[index]
            args += [*self._spec(scope), *self._amounts(amounts), "1" if allowed else "0"]
        reply = self._run("admit", [self.key(scope) for scope, _ in requests], args)
        best, granted, aliased = int(reply[0]), _str(reply[1]) == "1", _str(reply[2]) == "1"
        quotes = []
        for index in range(len(requests)):
            wait, headroom, oversize = reply[3 + 3 * index: 6 + 3 * index]
            quotes.append(Quote(_number(wait), _number(headroom), _str(oversize) or None,
                                granted=granted and index == best))
        return Admission(quotes, None if best < 0 else best, granted, source=self, aliased=aliased)

    def quote(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        return self.admit([(scope, amounts)], margin, take=False).quotes[0]

    def quote_many(self, requests: Sequence[tuple[str, Mapping[str, float]]], margin: float) -> list[Quote]:
        return self.admit(requests, margin, take=False).quotes if requests else []

    def acquire(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        return self.admit([(scope, amounts)], margin, take=True).quotes[0]

    def settle(self, scope: str, delta: Optional[Mapping[str, float]],
               observations: Optional[Mapping[str, Observation]], source: Any = None, *,
               aliased: bool = False) -> None:
        if not (delta and any(delta.values())) and not observations:
            return
        args = self._head() + list(self._spec(scope)) + self._amounts(delta or {}) + self._observations(observations)
        args.append("1" if aliased else "0")
        self._run("settle", [self.key(scope)], args)

    def adjust(self, scope: str, delta: Mapping[str, float]) -> None:
        self.settle(scope, delta, None)

    def sync(self, scope: str, observations: Mapping[str, Observation]) -> None:
        self.settle(scope, None, observations)

    def seed(self, scope: str, source: str, allowance: Mapping[str, float]) -> None:
        args = self._head() + list(self._spec(scope)) + list(self._spec(source)) + self._amounts(allowance)
        self._run("seed", [self.key(scope), self.key(source)], args)

    def pause(self, scope: str, seconds: float) -> None:
        seconds = 0.0 if math.isnan(seconds) else seconds
        self._run("pause", [self.key(scope)], self._head() + list(self._spec(scope)) + [repr(float(seconds))])

    def snapshot(self, scope: str) -> ScopeSnapshot:
        return self.snapshot_many([scope])[0]

    def snapshot_many(self, scopes: Sequence[str]) -> list[ScopeSnapshot]:
        if not scopes:
            return []
        args = self._head()
        for scope in scopes:
            args += list(self._spec(scope))
        reply = self._run("snapshot", [self.key(scope) for scope in scopes], args)
        snapshots, at = [], 0
        for _ in scopes:
            paused_for, count = _number(reply[at]), int(reply[at + 1])
            at += 2
            buckets = {}
            for _ in range(count):
                name, limit, capacity, level, full_in, configured = reply[at: at + 6]
                buckets[_str(name)] = BucketView(_number(limit), _number(capacity), _number(level),
                                                _number(full_in), _str(configured) == "1")
                at += 6
            snapshots.append(ScopeSnapshot(buckets, paused_for))
        return snapshots

    def ping(self) -> None:
        """One round trip that changes nothing: BackendError when down."""
        with self._lock:
            self.round_trips += 1
        try:
            self._client.ping()
        except Exception as exc:
            raise BackendError(f"Redis ping failed: {type(exc).__name__}") from exc

    def health(self) -> dict[str, Any]:
        return {"backend": "redis", "url": redact(self.url), "round_trips": self.round_trips}

    def after_fork(self) -> None:
        """A child must not share the parent's sockets: new connections.
        Once per child (a second call would reset connections in use)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            pool.reset()

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a broken connection: nothing left to release
            pass
