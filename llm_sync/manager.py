"""LLMManager: one pool per configured endpoint, and the process singleton.

An endpoint is a key under ``providers:`` (``anthropic``, ``openai``,
``local``...); every method that takes ``provider`` takes an endpoint name
or an :class:`LLMProvider` member, which names the endpoint of that name.

Threading contract: an LLMManager may be used from any thread. It owns its
pools and clients; ``_lock`` guards the client cache and the closed flag.
The module's singleton (the only global mutable state in llm_sync) is
guarded by ``_singleton_lock``. In a child after ``fork()`` the singleton
starts empty under a fresh lock; the first ``get_llm_manager()`` there
builds a new manager (new sockets, threads and locks) from the parent's
configuration, and the parent's manager is never touched.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from .cancel import nap
from .client import LLMClient, WorkerThreads
from .config import (
    DEFAULT_LEASES_PER_KEY,
    LLMConfig,
    ProviderConfig,
    default_base_url,
    default_model,
    endpoint_name,
    load_config,
)
from .errors import LLMClosedError, LLMConfigError, LLMValidationError
from .keys import PooledKey
from .middleware.base import Middleware
from .middleware.logging import LoggingMiddleware
from .middleware.metrics import MetricsMiddleware, merge_metrics
from .middleware.ratelimit import RateLimitMiddleware
from .middleware.retry import RetryMiddleware
from .prometheus import ProviderMetrics, make_collector, render_metrics_text
from .models import LLMProvider
from .pipeline import Pipeline
from .pool import KeyPool
from .providers import create_provider
from .ratelimit.backends import RateLimitBackend
from .ratelimit.backends.failover import FailoverBackend
from .ratelimit.backends.redis_store import RedisBackend
from .ratelimit.key import key_id
from .ratelimit.limiter import ProviderLimiter
from .transport import build_session, is_loopback

__all__ = ["LLMManager", "Clocks", "get_llm_manager", "reset_llm_manager"]

_log = logging.getLogger("llm_sync")

ConfigSource = Union[LLMConfig, Mapping[str, Any], str, Path, None]


class _EndpointRuntime:
    """What the manager keeps per endpoint."""

    def __init__(self, name: str, config: LLMConfig, clocks: "Clocks",
                 backend: Optional[RateLimitBackend] = None) -> None:
        settings = config.endpoint(name)
        pool_config = config.pool_for(name)
        kind = config.kind_of(name)
        base_url = settings.base_url or default_base_url(kind)
        assert base_url is not None  # config validation insists on one
        self.name = name
        self.settings = settings
        self.provider = create_provider(kind, base_url, settings.headers, endpoint=name)
        self.provider.max_pause = settings.max_pause
        keys = [
            PooledKey(self.provider, key, index, settings.limits_for_key(index))
            for index, key in enumerate(settings.api_keys)
        ]
        self.default_model = settings.models[0] if settings.models else default_model(kind)
        self.limiter = ProviderLimiter(
            [(key.client_id, key.limits) for key in keys],
            refunds_output=self.provider.refunds_output,
            clock=clocks.clock, wall_clock=clocks.wall_clock, wait=clocks.wait, max_pause=settings.max_pause,
            groups=[settings.key_group(key.index) for key in keys], model_classes=settings.model_classes,
            default_model=self.default_model or "", name=name, backend=backend,
            key_ids=[key_id(secret.get_secret_value()) for secret in settings.api_keys],
        )
        for key in keys:
            for middleware in default_chain(settings, self.limiter, key.index, clocks):
                key.middleware_chain.add(middleware)
        self.pool = KeyPool(
            name,
            keys,
            max_size=pool_config.max_size or DEFAULT_LEASES_PER_KEY * len(keys),
            acquire_timeout=pool_config.acquire_timeout,
            idle_timeout=pool_config.idle_timeout,
            limiter=self.limiter,
            clock=clocks.clock,
            session_factory=functools.partial(build_session, trust_env=not is_loopback(self.provider.base_url)),
        )
        self.pipeline = Pipeline(
            self.pool, self.provider, self.limiter,
            connect_timeout=settings.timeout.connect, read_timeout=settings.timeout.read,
            total_timeout=settings.timeout.total, max_retries=settings.max_retries,
            retry_budget=settings.retry_budget, native_counting=settings.token_counting == "native",
            cache_reads_counted=settings.cache_reads_count_toward_limits,
        )
        self.workers = WorkerThreads(self.pool.max_size, name)
        self.clients: dict[str, LLMClient] = {}


@dataclass(frozen=True)
class Clocks:
    """Time as the limiter and the retries see it; tests inject fakes."""

    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    # How a caller waiting for rate-limit capacity blocks (Condition.wait).
    wait: Optional[Callable[[threading.Condition, Optional[float]], Any]] = None
    # How a retry waits out its backoff.
    sleep: Callable[[float], None] = time.sleep


def build_backend(config: LLMConfig, clocks: "Clocks") -> Optional[RateLimitBackend]:
    """The shared rate-limit backend ``rate_limit_backend`` names, behind
    its ``on_backend_error`` policy; None for ``memory``."""
    if config.rate_limit_backend == "memory":
        return None
    return FailoverBackend(RedisBackend(config.rate_limit_backend), on_error=config.on_backend_error,
                           local_share=config.fallback_share, clock=clocks.clock, local_clock=clocks.clock)


def default_chain(settings: ProviderConfig, limiter: ProviderLimiter, index: int,
                  clocks: Clocks) -> list[Middleware]:
    """Every key's chain, outermost first — the one place the order lives:

    1. LoggingMiddleware    per call: one INFO line after all its attempts
    2. MetricsMiddleware    per call: counts, latency, tokens, errors
    3. RetryMiddleware      around the attempts: backoff, server hints, budget
    4. RateLimitMiddleware  per attempt: admission before, correction after
    5. user middleware      per attempt (``add`` appends innermost)

    A rate-limit 429 leaves the chain: the pool requeues the call on the key
    that can take it soonest. Streamed calls pass through the same chain;
    ``process_response`` runs once, when the stream ends.
    """
    return [
        LoggingMiddleware(),
        MetricsMiddleware(),
        RetryMiddleware(settings.max_retries, settings.retry_budget, sleep=clocks.sleep, clock=clocks.clock),
        RateLimitMiddleware(limiter, limiter.keys[index]),
    ]


class LLMManager:
    """Owns a pool of key-bound sessions for every configured endpoint.

    ``close()`` is idempotent; it releases every connection and worker
    thread. Usable as a context manager. ``clocks`` replaces the monotonic
    clock, wall clock and blocking wait used for rate limiting (tests).
    """

    def __init__(self, config: ConfigSource = None, *, clocks: Optional[Clocks] = None) -> None:
        self.config = load_config(config)
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._closing = threading.Event()
        clocks = clocks or Clocks()
        if clocks.sleep is time.sleep:  # a retry's backoff ends at close(), not after it
            clocks = dataclasses.replace(clocks, sleep=self._nap)
        # One shared backend for every endpoint (one connection pool); with
        # ``memory``, each endpoint's limiter keeps its own.
        self._backend = build_backend(self.config, clocks)
        self._runtimes = {name: _EndpointRuntime(name, self.config, clocks, self._backend)
                          for name in self.config.providers}

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "LLMManager":
        return cls(Path(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LLMManager":
        return cls(dict(data))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<LLMManager {state} endpoints={list(self._runtimes)}>"

    def __enter__(self) -> "LLMManager":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def providers(self) -> list[str]:
        """The configured endpoint names, in config order."""
        return list(self._runtimes)

    def kind(self, provider: Union[LLMProvider, str]) -> str:
        """The wire format (``anthropic``, ``openai``, ...) endpoint ``provider`` speaks."""
        return self._runtime(provider).provider.kind

    @property
    def closed(self) -> bool:
        return self._closed

    def _runtime(self, provider: Union[LLMProvider, str]) -> _EndpointRuntime:
        if self._closed:
            raise LLMClosedError("the LLM manager is closed")
        if not isinstance(provider, str):
            raise LLMValidationError(f"an endpoint name is a string or an LLMProvider, got {type(provider).__name__}")
        runtime = self._runtimes.get(endpoint_name(provider))
        if runtime is None:
            configured = ", ".join(self._runtimes) or "none"
            raise LLMConfigError(
                f"endpoint {endpoint_name(provider)!r} is not configured (configured: {configured})"
            )
        return runtime

    def get_client(self, provider: Union[LLMProvider, str], model: Optional[str] = None) -> LLMClient:
        """The (cached) client for endpoint ``provider``; ``model`` defaults
        to the first of the endpoint's configured ``models``."""
        runtime = self._runtime(provider)
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise LLMValidationError(f"model must be a non-empty string, got {model!r}")
        model = model or runtime.default_model
        if model is None:
            raise LLMConfigError(
                f"providers.{runtime.name}.models: kind {runtime.provider.kind!r} has no default model; "
                "configure models or pass model="
            )
        with self._lock:
            if self._closed:
                raise LLMClosedError("the LLM manager is closed")
            client = runtime.clients.get(model)
            if client is None:
                client = LLMClient(runtime.pipeline, model, runtime.workers)
                runtime.clients[model] = client
        return client

    def pool(self, provider: Union[LLMProvider, str]) -> KeyPool:
        return self._runtime(provider).pool

    @property
    def _pools(self) -> dict[str, KeyPool]:
        """Kept for the seed's examples (``manager._pools[provider]``)."""
        return {name: runtime.pool for name, runtime in self._runtimes.items()}

    def get_status(self, provider: Union[LLMProvider, str]) -> dict[str, Any]:
        """The pool's status, and ``rate_limit_backend``: which backend holds
        the limits and whether it serves (for Redis: its URL without
        password, ``mode`` shared or local fallback, errors, round trips)."""
        runtime = self._runtime(provider)
        return {**runtime.pool.status(), "rate_limit_backend": runtime.limiter.backend.health()}

    def metrics(self, provider: Union[LLMProvider, str]) -> dict[str, Any]:
        """Every key's MetricsMiddleware of ``provider``, aggregated."""
        return merge_metrics(self._key_metrics(self._runtime(provider)).values())

    def metrics_text(self) -> str:
        """All endpoints' metrics in the Prometheus text format (label ``provider`` = endpoint name)."""
        return render_metrics_text(self._provider_metrics())

    def prometheus_collector(self) -> Any:
        """A ``prometheus_client`` collector with the same figures:
        ``prometheus_client.REGISTRY.register(manager.prometheus_collector())``."""
        return make_collector(self._provider_metrics)

    @staticmethod
    def _key_metrics(runtime: "_EndpointRuntime") -> dict[str, MetricsMiddleware]:
        found = {}
        for key in runtime.pool.clients:
            middleware = key.middleware_chain.get_middleware(MetricsMiddleware)
            if middleware is not None:
                found[key.client_id] = middleware
        return found

    def _provider_metrics(self) -> dict[str, ProviderMetrics]:
        return {
            name: ProviderMetrics(
                metrics={cid: m.get_metrics() for cid, m in self._key_metrics(runtime).items()},
                status=runtime.pool.status(),
            )
            for name, runtime in self._runtimes.items()
        }

    def add_middleware(self, middleware: Middleware, provider: Union[LLMProvider, str, None] = None) -> None:
        """Add ``middleware`` to the chain of every key (of one endpoint)."""
        runtimes = [self._runtime(provider)] if provider is not None else list(self._runtimes.values())
        for runtime in runtimes:
            for key in runtime.pool.clients:
                key.middleware_chain.add(middleware)

    def _nap(self, seconds: float) -> None:
        nap(seconds, self._closing)

    def close(self) -> None:
        """Bounded and idempotent: calls in flight are cut and raise
        LLMClosedError, open streams raise it to their readers, callers
        waiting for a lease, for rate-limit capacity or in a retry's backoff
        are woken with it; then worker threads stop (what was submitted
        fails fast with LLMClosedError).

        In a forked child, a manager built by the parent is only marked
        closed: its sockets and the locks a parent thread may have held at
        fork time are the parent's (the pools close what the child itself
        opened)."""
        if self._pid != os.getpid():
            self._closed = True
        else:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            self._closing.set()
        # Every endpoint is closed, whatever one of them raises: a failure is
        # logged (by type only); an interrupt is raised once all are closed.
        interrupt: Optional[BaseException] = None
        for runtime in list(self._runtimes.values()):
            for close in (runtime.pool.close, runtime.workers.close):
                try:
                    close()
                except Exception as exc:
                    _log.warning("closing %s raised %s; close goes on", runtime.pool.name, type(exc).__name__)
                except BaseException as exc:  # Ctrl-C: finish closing first
                    interrupt = interrupt or exc
        if self._backend is not None and self._pid == os.getpid():
            self._backend.close()
        if interrupt is not None:
            raise interrupt


