"""Fairness of the lease line: many threads sharing few leases.

32 threads each make calls through a pool of 2 leases against the local
simulator (fixed server latency). Served first come, first served, a call
waits for about (threads / leases) calls ahead of it, so the worst wait
stays close to the median; with callers racing for leases, some starve
(the issue saw a median of 0.05 s and a maximum of 2.5 s). Run by hand:

    python benchmarks/lease_fairness_bench.py [--threads 32] [--leases 2] [--calls 10] [--latency 0.005]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Optional

from llm_sync import LLMManager
from llm_sync.testing import Simulator

KEY = "sk-fairness-1"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--leases", type=int, default=2)
    parser.add_argument("--calls", type=int, default=10, help="calls per thread")
    parser.add_argument("--latency", type=float, default=0.005, help="server seconds per call")
    args = parser.parse_args(argv)
    with Simulator(keys=(KEY,), latency=args.latency) as sim:
        config = {"providers": {"anthropic": {"api_keys": [KEY], "base_url": sim.base_url}},
                  "pool": {"max_size": args.leases, "acquire_timeout": 600.0}}
        with LLMManager(config) as manager:
            client = manager.get_client("anthropic")
            client.complete("warm up", max_tokens=8)
            waits: list[float] = []
            lock = threading.Lock()
            start = threading.Barrier(args.threads)

            def worker() -> None:
                start.wait()
                for _ in range(args.calls):
                    began = time.perf_counter()
                    client.complete("hi", max_tokens=8)
                    elapsed = time.perf_counter() - began
                    with lock:
                        waits.append(elapsed)

            threads = [threading.Thread(target=worker) for _ in range(args.threads)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
    waits.sort()
    median = statistics.median(waits)
    p99 = waits[int(0.99 * (len(waits) - 1))]
    fair = args.threads / args.leases
    print(f"{args.threads} threads, {args.leases} leases, {len(waits)} calls in {wall:.2f} s "
          f"(call time = lease wait + service)")
    print(f"median {median * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms  max {waits[-1] * 1000:.1f} ms")
    print(f"max / median = {waits[-1] / median:.1f}  (threads / leases = {fair:.0f}; first come, first "
          f"served keeps the maximum near the median, racing lets it reach many times that)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
