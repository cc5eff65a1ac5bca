"""Per-call overhead of llm_sync against raw ``requests``, one thread.

Both paths call the same local simulator endpoint over a kept-alive
connection; the ratio (llm_sync / raw) is what matters, measured in one run
(absolute times depend on the machine). Run by hand:

    python benchmarks/overhead_bench.py [--calls 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Optional

import requests

from llm_sync import LLMManager
from llm_sync.testing import Simulator

KEY = "sk-overhead-1"


def best_per_call(fn: Callable[[], object], calls: int, rounds: int) -> float:
    """Best of ``rounds`` mean seconds per call (least disturbed by noise)."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        results.append((time.perf_counter() - started) / calls)
    return min(results)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with Simulator(keys=(KEY,)) as sim:
        body = {"model": "claude-3-5-haiku-20241022", "max_tokens": 16,
                "messages": [{"role": "user", "content": "hello there"}]}
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
        session = requests.Session()
        url = f"{sim.base_url}/v1/messages"

        def raw() -> object:
            return session.post(url, json=body, headers=headers, timeout=30).json()

        config = {"providers": {"anthropic": {"api_keys": [KEY], "base_url": sim.base_url}},
                  "pool": {"max_size": 1}}
        with LLMManager(config) as manager:
            client = manager.get_client("anthropic")

            def ours() -> object:
                return client.complete("hello there", max_tokens=16)

            raw(), ours()  # warm both connections
            samples = [(best_per_call(raw, args.calls, args.rounds), best_per_call(ours, args.calls, args.rounds))
                       for _ in range(2)]
    raw_s = statistics.mean(s[0] for s in samples)
    ours_s = statistics.mean(s[1] for s in samples)
    print(f"raw requests  {raw_s * 1e6:8.0f} µs/call")
    print(f"llm_sync      {ours_s * 1e6:8.0f} µs/call")
    print(f"overhead      {(ours_s - raw_s) * 1e6:8.0f} µs/call, ratio {ours_s / raw_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
