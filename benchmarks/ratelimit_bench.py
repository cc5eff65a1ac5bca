"""Rate-limit targets (issue 3), measured against the local simulator.

Load: ``complete_batch`` from 32 threads over 4 keys with unequal limits,
input tokens the binding limit, a few hundred requests of ~1,000 input
tokens each. Three scenarios:

  matching  limits configured exactly as the server enforces them
            target: 0 server 429s, time within 3 % of the bucket minimum
  stricter  the server allows bursts of only a few seconds; the config
            does not say so  target: 0 failed, <= 1 % see a 429, >= 90 %
            of the achievable rate
  learned   no limits configured, learned from headers
            target: 0 failed, <= 1 % 429s, >= 95 % of the achievable rate

"Minimum" is computed from the bucket maths: key k can have admitted
floor((capacity_k + rate_k * T) / cost) requests by time T; the minimum T
is the smallest at which the keys together admit them all. Run by hand:

    python benchmarks/ratelimit_bench.py [--requests 300] [--scenario all]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Callable, Optional

from llm_sync import LLMManager, LLMProvider
from llm_sync.testing import SimLimits, Simulator, count_input_tokens

KEYS = ("sk-bench-1", "sk-bench-2", "sk-bench-3", "sk-bench-4")
# Unequal per-key limits, 10k tokens/s together. They bind Anthropic's input
# bucket and OpenAI's combined tokens bucket (prompt + max_tokens).
INPUT_TPM = (60_000, 120_000, 180_000, 240_000)
REQUESTS_PER_MINUTE = 10_000
OUTPUT_TPM = 1_000_000
MAX_TOKENS = 16
THREADS = 32


def prompt(i: int) -> str:
    """About 1,000 input tokens as the simulator counts them."""
    return " ".join(f"w{i}x{j}" for j in range(994))


def minimum_seconds(n: int, cost: int, burst_seconds: float) -> float:
    """Smallest T at which the server's buckets admit all n requests."""
    rates = [tpm / 60.0 for tpm in INPUT_TPM]
    capacities = [rate * burst_seconds for rate in rates]

    def admitted(t: float) -> int:
        return sum(math.floor((c + r * t) / cost) for c, r in zip(capacities, rates))

    low, high = 0.0, n * cost / sum(rates) + 1
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if admitted(mid) < n else (low, mid)
    return high


def run(scenario: str, requests: int, provider: LLMProvider,
        simulator: Callable[..., Any] = Simulator) -> dict[str, Any]:
    """One scenario; ``simulator`` makes the server (a Simulator, or one in
    a process of its own: ``benchmarks.simproc.SimProcess``)."""
    server_burst = 2.0 if scenario == "stricter" else 6.0
    server_limits = [
        SimLimits(requests_per_minute=REQUESTS_PER_MINUTE, input_tokens_per_minute=tpm,
                  output_tokens_per_minute=OUTPUT_TPM, tokens_per_minute=tpm,
                  burst_seconds=server_burst)
        for tpm in INPUT_TPM
    ]
    with simulator(keys=KEYS, limits=server_limits) as sim:
        provider_config: dict[str, Any] = {
            "api_keys": list(KEYS),
            "base_url": sim.base_url,
            "max_retries": 4,
        }
        if scenario in ("matching", "stricter"):
            # Exactly what each provider enforces: Anthropic requests, input
            # and output tokens; OpenAI requests and the combined tokens.
            token_limits = (
                (lambda tpm: {"input_tokens_per_minute": tpm, "output_tokens_per_minute": OUTPUT_TPM})
                if provider is LLMProvider.ANTHROPIC else (lambda tpm: {"tokens_per_minute": tpm})
            )
            provider_config["rate_limits"] = [
                {"requests_per_minute": REQUESTS_PER_MINUTE, **token_limits(tpm),
                 **({"burst_seconds": 6.0} if scenario == "matching" else {})}
                for tpm in INPUT_TPM
            ]
        config = {"providers": {provider.value: provider_config},
                  "pool": {"max_size": THREADS, "acquire_timeout": 600.0}}
        items = [prompt(i) for i in range(requests)]
        cost = count_input_tokens([{"role": "user", "content": items[0]}])
        if provider is LLMProvider.OPENAI:  # its one tokens bucket counts prompt + max_tokens
            cost += MAX_TOKENS
        with LLMManager(config) as manager:
            client = manager.get_client(provider)
            started = time.monotonic()
            results = client.complete_batch(items, max_workers=THREADS, max_tokens=MAX_TOKENS,
                                            return_exceptions=True)
            elapsed = time.monotonic() - started
            status = manager.get_status(provider)
        stats = sim.stats()
    failed = [r for r in results if isinstance(r, Exception)]
    per_key = {s["client_id"]: s["total_requests"] for s in status["client_statuses"]}
    too_many = sum(counts.get(429, 0) for counts in stats.values())
    best = minimum_seconds(requests, cost, server_burst)
    return {
        "scenario": scenario, "provider": provider.value, "requests": requests, "cost": cost,
        "seconds": elapsed, "minimum": best, "ratio": elapsed / best, "rate_share": best / elapsed,
        "failed": len(failed), "server_429s": too_many, "share_429": too_many / requests,
        "per_key": per_key, "first_error": repr(failed[0]) if failed else None,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--scenario", choices=["matching", "stricter", "learned", "all"], default="all")
    parser.add_argument("--provider", choices=["anthropic", "openai", "both"], default="both")
    args = parser.parse_args(argv)
    scenarios = ["matching", "stricter", "learned"] if args.scenario == "all" else [args.scenario]
    providers = list(LLMProvider) if args.provider == "both" else [LLMProvider(args.provider)]
    print(f"{'scenario':9} {'provider':9} {'req':>4} {'time s':>7} {'min s':>6} {'ratio':>6} "
          f"{'rate':>6} {'failed':>6} {'429s':>5} {'429 %':>6}  per key")
    for provider in providers:
        for scenario in scenarios:
            r = run(scenario, args.requests, provider)
            print(f"{r['scenario']:9} {r['provider']:9} {r['requests']:4d} {r['seconds']:7.2f} {r['minimum']:6.2f} "
                  f"{r['ratio']:6.3f} {r['rate_share']:6.1%} {r['failed']:6d} {r['server_429s']:5d} "
                  f"{r['share_429']:6.1%}  {r['per_key']}")
            if r["first_error"]:
                print(f"  first error: {r['first_error']}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
