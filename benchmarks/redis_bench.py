"""Shared rate limits across processes through Redis (issue 11), measured
against the local simulator.

Load: 4 processes x 8 threads share 2 Anthropic keys. The processes' shares
are deliberately unequal: 40 %, 30 %, 20 %, 10 % of the calls, each with its
own ``max_tokens`` (8, 16, 24, 32), so the small ones finish early and the
others must take up the slack. Prompts cycle through ~100, ~100, ~100 and
~720 input tokens in every process (the same mix everywhere, so the
workload's mix is constant over time and the bucket minimum below is one a
perfect limiter could reach); requests and input tokens per minute are
sized so that both bind (input tokens a little more). Every process is
configured as a new user would configure it: the FULL limits of each key,
``rate_limit_backend: redis://127.0.0.1:6379/15``, ``backend_processes: 4``.
The simulator runs in the benchmark's parent process and enforces the same
limits server-side. Two backends, same workload:

  redis   target: 0 server 429s, total time within 5 % of the bucket minimum
  memory  each process limits on its own (the contrast): 4x the limits at
          once, so the server answers with 429s

"Minimum" comes from the bucket maths: for each dimension d the server's
buckets together can admit capacity_d + rate_d * T by time T, so no
schedule finishes before max_d (total_d - capacity_d) / rate_d. Fairness:
each process's finish time, its mean and longest wait per call, and its
share of the calls the server answered while all 4 processes were still
running (equal threads: 25 % each is fair; a starving process shows ~0).

Redis cost: round trips per request (the ``round_trips`` of each process's
``get_status(...)["rate_limit_backend"]``, less what the status call itself
costs, divided by calls), and added latency: the mean per-call latency of
an unconstrained run (limits far above use: nobody waits), redis minus
memory, same machine, one run each. Every run has its own API keys and
organisation names, so its buckets are its own even when other sessions
use the same Redis database; afterwards it deletes them (its own
``llm_sync:rl:*`` keys of db 15, none other). Run by hand (Redis on
127.0.0.1:6379):

    python benchmarks/redis_bench.py [--quick] [--backend both]
"""

from __future__ import annotations

import argparse
import multiprocessing
import secrets
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from llm_sync import LLMManager
from llm_sync.ratelimit.backends.redis_store import DEFAULT_PREFIX, redis_key
from llm_sync.ratelimit.key import key_id, scope_id
from llm_sync.testing import SimLimits, count_input_tokens
from llm_sync.testing.recording import RecordedRequest

# Run as a script (python benchmarks/redis_bench.py): its folder is on the path.
from scope_bench import TimedSimulator

REDIS_URL = "redis://127.0.0.1:6379/15"
KEY_COUNT = 2
# Per key; 50 requests and 12,500 input tokens a second together.
REQUESTS_PER_MINUTE = (1_200, 1_800)
INPUT_TPM = (300_000, 450_000)
OUTPUT_TPM = 1_000_000
BURST_SECONDS = 6.0
UNCONSTRAINED = 100_000_000  # per minute, every dimension: nobody waits
PROCESSES = 4
THREADS = 8
SHARES = (0.4, 0.3, 0.2, 0.1)
MAX_TOKENS = (8, 16, 24, 32)
# Filler words per prompt, cycled: average ~255 tokens a call, so input
# tokens bind ~2 % more than requests. Four letters and a space a word, as
# in English text: llm_sync's local estimate (4 characters a token) is then
# ~1.24x the simulator's count (a token a word) until it calibrates.
WORDS = (92, 92, 92, 712)
VOCABULARY = ("tick", "lamp", "rose", "dune", "mild", "fern", "jolt", "barn")
CALLS = {"full": 1_800, "quick": 800}
SERIAL_CALLS = 400  # the one-thread latency runs
MODEL = "claude-3-5-haiku-20241022"


# --- the workload ---------------------------------------------------------
@dataclass
class Workload:
    """Every process's prompts and max_tokens, and the totals the server
    will charge (input tokens as the simulator counts them)."""

    prompts: list[list[str]]
    max_tokens: tuple[int, ...]
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


