"""The limiter and its backend: no backend call while the limiter holds its
lock (a shared backend does I/O), in single-threaded and threaded use; and
every llm_sync.ratelimit module imports on its own, without cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pytest

from llm_sync.config import RateLimitConfig
from llm_sync.errors import LLMRateLimitError, LLMValidationError
from llm_sync.ratelimit.backends import MemoryBackend, RateLimitBackend
from llm_sync.ratelimit.limiter import Cost, ProviderLimiter
from llm_sync.ratelimit.state import Observation, Quote, ScopeSnapshot

PACKAGE = Path(__file__).resolve().parents[2] / "llm_sync" / "ratelimit"


class CheckingBackend(RateLimitBackend):
    """A MemoryBackend that notes every call made while the calling thread
    holds the limiter's lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.inner = MemoryBackend(clock)
        self.limiter: Optional[ProviderLimiter] = None
        self.calls: list[str] = []
        self.under_lock: list[str] = []

    def attach(self, limiter: ProviderLimiter) -> None:
        # An RLock knows its owning thread (a plain Lock only says "held by
        # someone"), so the check is exact even with many threads.
        limiter._cond = threading.Condition(threading.RLock())
        self.limiter = limiter

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.limiter is not None and self.limiter._cond._is_owned():  # type: ignore[attr-defined]
            self.under_lock.append(name)

    def declare(self, scope: str, limits: Mapping[str, float], burst_seconds: Optional[float]) -> None:
        self._check("declare")
        self.inner.declare(scope, limits, burst_seconds)

    def quote(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        self._check("quote")
        return self.inner.quote(scope, amounts, margin)

    def quote_many(self, requests: Any, margin: float) -> list[Quote]:
        self._check("quote_many")
        return self.inner.quote_many(requests, margin)

    def acquire(self, scope: str, amounts: Mapping[str, float], margin: float) -> Quote:
        self._check("acquire")
        return self.inner.acquire(scope, amounts, margin)

    def adjust(self, scope: str, delta: Mapping[str, float]) -> None:
        self._check("adjust")
        self.inner.adjust(scope, delta)

    def sync(self, scope: str, observations: Mapping[str, Observation]) -> None:
        self._check("sync")
        self.inner.sync(scope, observations)

    def pause(self, scope: str, seconds: float) -> None:
        self._check("pause")
        self.inner.pause(scope, seconds)

    def seed(self, scope: str, source: str, allowance: Mapping[str, float]) -> None:
        self._check("seed")
        self.inner.seed(scope, source, allowance)

    def snapshot(self, scope: str) -> ScopeSnapshot:
        self._check("snapshot")
        return self.inner.snapshot(scope)

    def after_fork(self) -> None:
        self._check("after_fork")
        self.inner.after_fork()


HEADERS = {
    "anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-remaining": "500",
    "anthropic-ratelimit-input-tokens-limit": "60000", "anthropic-ratelimit-input-tokens-remaining": "50000",
}


def make(clock: Callable[[], float], wait: Any = None) -> tuple[ProviderLimiter, CheckingBackend]:
    backend = CheckingBackend(clock)
    limiter = ProviderLimiter([("k0", RateLimitConfig(requests_per_minute=60, input_tokens_per_minute=6000)),
                               ("k1", None)],
                              refunds_output=True, clock=clock, wall_clock=lambda: 1_772_366_400.0,
                              wait=wait, backend=backend)
    backend.attach(limiter)
    return limiter, backend


def test_the_check_sees_a_call_under_the_lock() -> None:
    limiter, backend = make(lambda: 0.0)
    with limiter._cond:
        backend.snapshot("k0")
    assert backend.under_lock == ["snapshot"]


def test_no_backend_call_under_the_lock_single_threaded() -> None:
    now = [1000.0]

    def wait(cond: threading.Condition, timeout: Optional[float]) -> None:
        assert timeout is not None
        now[0] += max(timeout, 1e-6)

    limiter, backend = make(lambda: now[0], wait)
    k0, k1 = limiter.keys
    k0.answered = True
    first = limiter.reserve(Cost(5000, 10), None, only=k0)
    limiter.mark_sent(first)
    limiter.observe(first, HEADERS)
    limiter.settle(first, 4000, 5, HEADERS)
    second = limiter.reserve(Cost(3000, 10), None, only=k0)  # waits for refill
    limiter.mark_sent(second)
    limiter.refund(second, HEADERS, keep_request=True)
    probes = [limiter.reserve(Cost(10, 1), None) for _ in range(3)]
    for reservation in probes:
        limiter.mark_sent(reservation)
    limiter.release(probes[0], HEADERS)
    limiter.refund(probes[1], answered=False)
    limiter.settle(probes[2], 10, 1)
    limiter.pause(k0, 2.0)
    assert limiter.paused_for(k0) == 2.0
    assert limiter.status(k0) is not None
    with pytest.raises(LLMValidationError):
        limiter.reserve(Cost(7000, 1), None, only=k0)
    with pytest.raises(LLMRateLimitError):
        limiter.reserve(Cost(10, 1), now[0] + 1.0, only=k0)
    limiter.after_fork()
    assert {"quote_many", "acquire", "adjust", "sync", "pause", "snapshot"} <= set(backend.calls)
    assert backend.under_lock == []


def test_no_backend_call_under_the_lock_with_threads() -> None:
    limiter, backend = make(__import__("time").monotonic)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(25):
                reservation = limiter.reserve(Cost(20, 5), None)
                limiter.mark_sent(reservation)
                if i % 3 == 0:
                    limiter.refund(reservation, HEADERS)
                else:
                    limiter.settle(reservation, 15, 3, HEADERS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
        assert not thread.is_alive()
    assert errors == []
    assert backend.under_lock == []
    assert all(key.in_flight == 0 and key.outstanding["requests"] == 0 for key in limiter.keys)


# --- imports ---------------------------------------------------------------------------
def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _local_imports(module: str) -> set[str]:
    """Modules of llm_sync.ratelimit that ``module`` imports, also under
    TYPE_CHECKING (a cycle there is still a cycle of ideas)."""
    path = PACKAGE.parent.parent / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.update({target, f"{target}.{alias.name}"})
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("llm_sync.ratelimit")}


def test_no_import_cycles_in_ratelimit() -> None:
    modules = set(_modules())
    graph = {m: {d for d in _local_imports(m) if d in modules and d != m} for m in modules}
    # A package's __init__ re-exports its children; a child importing a
    # sibling does not import the package back. Only child→child edges and
    # edges into packages from outside them can close a cycle.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [module, dep]))
            if dep not in state:
                visit(dep, path + [module])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [])


