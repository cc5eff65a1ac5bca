"""Resident memory of a manager with 256 keys, idle and after N calls.

Run in a fresh process (``python -m benchmarks.memory CALLS THREADS``) so
nothing else the benchmarks did is counted; prints one JSON line of MiB
figures (VmRSS from /proc/self/status): ``before`` the manager, ``idle``
with it built, ``after`` the calls. The simulator runs in its own process.
"""

from __future__ import annotations

import gc
import json
import sys

from llm_sync import LLMManager

from .simproc import SimProcess

KEYS = 256


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main(calls: int, threads: int) -> dict[str, float]:
    from .__main__ import MAX_TOKENS, PROMPT, drive, manager_config

    keys = [f"sk-bench-m{i}" for i in range(KEYS)]
    with SimProcess(keys=tuple(keys)) as sim:
        gc.collect()
        before = rss_mib()
        with LLMManager(manager_config(sim.base_url, keys)) as manager:
            client = manager.get_client("anthropic")
            gc.collect()
            idle = rss_mib()

            def make() -> "object":
                def call() -> int:
                    client.complete(PROMPT, max_tokens=MAX_TOKENS)
                    return 1
                return call
            drive(make, calls, threads)  # type: ignore[arg-type]
            gc.collect()
            after = rss_mib()
    return {"before": before, "idle": idle, "after": after}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