def prompt(process: int, index: int) -> str:
    """A prompt whose first word names its process (how the server-side
    records are told apart) and whose size cycles through ``WORDS``."""
    words = WORDS[(index + process) % len(WORDS)]
    return f"p{process} c{index} " + " ".join(VOCABULARY[(index + j) % len(VOCABULARY)] for j in range(words))


def build_workload(calls: int, shares: tuple[float, ...] = SHARES) -> Workload:
    """``calls`` split between processes by ``shares``."""
    counts = [round(calls * share) for share in shares]
    work = Workload([[prompt(p, i) for i in range(n)] for p, n in enumerate(counts)], MAX_TOKENS[:len(shares)])
    sizes = {text: count_input_tokens([{"role": "user", "content": text}]) for texts in work.prompts for text in texts}
    work.requests = sum(counts)
    work.input_tokens = sum(sizes.values())
    work.output_tokens = sum(n * m for n, m in zip(counts, MAX_TOKENS))
    return work


def _dimensions(work: Workload) -> list[tuple[int, float]]:
    """(total the workload needs, per-minute limit of all keys together)
    per dimension the server limits."""
    return [(work.requests, sum(REQUESTS_PER_MINUTE)), (work.input_tokens, sum(INPUT_TPM)),
            (work.output_tokens, OUTPUT_TPM * KEY_COUNT)]


def seconds_for(work: Workload, fraction: float) -> float:
    """Least time the server's buckets (all keys together) allow for
    ``fraction`` of the workload: the largest over dimensions of
    (fraction * total - capacity) / rate."""
    return max(max(0.0, (fraction * total - per_minute / 60.0 * BURST_SECONDS) / (per_minute / 60.0))
               for total, per_minute in _dimensions(work))


def minimum_seconds(work: Workload) -> float:
    """The bucket minimum: the least time for the whole workload."""
    return seconds_for(work, 1.0)


def fair_finishes(work: Workload) -> list[float]:
    """When each process would finish if the capacity were shared equally
    among the processes still running (they all have THREADS threads): the
    smallest finishes when every process has done as much as it; the
    largest at the bucket minimum. (Every process has the same mix of
    prompt sizes, so a share of the calls is that share of every bucket.)"""
    counts = [len(prompts) for prompts in work.prompts]
    order = sorted(range(len(counts)), key=lambda i: counts[i])
    finishes = [0.0] * len(counts)
    done = 0
    for rank, index in enumerate(order):
        done_by_then = done + counts[index] * (len(counts) - rank)
        finishes[index] = seconds_for(work, done_by_then / work.requests)
        done += counts[index]
    return finishes


# --- the server -------------------------------------------------------------
def sender(record: RecordedRequest) -> Optional[int]:
    """The process that sent a recorded request (its prompt's first word)."""
    body = record.body if isinstance(record.body, dict) else {}
    messages = body.get("messages") or [{}]
    content = messages[0].get("content")
    if isinstance(content, list):
        content = next((block.get("text") for block in content if isinstance(block, dict)), "")
    if isinstance(content, str) and content.startswith("p"):
        head = content.split(" ", 1)[0][1:]
        return int(head) if head.isdigit() else None
    return None


@dataclass(frozen=True)
class Names:
    """One run's API keys and organisations, unique to it.

    Other sessions may use the same Redis database at the same time, and
    bucket names derive from what they hold: a hash of the API key, or the
    organisation a server names (``anthropic:org:<id>|<model>``). Every
    simulator calls its ungrouped keys' organisations ``org-key-<index>``,
    so fixed names would share buckets with anyone else's simulator run.
    Each key here is its own organisation (a simulator group of one), with
    a per-run name; llm_sync is not told (plain keys, as a new user writes
    them) and learns it from the answers, as it would from a provider."""

    nonce: str

    @classmethod
    def fresh(cls) -> "Names":
        return cls(secrets.token_hex(4))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f"sk-rbench-{self.nonce}-{i}" for i in range(KEY_COUNT))

    @property
    def organizations(self) -> tuple[str, ...]:
        return tuple(f"rbench-{self.nonce}-org{i}" for i in range(KEY_COUNT))

    def redis_keys(self) -> list[str]:
        """Every Redis key this run's buckets can have: per API key and per
        organisation learned, for the one model used."""
        owners = [key_id(key) for key in self.keys] + [f"anthropic:org:{org}" for org in self.organizations]
        return [redis_key(DEFAULT_PREFIX, scope_id(owner, MODEL)) for owner in owners]


