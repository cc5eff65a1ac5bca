"""``llm-sync load-test``: the seed's pool load test, as a command.

``-n`` calls with ``--concurrency`` threads (streamed with ``--stream``),
a progress bar on stderr, then a summary: throughput, p50/p95/p99 latency
of the calls that succeeded, the server's 429s seen (requeued onto another
key or not), failures by error type and calls per key. ``--json`` prints
the summary as one JSON object, the only thing on stdout. The exit status
is 1 when any call failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, TextIO

from ..cancel import CancelScope
from ..client import LLMClient
from ..progress import reporter
from .target import add_target_arguments, endpoints, open_manager

__all__ = ["Outcome", "add_parser", "percentile", "run_load_test", "summarise"]

THREAD_PREFIX = "llm-sync-load"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser("load-test", help="N calls at a given concurrency; throughput and latencies")
    add_target_arguments(parser)
    parser.add_argument("-n", "--requests", type=_positive, default=100, help="calls to make (default 100)")
    parser.add_argument("-c", "--concurrency", type=_positive, default=8, help="threads calling at once (default 8)")
    parser.add_argument("--stream", action="store_true", help="streamed calls (also measures the first chunk)")
    parser.add_argument("--max-tokens", type=int, default=10)
    parser.add_argument("--prompt", default="Test {i}", help="each call's prompt; {i} is its number")
    parser.add_argument("--json", action="store_true", help="the summary as one JSON object on stdout")
    parser.set_defaults(handler=run_load_test)


@dataclass(frozen=True)
class Outcome:
    """One call: how long it took, who served it or what it raised."""

    seconds: float
    client_id: Optional[str] = None
    error: Optional[str] = None  # the exception's type name
    first_chunk: Optional[float] = None  # streamed calls: seconds to the first text


def _call(client: LLMClient, prompt: str, stream: bool, max_tokens: int) -> Outcome:
    started = time.monotonic()
    first: Optional[float] = None
    try:
        if stream:
            with client.stream(prompt, max_tokens=max_tokens) as answer:
                for _ in answer:
                    if first is None:
                        first = time.monotonic() - started
            client_id = answer.response.client_id
        else:
            client_id = client.complete(prompt, max_tokens=max_tokens).client_id
    except Exception as exc:  # counted by type, never raised: the run goes on
        return Outcome(time.monotonic() - started, error=type(exc).__name__)
    return Outcome(time.monotonic() - started, client_id=client_id, first_chunk=first)


def run_calls(client: LLMClient, args: argparse.Namespace, err: TextIO) -> tuple[list[Outcome], float]:
    """Every call, ``args.concurrency`` at a time. Ctrl-C cancels those not
    started and cuts those in flight (as ``complete_batch`` does)."""
    bar = reporter(True, args.requests, desc="load-test", out=err)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    scope = CancelScope()

    def one(index: int) -> None:
        with scope.entered():
            outcome = _call(client, args.prompt.replace("{i}", str(index)), args.stream, args.max_tokens)
        with lock:
            outcomes.append(outcome)
            bar.update(len(outcomes))

    started = time.monotonic()
    executor = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix=THREAD_PREFIX)
    try:
        for future in [executor.submit(one, i) for i in range(args.requests)]:
            future.result()
    except BaseException:
        scope.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close(interrupted=True)
        raise
    executor.shutdown(wait=True)
    elapsed = time.monotonic() - started
    bar.close()
    return outcomes, elapsed


def percentile(values: list[float], fraction: float) -> Optional[float]:
    """Nearest rank: the smallest value with ``fraction`` of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _millis(values: list[float]) -> Optional[dict[str, float]]:
    if not values:
        return None
    figures = {"p50": percentile(values, 0.50), "p95": percentile(values, 0.95), "p99": percentile(values, 0.99),
               "mean": sum(values) / len(values), "max": max(values)}
    return {name: round(float(value or 0.0) * 1000, 2) for name, value in figures.items()}


def summarise(outcomes: list[Outcome], elapsed: float, rate_limited: int, **run: Any) -> dict[str, Any]:
    """The run in numbers: ``succeeded + failed == requests``, ``per_key``
    adds up to ``succeeded``, ``failures`` to ``failed``."""
    ok = [o for o in outcomes if o.error is None]
    firsts = [o.first_chunk for o in ok if o.first_chunk is not None]
    return {
        **run,
        "requests": len(outcomes),
        "succeeded": len(ok),
        "failed": len(outcomes) - len(ok),
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(len(ok) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": _millis([o.seconds for o in ok]),
        "first_chunk_ms": _millis(firsts),
        "rate_limited_429": rate_limited,
        "failures": dict(Counter(o.error for o in outcomes if o.error is not None).most_common()),
        "per_key": dict(sorted(Counter(o.client_id for o in ok if o.client_id is not None).items())),
    }


def _figures(latency: Optional[dict[str, float]]) -> str:
    if latency is None:
        return "n/a"
    return (f"p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, p99 {latency['p99']:.1f} ms "
            f"(mean {latency['mean']:.1f}, max {latency['max']:.1f})")


def write_summary(summary: dict[str, Any], out: TextIO) -> None:
    out.write(f"load-test: {summary['requests']} calls to {summary['endpoint']} ({summary['model']}), "
              f"concurrency {summary['concurrency']}{', streamed' if summary['stream'] else ''}\n")
    out.write(f"  succeeded    {summary['succeeded']}/{summary['requests']} in {summary['elapsed_s']:.2f} s: "
              f"{summary['throughput_rps']:.1f} calls/s\n")
    out.write(f"  latency      {_figures(summary['latency_ms'])}\n")
    if summary["stream"]:
        out.write(f"  first chunk  {_figures(summary['first_chunk_ms'])}\n")
    out.write(f"  429s seen    {summary['rate_limited_429']}\n")
    failures = ", ".join(f"{name}: {count}" for name, count in summary["failures"].items())
    out.write(f"  failures     {failures or 'none'}\n")
    succeeded = summary["succeeded"] or 1
    out.write("  per key" + ("" if summary["per_key"] else "      none") + "\n")
    for client_id, count in summary["per_key"].items():
        out.write(f"    {client_id:<12} {count} ({100 * count / succeeded:.0f}%)\n")


def run_load_test(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    with open_manager(args) as manager:
        endpoint = endpoints(manager, args)[0]
        client = manager.get_client(endpoint, args.model)
        before = manager.metrics(endpoint).get("rate_limited", 0)
        outcomes, elapsed = run_calls(client, args, err)
        rate_limited = manager.metrics(endpoint).get("rate_limited", 0) - before
    summary = summarise(outcomes, elapsed, rate_limited, endpoint=endpoint, model=client.model,
                        concurrency=args.concurrency, stream=args.stream)
    if args.json:
        out.write(json.dumps(summary) + "\n")
    else:
        write_summary(summary, out)
    return 1 if summary["failed"] else 0
