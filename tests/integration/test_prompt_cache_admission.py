"""Cache-aware admission over real sockets (issue 10 point 3): Anthropic,
one key, an input limit a 90 %-cached prompt would wait for if it were
charged in full. After the first call writes the cache, later calls are
charged only for the uncached part and admitted at once."""

from __future__ import annotations

import time
from typing import Any

from llm_sync import LLMManager, TextBlock
from llm_sync.testing import SimLimits, Simulator

KEY = "sk-cache-1"
SYSTEM = "The quick brown fox jumps over the lazy dog. " * 800  # ~9,000 tokens
QUESTION = "Tell me more about the fox, please. " * 100  # ~900 tokens


def test_cached_prefix_is_not_reserved_again():
    limits = SimLimits(requests_per_minute=1000, input_tokens_per_minute=14_000, output_tokens_per_minute=100_000)
    with Simulator(keys=[KEY], limits=[limits]) as sim:
        config = {"providers": {"anthropic": {
            "api_keys": [KEY], "base_url": sim.base_url, "max_retries": 0,
            "rate_limits": {"requests_per_minute": 1000, "input_tokens_per_minute": 14_000,
                            "output_tokens_per_minute": 100_000},
        }}}
        with LLMManager(config) as manager:
            runtime = manager._runtime("anthropic")
            charged: list[float] = []
            reserve = runtime.limiter.reserve

            def spy(cost: Any, *args: Any, **kwargs: Any) -> Any:
                reservation = reserve(cost, *args, **kwargs)
                charged.append(reservation.amounts["input_tokens"])
                return reservation

            runtime.limiter.reserve = spy  # type: ignore[method-assign]
            client = manager.get_client("anthropic")
            system = [TextBlock(SYSTEM, cache_control={"type": "ephemeral"})]
            first = client.complete(QUESTION, system=system, max_tokens=16)
            assert first.usage.cache_creation_input_tokens and first.usage.cache_creation_input_tokens > 8000
            started = time.monotonic()
            later = [client.complete(QUESTION, system=system, max_tokens=16, timeout=5) for _ in range(4)]
            elapsed = time.monotonic() - started
        stats = sim.stats()
    assert all(r.usage.cache_read_input_tokens and r.usage.cache_read_input_tokens > 8000 for r in later)
    # Charged in full, the second call alone would wait ~35 s for the
    # 14,000-a-minute bucket; discounted, four calls go through at once.
    assert elapsed < 3.0
    assert charged[0] > 9000
    assert all(amount < 0.2 * charged[0] for amount in charged[1:])
    assert sum(counts.get(429, 0) for counts in stats.values()) == 0
