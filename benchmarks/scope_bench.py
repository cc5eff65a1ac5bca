"""Rate-limit scope targets (issue 10), measured against the local simulator.

Load: 32 threads share one pool of calls over 4 keys in 2 groups (an
organisation each: ``g1`` = keys 0, 1; ``g2`` = keys 2, 3) and 2 model
classes with different limits (``big-*``: 150k input tokens a minute per
group, ``small-*``: 300k), both classes loaded at once: the calls are
interleaved in proportion to the classes' rates (1 big : 2 small), ~1,000
input tokens each, input tokens the binding limit. Two scenarios:

  matching  groups and model classes configured in llm_sync exactly as the
            server enforces them (``api_keys: [{key, group}]``,
            ``rate_limits: [{models: [...], ...}, ...]``)
            target: 0 server 429s; each class's time within 5 % of its
            bucket minimum; no group admits more than its limit (not 2x)
  learned   no limits configured, learned from headers; the keys' groups
            are given (``api_keys: [{key, group}]``, nothing else)
            target: 0 failed, <= 1 % 429s, >= 90 % of the achievable rate
            per class
  bare      nothing configured at all: plain keys, no groups, no limits
            (same target as learned; the keys learn from the
            organisation header of their answers which share buckets)

A class's "minimum" is computed from the bucket maths: group g can have
admitted floor((capacity_g + rate_g * T) / cost) calls of that class by
time T; the minimum T is the smallest at which the two groups together
admit them all. A class's time runs from the start to its last answer;
"rate" is minimum / time.

"Sent/limit" is what llm_sync admitted, seen at the server: every call
that reached it (answered 200 or 429) is timestamped as it is recorded,
and for each group and class the most input tokens sent within any
window of W seconds (W = 1, burst, 2x burst) is divided by what the
group's bucket allows in W (capacity + rate * W). 1.00 is the limit;
keys that each believed they had the whole group's limit would approach
2x (the server turns the excess away with 429s). Run by hand:

    python benchmarks/scope_bench.py [--scenario all] [--provider both]
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from llm_sync import LLMManager, LLMProvider
from llm_sync.testing import SimLimits, Simulator, count_input_tokens
from llm_sync.testing.recording import RecordedRequest

KEYS = ("sk-scope-1", "sk-scope-2", "sk-scope-3", "sk-scope-4")
GROUPS = {"g1": [0, 1], "g2": [2, 3]}
# Per-group input tokens a minute of each model class (the same in both
# groups: llm_sync's model-class entries apply to every key or group).
CLASSES = {"big": 150_000, "small": 300_000}
MODELS = {"big": "big-1", "small": "small-1"}
REQUESTS = {"big": 120, "small": 240}  # ~18 s each at the rates above
REQUESTS_PER_MINUTE = 10_000
OUTPUT_TPM = 1_000_000
BURST_SECONDS = 6.0
MAX_TOKENS = 16
THREADS = 32


class TimedSimulator(Simulator):
    """The simulator, with the monotonic time each answer was recorded
    (admission and answer are the same instant at zero latency)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timed: list[tuple[float, RecordedRequest]] = []
        self._timed_lock = threading.Lock()

    def _record(self, item: RecordedRequest) -> None:
        now = time.monotonic()
        with self._timed_lock:
            self.timed.append((now, item))
        super()._record(item)


def prompt(i: int) -> str:
    """About 1,000 input tokens as the simulator counts them."""
    return " ".join(f"w{i}x{j}" for j in range(994))


def minimum_seconds(n: int, cost: int, per_minute: float, groups: int = len(GROUPS)) -> float:
    """Smallest T at which the groups' buckets of one class admit all n calls."""
    rate = per_minute / 60.0
    capacity = rate * BURST_SECONDS

    def admitted(t: float) -> int:
        return groups * math.floor((capacity + rate * t) / cost)

    low, high = 0.0, n * cost / (groups * rate) + 1
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if admitted(mid) < n else (low, mid)
    return high


def most_admitted(times: list[float], cost: int, per_minute: float, window: float) -> float:
    """Most tokens sent in any ``window`` seconds over what the bucket allows in it."""
    times = sorted(times)
    most = 0
    for i, start in enumerate(times):
        most = max(most, bisect.bisect_right(times, start + window) - i)
    rate = per_minute / 60.0
    return most * cost / (rate * BURST_SECONDS + rate * window)


def server_limits(per_minute: int) -> SimLimits:
    return SimLimits(requests_per_minute=REQUESTS_PER_MINUTE, input_tokens_per_minute=per_minute,
                     output_tokens_per_minute=OUTPUT_TPM, tokens_per_minute=per_minute,
                     burst_seconds=BURST_SECONDS)


def client_config(scenario: str, provider: LLMProvider, sim: Simulator) -> dict[str, Any]:
    base_url = sim.base_url if provider is LLMProvider.ANTHROPIC else sim.base_url + "/v1"
    entry: dict[str, Any] = {"base_url": base_url, "max_retries": 4}
    if scenario == "bare":
        entry["api_keys"] = list(KEYS)
    else:
        entry["api_keys"] = [{"key": KEYS[i], "group": group}
                             for group, members in GROUPS.items() for i in members]
    if scenario == "matching":
        # Exactly what each provider enforces: Anthropic requests, input and
        # output tokens; OpenAI requests and the combined tokens.
        def tokens(tpm: int) -> dict[str, Any]:
            if provider is LLMProvider.ANTHROPIC:
                return {"input_tokens_per_minute": tpm, "output_tokens_per_minute": OUTPUT_TPM}
            return {"tokens_per_minute": tpm}

        entry["rate_limits"] = [
            {"models": [f"{name}-*"], "requests_per_minute": REQUESTS_PER_MINUTE, **tokens(tpm),
             "burst_seconds": BURST_SECONDS}
            for name, tpm in CLASSES.items()
        ]
    return {"providers": {provider.value: entry},
            "pool": {"max_size": THREADS, "acquire_timeout": 600.0}}