_singleton: Optional[LLMManager] = None
_singleton_source: Any = None  # what the singleton was built from, to skip re-validation
_singleton_lock = threading.Lock()


@dataclass(frozen=True)
class _Inherited:
    """In a forked child: the configuration of the parent's live manager."""

    config: LLMConfig
    source: Any


_inherited: Optional[_Inherited] = None
# In a forked child: the parent's managers, kept referenced so that nothing
# there (a finaliser, the garbage collector) ever touches their sockets.
_parent_managers: list[LLMManager] = []


def get_llm_manager(config: ConfigSource = None) -> LLMManager:
    """The process-wide manager, created on first use (or after ``close()``).

    Without ``config``: ``$LLM_SYNC_CONFIG``, then ``./config/llm.yaml``, then
    ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY``. Passing a config that differs
    from the live manager's raises LLMConfigError rather than swapping the
    manager under other threads' feet; close it first.

    After ``fork()`` (gunicorn ``--preload``, multiprocessing) the child's
    first call builds a fresh manager from the configuration the parent's
    manager had, so a worker needs no config of its own.
    """
    global _singleton, _singleton_source, _inherited
    with _singleton_lock:
        current = _singleton
        if current is not None and not current.closed:
            if config is not None and not _same_source(config, current.config, _singleton_source):
                raise LLMConfigError(
                    "get_llm_manager() already holds a manager with a different config; "
                    "close it (or call reset_llm_manager()) before configuring another"
                )
            return current
        inherited = _inherited
        if inherited is not None and (config is None or _same_source(config, inherited.config, inherited.source)):
            _singleton = LLMManager(inherited.config)
            _singleton_source = inherited.source
        else:
            _singleton = LLMManager(config)
            _singleton_source = _source_key(config)
        _inherited = None
        return _singleton


