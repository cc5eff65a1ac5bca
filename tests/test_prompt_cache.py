"""The prompt-cache tracker (cache-aware input estimates, issue 10 point 3):
breakpoint hashing, expiry on a fake clock, bounds, thread safety, and the
pipeline's discounted cost."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from llm_sync.models import Message
from llm_sync.content import TextBlock
from llm_sync.prompt_cache import (
    DEFAULT_TTL,
    LONG_TTL,
    CacheCost,
    PromptCacheTracker,
    breakpoints,
    cache_ttl,
    discounted,
)
from llm_sync.providers.base import LLMRequest
from llm_sync.tokens import estimate_tokens

LONG = "The quick brown fox jumps over the lazy dog. " * 800  # ~9,000 tokens


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request(system: Any = None, question: str = "hi", model: str = "m") -> LLMRequest:
    return LLMRequest(messages=[Message("user", question)], model=model, system=system)


def cached_system(text: str = LONG, **cache: Any) -> list[TextBlock]:
    return [TextBlock(text, cache_control={"type": "ephemeral", **cache})]


# --- breakpoints ---------------------------------------------------------------
def test_breakpoints_follow_the_estimate_and_ignore_cache_control_in_the_hash():
    req = request(cached_system())
    (mark,) = breakpoints(req.messages, req.system, req.tools)
    total = estimate_tokens(req.messages, req.system, req.tools)
    assert 0.9 * total < mark.tokens < total
    assert mark.ttl == DEFAULT_TTL
    (long_mark,) = breakpoints([], cached_system(ttl="1h"))
    assert long_mark.ttl == LONG_TTL and long_mark.digest == mark.digest  # same prefix, other TTL
    other = breakpoints([], cached_system(LONG + "!"))
    assert other[0].digest != mark.digest
    assert breakpoints(request(LONG).messages, LONG) == ()  # no cache_control: no breakpoint


def test_breakpoints_never_hold_content():
    (mark,) = breakpoints([], cached_system("secret words " * 200))
    assert b"secret" not in repr(mark).encode() and len(mark.digest) == 32


def test_a_message_breakpoint_covers_tools_and_system_before_it():
    blocks = [TextBlock("doc " * 2000, cache_control={"type": "ephemeral"})]
    one = breakpoints([Message("user", blocks)], "system A")
    two = breakpoints([Message("user", blocks)], "system B")
    assert one[0].digest != two[0].digest


def test_ttl_forms():
    assert cache_ttl(None) is None and cache_ttl({}) is None
    assert cache_ttl({"type": "ephemeral"}) == 300.0
    assert cache_ttl({"type": "ephemeral", "ttl": "1h"}) == 3600.0
    assert cache_ttl({"type": "ephemeral", "ttl": "5m"}) == 300.0
    assert cache_ttl({"type": "ephemeral", "ttl": 90}) == 90.0
    assert cache_ttl({"type": "ephemeral", "ttl": "soon"}) == 300.0


def test_discounted_keeps_an_allowance():
    assert discounted(10_000, 0) == 10_000
    assert discounted(10_000, 9_000) == 1_000 + 180
    assert discounted(100, 99) == 9  # never below the rest + ALLOWANCE_TOKENS
    assert discounted(100, 5_000) == 1  # never below 1


# --- the tracker -------------------------------------------------------------------
def test_recorded_prefix_is_fresh_until_its_ttl():
    clock = Clock()
    tracker = PromptCacheTracker(clock=clock)
    marks = breakpoints([], cached_system())
    assert tracker.cached_tokens("s", marks) == 0
    tracker.record("s", marks)
    assert tracker.cached_tokens("s", marks) == marks[0].tokens
    assert tracker.cached_tokens("other scope", marks) == 0
    clock.now += DEFAULT_TTL - 1
    assert tracker.cached_tokens("s", marks) == marks[0].tokens
    tracker.record("s", marks)  # a read refreshes
    clock.now += DEFAULT_TTL - 1
    assert tracker.cached_tokens("s", marks) == marks[0].tokens
    clock.now += 2
    assert tracker.cached_tokens("s", marks) == 0
    assert len(tracker) == 0  # the expired entry was dropped


def test_one_hour_ttl():
    clock = Clock()
    tracker = PromptCacheTracker(clock=clock)
    marks = breakpoints([], cached_system(ttl="1h"))
    tracker.record("s", marks)
    clock.now += 3000
    assert tracker.cached_tokens("s", marks) == marks[0].tokens
    clock.now += 601
    assert tracker.cached_tokens("s", marks) == 0


def test_longest_fresh_breakpoint_wins_and_short_prefixes_are_not_recorded():
    clock = Clock()
    tracker = PromptCacheTracker(clock=clock)
    system = [TextBlock("a " * 100, cache_control={"type": "ephemeral"}),  # too short to cache
              TextBlock(LONG, cache_control={"type": "ephemeral"}),
              TextBlock(LONG, cache_control={"type": "ephemeral"})]
    marks = breakpoints([], system)
    assert [m.tokens for m in marks] == sorted(m.tokens for m in marks) and len(marks) == 3
    tracker.record("s", marks[:2])
    assert len(tracker) == 1  # the short one is not cached by the server either
    assert tracker.cached_tokens("s", marks) == marks[1].tokens
    tracker.record("s", marks)
    assert tracker.cached_tokens("s", marks) == marks[2].tokens


def test_bounded_least_recently_recorded_first():
    tracker = PromptCacheTracker(clock=Clock(), max_entries=3, min_tokens=0)
    marks = [breakpoints([], cached_system(f"prompt {i}")) for i in range(5)]
    for m in marks:
        tracker.record("s", m)
    assert len(tracker) == 3
    assert [tracker.cached_tokens("s", m) > 0 for m in marks] == [False, False, True, True, True]
    with pytest.raises(ValueError):
        PromptCacheTracker(max_entries=0)


def test_thread_safety_under_contention():
    clock = Clock()
    tracker = PromptCacheTracker(clock=clock, max_entries=50, min_tokens=0)
    marks = [breakpoints([], cached_system(f"prompt {i}")) for i in range(200)]
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def work(seed: int) -> None:
        try:
            start.wait()
            for round_ in range(300):
                m = marks[(seed * 31 + round_) % len(marks)]
                tracker.record(f"s{seed % 3}", m)
                tracker.cached_tokens(f"s{(seed + 1) % 3}", m)
                assert len(tracker) <= 50
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(tracker) == 50


# --- the pipeline's cost -----------------------------------------------------------
def pipeline(kind: str) -> Any:
    from llm_sync.manager import LLMManager

    manager = LLMManager({"providers": {kind: {"api_keys": ["sk-test-1"], "base_url": "http://127.0.0.1:9"}}})
    return manager, manager._runtime(kind).pipeline


def test_anthropic_cost_is_discounted_on_the_scope_that_has_the_prefix_cached():
    manager, pipe = pipeline("anthropic")
    try:
        clock = Clock()
        pipe.prompt_cache = PromptCacheTracker(clock=clock)
        req = request(cached_system(), question="What now? " * 100)
        cost = pipe.cost_estimate(req)
        total = estimate_tokens(req.messages, req.system, req.tools)
        assert isinstance(cost, CacheCost) and cost.input_tokens == cost.total == total
        assert cost.input_for("key-a|m") == total  # nothing cached yet
        pipe.prompt_cache.record("key-a|m", cost.marks)
        assert cost.input_for("key-a|m") == discounted(total, cost.marks[-1].tokens) < 0.2 * total
        assert cost.input_for("key-b|m") == total  # another organisation's cache is cold
        native = pipe.cost_estimate(req, 2 * total)  # a native count is scaled alike
        assert isinstance(native, CacheCost)
        assert native.input_for("key-a|m") == pytest.approx(2 * cost.input_for("key-a|m"), abs=2)
        clock.now += DEFAULT_TTL + 1
        assert cost.input_for("key-a|m") == total
    finally:
        manager.close()


def test_openai_counts_cache_reads_so_nothing_is_tracked():
    manager, pipe = pipeline("openai")
    try:
        assert pipe.prompt_cache is None
        cost = pipe.cost_estimate(request(cached_system()))
        assert not isinstance(cost, CacheCost)
    finally:
        manager.close()


def test_the_limiter_discounts_only_on_keys_whose_scope_has_the_prefix_cached():
    from llm_sync.config import RateLimitConfig
    from llm_sync.ratelimit.limiter import ProviderLimiter

    limits = RateLimitConfig(input_tokens_per_minute=100_000)
    limiter = ProviderLimiter([("k-0", limits), ("k-1", limits)], refunds_output=True)
    warm, cold = limiter.keys
    for key in limiter.keys:
        key.home.answered = True
    tracker = PromptCacheTracker()
    req = request(cached_system(), question="What now? " * 100)
    total = estimate_tokens(req.messages, req.system, req.tools)
    marks = tuple(breakpoints(req.messages, req.system, req.tools))
    tracker.record(warm.home.id, marks)  # only the first key's organisation has the prefix cached
    cost = CacheCost(total, 16, "", total=total, marks=marks, tracker=tracker)
    chosen = limiter.reserve(cost, deadline=None)
    assert chosen.key is warm and chosen.amounts["input_tokens"] < 0.2 * total  # the discount makes it the best
    pinned = limiter.reserve(cost, deadline=None, only=cold)
    assert pinned.amounts["input_tokens"] == total  # a cold cache is charged in full