def interleaved() -> list[tuple[str, int]]:
    """(class, index) calls, each class spread evenly in proportion to its count."""
    order = [(k / REQUESTS[name], name, k) for name in CLASSES for k in range(REQUESTS[name])]
    return [(name, k) for _, name, k in sorted(order)]


def run(scenario: str, provider: LLMProvider) -> dict[str, Any]:
    sim = TimedSimulator(keys=KEYS, groups=GROUPS, per_model=True)
    with sim:
        for group in GROUPS:
            for name, tpm in CLASSES.items():
                sim.set_limits(group, server_limits(tpm), models=[f"{name}-*"])
        calls = interleaved()
        texts = {call: prompt(i) for i, call in enumerate(calls)}
        cost = count_input_tokens([{"role": "user", "content": texts[calls[0]]}])
        if provider is LLMProvider.OPENAI:  # its one tokens bucket counts prompt + max_tokens
            cost += MAX_TOKENS
        finished: dict[tuple[str, int], float] = {}
        failures: dict[tuple[str, int], BaseException] = {}
        with LLMManager(client_config(scenario, provider, sim)) as manager:
            client = manager.get_client(provider)

            def call(item: tuple[str, int]) -> None:
                try:
                    client.complete(texts[item], model=MODELS[item[0]], max_tokens=MAX_TOKENS)
                except Exception as error:  # noqa: BLE001 - counted, reported
                    failures[item] = error
                finished[item] = time.monotonic()

            started = time.monotonic()
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(call, calls))
            status = manager.get_status(provider)
        timed = list(sim.timed)
        stats = sim.stats()
    per_key = {s["client_id"]: s["total_requests"] for s in status["client_statuses"]}
    group_of: dict[int | None, str] = {i: group for group, members in GROUPS.items() for i in members}
    rows = []
    for name, tpm in CLASSES.items():
        mine = [item for item in calls if item[0] == name]
        elapsed = max(finished[item] for item in mine) - started
        best = minimum_seconds(len(mine), cost, tpm)
        answered = [(t, rec) for t, rec in timed
                    if isinstance(rec.body, dict) and rec.body.get("model") == MODELS[name]]
        too_many = sum(1 for _, rec in answered if rec.status == 429)
        worst = 0.0
        for group in GROUPS:
            sent = [t for t, rec in answered if rec.status in (200, 429) and group_of.get(rec.key_id) == group]
            for window in (1.0, BURST_SECONDS, 2 * BURST_SECONDS):
                worst = max(worst, most_admitted(sent, cost, tpm, window))
        failed = [failures[item] for item in mine if item in failures]
        rows.append({
            "scenario": scenario, "provider": provider.value, "class": name, "requests": len(mine),
            "seconds": elapsed, "minimum": best, "ratio": elapsed / best, "rate_share": best / elapsed,
            "failed": len(failed), "server_429s": too_many, "share_429": too_many / len(mine),
            "most_admitted": worst, "first_error": repr(failed[0]) if failed else None,
        })
    total_429 = sum(counts.get(429, 0) for counts in stats.values())
    return {"rows": rows, "per_key": per_key, "total_429": total_429, "cost": cost}


def verdict(row: dict[str, Any]) -> str:
    if row["scenario"] == "matching":
        ok = row["server_429s"] == 0 and row["ratio"] <= 1.05 and row["most_admitted"] < 2.0
    else:
        ok = row["failed"] == 0 and row["share_429"] <= 0.01 and row["rate_share"] >= 0.90
    return "met" if ok else "MISSED"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["matching", "learned", "bare", "all"], default="all")
    parser.add_argument("--provider", choices=["anthropic", "openai", "both"], default="both")
    args = parser.parse_args(argv)
    scenarios = ["matching", "learned", "bare"] if args.scenario == "all" else [args.scenario]
    providers = list(LLMProvider) if args.provider == "both" else [LLMProvider(args.provider)]
    print(f"{'scenario':9} {'provider':9} {'class':5} {'req':>4} {'time s':>7} {'min s':>6} {'ratio':>6} "
          f"{'rate':>6} {'failed':>6} {'429s':>5} {'429 %':>6} {'sent/limit':>10}  target")
    for provider in providers:
        for scenario in scenarios:
            result = run(scenario, provider)
            for r in result["rows"]:
                print(f"{r['scenario']:9} {r['provider']:9} {r['class']:5} {r['requests']:4d} {r['seconds']:7.2f} "
                      f"{r['minimum']:6.2f} {r['ratio']:6.3f} {r['rate_share']:6.1%} {r['failed']:6d} "
                      f"{r['server_429s']:5d} {r['share_429']:6.1%} {r['most_admitted']:10.2f}  {verdict(r)}")
                if r["first_error"]:
                    print(f"  first error: {r['first_error']}")
            print(f"  per key: {result['per_key']}  cost/call: {result['cost']}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