def _source_key(config: ConfigSource) -> Any:
    """A cheap identity for a config source (paths by name, dicts by value)."""
    if isinstance(config, (str, Path)):
        return ("path", str(Path(config).resolve()))
    if isinstance(config, Mapping):
        return ("dict", repr(config))
    return ("object", id(config))


def _same_source(config: ConfigSource, built: LLMConfig, source: Any) -> bool:
    """Per-request ``get_llm_manager(path)`` calls (a Django view) must be
    cheap: the same source is recognised without re-reading it."""
    if config is built or _source_key(config) == source:
        return True
    return load_config(config) == built


def reset_llm_manager() -> None:
    """Close and forget the singleton (tests, reconfiguration); in a forked
    child, also forget the configuration inherited from the parent."""
    global _singleton, _inherited
    with _singleton_lock:
        manager, _singleton = _singleton, None
        _inherited = None
    if manager is not None:
        manager.close()


def _after_fork_in_child() -> None:
    """A child must not share the parent's sockets or a lock another
    thread held at fork time: start with a fresh lock and no manager, but
    remember the parent's configuration for the first get_llm_manager().
    Nothing of the parent's manager is called here (its locks may be held)."""
    global _singleton, _singleton_lock, _singleton_source, _inherited
    parent = _singleton
    if parent is not None:
        _parent_managers.append(parent)
        if not parent._closed:
            _inherited = _Inherited(parent.config, _singleton_source)
    # else: keep what an earlier fork handed down and nobody used yet
    _singleton_lock = threading.Lock()
    _singleton = None
    _singleton_source = None


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)