def server_limits(constrained: bool) -> list[SimLimits]:
    """Per key (organisation): the configured limits, or far above use."""
    if not constrained:
        return [SimLimits(UNCONSTRAINED, UNCONSTRAINED, UNCONSTRAINED, UNCONSTRAINED, BURST_SECONDS)] * KEY_COUNT
    return [SimLimits(requests_per_minute=rpm, input_tokens_per_minute=tpm, output_tokens_per_minute=OUTPUT_TPM,
                      burst_seconds=BURST_SECONDS) for rpm, tpm in zip(REQUESTS_PER_MINUTE, INPUT_TPM)]


def start_simulator(names: Names, constrained: bool) -> TimedSimulator:
    """Each key its own organisation, with its limits; serving (a context
    manager: leaving it stops the server)."""
    sim = TimedSimulator(keys=names.keys, groups={org: [i] for i, org in enumerate(names.organizations)})
    for org, limits in zip(names.organizations, server_limits(constrained)):
        sim.set_limits(org, limits)
    sim.start()
    return sim


def client_config(names: Names, backend: str, base_url: str, constrained: bool,
                  threads: int = THREADS) -> dict[str, Any]:
    """What every process is configured with: the full limits of each key
    (as a new user would), the backend, and how many processes share it."""
    if constrained:
        limits = [{"requests_per_minute": rpm, "input_tokens_per_minute": tpm, "output_tokens_per_minute": OUTPUT_TPM,
                   "burst_seconds": BURST_SECONDS} for rpm, tpm in zip(REQUESTS_PER_MINUTE, INPUT_TPM)]
    else:
        limits = [{"requests_per_minute": UNCONSTRAINED, "input_tokens_per_minute": UNCONSTRAINED,
                   "output_tokens_per_minute": UNCONSTRAINED, "burst_seconds": BURST_SECONDS}] * KEY_COUNT
    return {
        "providers": {"anthropic": {"api_keys": list(names.keys), "base_url": base_url, "max_retries": 4,
                                    "rate_limits": limits}},
        "pool": {"max_size": threads, "acquire_timeout": 600.0},
        "rate_limit_backend": REDIS_URL if backend == "redis" else "memory",
        "backend_processes": PROCESSES,
    }