def test_each_ratelimit_module_imports_on_its_own() -> None:
    script = (
        "import importlib, sys\n"
        f"for name in {_modules()!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('llm_sync')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=PACKAGE.parent.parent, timeout=60)
    assert result.returncode == 0, result.stderr


def test_two_limiters_sharing_a_backend_share_the_buckets() -> None:
    """What a shared (Redis) backend gives two processes: one set of
    buckets per scope, whoever takes from it; a pause seen by both."""
    now = [1000.0]
    waits: list[float] = []

    def wait(cond: threading.Condition, timeout: Optional[float]) -> None:
        assert timeout is not None
        waits.append(timeout)
        now[0] += timeout

    backend = MemoryBackend(lambda: now[0])
    config = RateLimitConfig(requests_per_minute=60, burst_seconds=10)  # 10 at once, 1/s
    first, second = (ProviderLimiter([("k0", config)], refunds_output=True, clock=lambda: now[0],
                                     wait=wait, transit_margin=0.0, backend=backend) for _ in range(2))
    for limiter in (first, second):
        limiter.keys[0].answered = True
    for _ in range(5):
        first.reserve(Cost(1, 1), None)
        second.reserve(Cost(1, 1), None)
    assert waits == []
    second.reserve(Cost(1, 1), None)
    assert waits == [pytest.approx(1.0)]
    first.pause(first.keys[0], 3.0)
    assert second.paused_for(second.keys[0]) == 3.0