def clear_redis(names: Names) -> int:
    """Delete this run's buckets (``llm_sync:rl:*`` keys of db 15, and
    only those of its own names: other sessions' runs are left alone)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.delete(*names.redis_keys()))
    finally:
        client.close()


# --- one process --------------------------------------------------------------
@dataclass
class ProcessResult:
    """What one process reports: per call (start, end, error or None), the
    backend's health and its round trips net of the status calls."""

    index: int
    calls: list[tuple[float, float, Optional[str]]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    round_trips: Optional[int] = None


def net_round_trips(manager: LLMManager) -> tuple[dict[str, Any], Optional[int]]:
    """The backend's health and its round trips less what ``get_status``
    itself costs (measured by calling it twice)."""
    first = manager.get_status("anthropic")["rate_limit_backend"]
    second = manager.get_status("anthropic")["rate_limit_backend"]
    if "round_trips" not in first:
        return first, None
    return first, 2 * first["round_trips"] - second["round_trips"]


def run_process(index: int, config: dict[str, Any], prompts: list[str], max_tokens: int,
                ready: Any, go: Any, out: Any) -> None:
    """A child: a fresh manager, then its calls on as many threads as the
    pool has leases, once the parent fires ``go`` (so every process starts
    at the same instant)."""
    result = ProcessResult(index)
    lock = threading.Lock()
    with LLMManager(config) as manager:
        client = manager.get_client("anthropic")

        def call(text: str) -> None:
            started, error = time.monotonic(), None
            try:
                client.complete(text, model=MODEL, max_tokens=max_tokens)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                error = f"{type(exc).__name__}: {exc}"
            with lock:
                result.calls.append((started, time.monotonic(), error))

        ready.put(index)
        go.wait()
        with ThreadPoolExecutor(config["pool"]["max_size"]) as pool:
            list(pool.map(call, prompts))
        result.health, result.round_trips = net_round_trips(manager)
    out.put(result)


# --- one run ------------------------------------------------------------------
@dataclass
class RunResult:
    backend: str
    constrained: bool
    started: float
    processes: list[ProcessResult]
    timed: list[tuple[float, RecordedRequest]]
    minimum: float
    calls: int
    fair: list[float]

    @property
    def every_call(self) -> list[tuple[float, float, Optional[str]]]:
        return [c for p in self.processes for c in p.calls]

    @property
    def seconds(self) -> float:
        return max(end for _, end, _ in self.every_call) - self.started

    def finish(self, process: ProcessResult) -> float:
        return max(end for _, end, _ in process.calls) - self.started

    def server_429s(self, process: Optional[int] = None) -> int:
        return sum(1 for _, rec in self.timed if rec.status == 429 and (process is None or sender(rec) == process))

    def failed(self, process: Optional[ProcessResult] = None) -> int:
        calls = self.every_call if process is None else process.calls
        return sum(1 for _, _, error in calls if error)

    def mean_latency(self) -> float:
        return statistics.mean(end - start for start, end, _ in self.every_call)


def run(backend: str, work: Workload, constrained: bool, target: Callable[..., None] = run_process,
        threads: int = THREADS) -> RunResult:
    """The simulator here; a spawned process per prompt list of ``work``
    (``target``: what each runs, for experiments), each on ``threads``
    threads; every one starts at once. This run's Redis keys are deleted
    afterwards."""
    names = Names.fresh()
    context = multiprocessing.get_context("spawn")
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    try:
        sim = start_simulator(names, constrained)
        with sim:  # already started: stopped on the way out
            config = client_config(names, backend, sim.base_url, constrained, threads)
            children = [context.Process(target=target, args=(i, config, work.prompts[i], work.max_tokens[i],
                                                             ready, go, out))
                        for i in range(len(work.prompts))]
            for child in children:
                child.start()
            for _ in children:
                ready.get(timeout=120)
            started = time.monotonic()
            go.set()
            results = sorted((out.get(timeout=900) for _ in children), key=lambda r: r.index)
            for child in children:
                child.join(timeout=60)
            timed = list(sim.timed)
    finally:
        if backend == "redis":
            clear_redis(names)
    return RunResult(backend, constrained, started, results, timed, minimum_seconds(work) if constrained else 0.0,
                     work.requests, fair_finishes(work))


# --- the report -----------------------------------------------------------------
def all_active_shares(result: RunResult) -> tuple[float, list[float]]:
    """Until the first process finished: when that was, and each process's
    share of the calls the server answered (200) meanwhile."""
    first = min(result.finish(p) for p in result.processes) + result.started
    answered = [sender(rec) for t, rec in result.timed if rec.status == 200 and t <= first]
    total = max(1, len(answered))
    return first - result.started, [answered.count(p.index) / total for p in result.processes]


def print_summary(results: list[RunResult]) -> None:
    print(f"{'backend':8} {'calls':>5} {'time s':>7} {'min s':>6} {'ratio':>6} {'429s':>5} {'failed':>6} "
          f"{'round trips/call':>16}  target")
    for r in results:
        trips = [p.round_trips for p in r.processes]
        per_call = f"{sum(t for t in trips if t is not None) / r.calls:.2f}" if None not in trips else "-"
        ok = r.server_429s() == 0 and r.failed() == 0 and r.seconds / r.minimum <= 1.05
        target = ("met" if ok else "MISSED") if r.backend == "redis" else "(contrast)"
        print(f"{r.backend:8} {r.calls:5d} {r.seconds:7.2f} {r.minimum:6.2f} {r.seconds / r.minimum:6.3f} "
              f"{r.server_429s():5d} {r.failed():6d} {per_call:>16}  {target}")


def print_processes(result: RunResult) -> None:
    first, shares = all_active_shares(result)
    print(f"\n{result.backend}: per process (all 4 running until {first:.2f} s; a fair share then is 25 %)")
    print(f"{'proc':>4} {'calls':>5} {'of all':>6} {'max_tok':>7} {'finish s':>8} {'fair s':>6} {'share while 4 run':>17} "
          f"{'mean wait ms':>12} {'max wait ms':>11} {'429s':>5} {'failed':>6}  backend")
    for p, share, fair in zip(result.processes, shares, result.fair):
        waits = [end - start for start, end, _ in p.calls]
        health = p.health
        state = (f"{health.get('mode', '-')}, errors {health.get('errors', 0)}, fallbacks {health.get('fallbacks', 0)}"
                 if health.get("backend") == "redis" else health.get("backend", "-"))
        print(f"{p.index:4d} {len(p.calls):5d} {SHARES[p.index]:6.0%} {MAX_TOKENS[p.index]:7d} "
              f"{result.finish(p):8.2f} {fair:6.2f} {share:17.1%} {statistics.mean(waits) * 1e3:12.1f} "
              f"{max(waits) * 1e3:11.1f} {result.server_429s(p.index):5d} {result.failed(p):6d}  {state}")
    errors = [error for p in result.processes for _, _, error in p.calls if error]
    if errors:
        print(f"  first error: {errors[0]}")


def print_latency(title: str, results: dict[str, RunResult]) -> None:
    """Mean latency per call of each backend, and what redis adds."""
    print(f"\nunconstrained (limits far above use, nobody waits), {title}: mean latency per call")
    for backend, r in results.items():
        trips = [p.round_trips for p in r.processes]
        per_call = f", {sum(t for t in trips if t is not None) / r.calls:.2f} round trips/call" \
            if None not in trips else ""
        print(f"  {backend:7} {r.mean_latency() * 1e6:8.0f} µs/call over {r.calls} calls ({r.seconds:.2f} s){per_call}")
    if {"redis", "memory"} <= results.keys():
        added = results["redis"].mean_latency() - results["memory"].mean_latency()
        print(f"  redis adds {added * 1e6:.0f} µs per call")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{CALLS['quick']} calls (~10 s) instead of "
                                                             f"{CALLS['full']} (~30 s)")
    parser.add_argument("--backend", choices=["redis", "memory", "both"], default="both")
    parser.add_argument("--no-latency", action="store_true", help="skip the unconstrained latency runs")
    args = parser.parse_args(argv)
    backends = ["redis", "memory"] if args.backend == "both" else [args.backend]
    work = build_workload(CALLS["quick" if args.quick else "full"])
    print(f"{PROCESSES} processes x {THREADS} threads, {KEY_COUNT} keys; {work.requests} calls, "
          f"{work.input_tokens} input tokens; bucket minimum {minimum_seconds(work):.2f} s")
    sys.stdout.flush()
    results = [run(backend, work, constrained=True) for backend in backends]
    print_summary(results)
    for result in results:
        print_processes(result)
    if not args.no_latency:
        # The same load (on 2 cores it measures contention as much as Redis),
        # then one process on one thread (the round trips alone).
        print_latency(f"{PROCESSES} processes x {THREADS} threads",
                      {backend: run(backend, work, constrained=False) for backend in backends})
        serial = build_workload(SERIAL_CALLS, shares=(1.0,))
        print_latency("1 process x 1 thread", {backend: run(backend, serial, constrained=False, threads=1)
                                                for backend in backends})
    return 0


if __name__ == "__main__":
    sys.exit(main())
