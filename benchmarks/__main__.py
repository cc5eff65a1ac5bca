"""``python -m benchmarks``: every client benchmark in one run, one table of ratios.

The simulator runs in a process of its own (zero latency), so the client's
CPU time — process CPU over calls, ``time.process_time()`` — is the
client's alone. Ratios compare variants measured in the same run; absolute
figures depend on the machine (and anything else it is doing: run twice).

Sections (``--only NAME[,NAME]``):

  complete   ``complete`` at 8 threads (default middleware: logging,
             metrics, retry, rate limit) against raw ``requests``
             (``Session.post().json()``, the same payload) and the official
             SDKs when installed (``pip install .[bench]``)
  stream     ``stream_complete`` text chunks/s against a raw ``iter_lines``
             SSE loop over the same stream
  ratelimit  the scenarios of ``benchmarks/ratelimit_bench.py``: achieved
             rate / the bucket-maths maximum, with the server's 429s
  keys       ``complete`` over 4 keys against 256 keys, the same total
             limits (high enough never to bind): the cost of choosing a key
  memory     resident memory (VmRSS) of a manager with 256 keys, idle and
             after 20,000 calls, in a fresh process

``--quick`` runs fewer calls and rounds (a minute or so).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import requests

from llm_sync import LLMManager, LLMProvider

from .simproc import ROOT, SimProcess, child_env

SECTIONS = ("complete", "stream", "ratelimit", "keys", "memory")
THREADS = 8
KEY = "sk-bench-overhead-1"
MODEL = {"anthropic": "claude-3-5-haiku-20241022", "openai": "gpt-4o-mini"}
PROMPT = "hello there"
MAX_TOKENS = 16
# Streams: the simulator echoes up to 40 words of the prompt, one chunk a word.
STREAM_PROMPT = " ".join(f"word{i}" for i in range(40))
STREAM_MAX_TOKENS = 256


@dataclass
class Row:
    section: str
    variant: str
    figure: str
    ratio: str = ""
    cpu: str = ""
    note: str = ""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- driving load ---------------------------------------------------------------

@dataclass
class Run:
    units: int  # calls, or chunks for streams
    calls: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.units / self.seconds

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu / self.calls * 1e6


def drive(make_worker: Callable[[], Callable[[], int]], calls: int, threads: int = THREADS) -> Run:
    """``calls`` calls split over ``threads`` threads; each worker function
    (made once per thread, in that thread) makes one call and returns the
    units it produced. Wall and process CPU time cover the calls only."""
    per_thread = max(1, calls // threads)
    barrier = threading.Barrier(threads + 1)
    units = [0] * threads
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            worker = make_worker()
            worker()  # warm: connection made, imports done
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()
            return
        barrier.wait()
        try:
            total = 0
            for _ in range(per_thread):
                total += worker()
            units[index] = total
        except BaseException as exc:
            errors.append(exc)
        barrier.wait()

    pool = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    try:
        barrier.wait()
        wall, cpu = time.perf_counter(), time.process_time()
        barrier.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    except threading.BrokenBarrierError:
        for thread in pool:
            thread.join()
        raise errors[0] if errors else RuntimeError("a benchmark thread failed")
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return Run(sum(units), per_thread * threads, wall, cpu)


def best_of(variants: dict[str, Callable[[], Run]], rounds: int) -> dict[str, Run]:
    """Each variant ``rounds`` times, interleaved (so drift hits all alike);
    the best rate of each."""
    best: dict[str, Run] = {}
    for round_index in range(rounds):
        for name, measure in variants.items():
            run = measure()
            say(f"  round {round_index + 1}: {name:28} {run.rate:9.0f}/s  {run.cpu_us_per_call:7.0f} µs CPU/call")
            if name not in best or run.rate > best[name].rate:
                best[name] = run
    return best


def manager_config(url: str, keys: list[str], provider: str = "anthropic", **extra: Any) -> dict[str, Any]:
    return {"providers": {provider: {"api_keys": keys, "base_url": url, **extra}},
            "pool": {"max_size": THREADS}}


def raw_call(provider: str, url: str, key: str, prompt: str, max_tokens: int) -> Callable[[], Callable[[], int]]:
    """A raw ``requests`` worker factory: one Session per thread."""
    if provider == "anthropic":
        endpoint = f"{url}/v1/messages"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        endpoint = f"{url}/v1/chat/completions"
        headers = {"authorization": f"Bearer {key}"}
    body = {"model": MODEL[provider], "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}

    def make() -> Callable[[], int]:
        session = requests.Session()

        def call() -> int:
            answer = session.post(endpoint, json=body, headers=headers, timeout=30).json()
            assert "error" not in answer, answer
            return 1
        return call
    return make


def sdk_call(provider: str, url: str) -> Optional[Callable[[], Callable[[], int]]]:
    """The official SDK's worker factory (one client shared by the threads,
    as its docs advise), or None when it is not installed."""
    try:
        if provider == "anthropic":
            import anthropic

            # Newer SDKs send the key as a bearer token; the simulator (like
            # the API) reads x-api-key.
            client: Any = anthropic.Anthropic(api_key=KEY, base_url=url, default_headers={"x-api-key": KEY})

            def call() -> int:
                client.messages.create(model=MODEL[provider], max_tokens=MAX_TOKENS,
                                       messages=[{"role": "user", "content": PROMPT}])
                return 1
        else:
            import openai

            client = openai.OpenAI(api_key=KEY, base_url=f"{url}/v1")

            def call() -> int:
                client.chat.completions.create(model=MODEL[provider], max_tokens=MAX_TOKENS,
                                               messages=[{"role": "user", "content": PROMPT}])
                return 1
    except ImportError:
        return None
    return lambda: call


# --- sections ---------------------------------------------------------------------

def bench_complete(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with SimProcess(keys=(KEY,)) as sim:
        for provider in ("anthropic", "openai"):
            say(f"complete, {provider}, {THREADS} threads, {args.calls} calls a round")
            with LLMManager(manager_config(sim.base_url, [KEY], provider)) as manager:
                client = manager.get_client(provider)

                def ours() -> Callable[[], int]:
                    def call() -> int:
                        client.complete(PROMPT, max_tokens=MAX_TOKENS)
                        return 1
                    return call

                variants = {
                    "raw requests": lambda: drive(raw_call(provider, sim.base_url, KEY, PROMPT, MAX_TOKENS),
                                                  args.calls),
                    "llm_sync": lambda: drive(ours, args.calls),
                }
                sdk = sdk_call(provider, sim.base_url)
                if sdk is not None:
                    variants[f"{provider} SDK"] = lambda: drive(sdk, args.calls)
                best = best_of(variants, args.rounds)
            raw = best["raw requests"]
            mine = best["llm_sync"]
            for name, run in best.items():
                rows.append(Row(f"complete ({provider})", name, f"{run.rate:,.0f} calls/s",
                                f"{run.rate / raw.rate:.2f}× raw" if name != "raw requests" else "1.00",
                                f"{run.cpu_us_per_call:,.0f}"))
            sdk_name = f"{provider} SDK"
            if sdk_name in best:
                rows.append(Row(f"complete ({provider})", f"llm_sync / {sdk_name}", "",
                                f"{mine.rate / best[sdk_name].rate:.2f}×"))
            else:
                rows.append(Row(f"complete ({provider})", sdk_name, "skipped",
                                note="not installed (pip install .[bench])"))
    return rows


def bench_stream(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with SimProcess(keys=(KEY,)) as sim:
        url = sim.base_url
        endpoint = f"{url}/v1/messages"
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        body = {"model": MODEL["anthropic"], "max_tokens": STREAM_MAX_TOKENS, "stream": True,
                "messages": [{"role": "user", "content": STREAM_PROMPT}]}

        def raw(decode: bool) -> Callable[[], Callable[[], int]]:
            """A raw loop: lines counted (``decode=False``), or each data
            line JSON-decoded and its text taken (what a client that
            yields text must do at the least)."""
            def make() -> Callable[[], int]:
                session = requests.Session()

                def call() -> int:
                    chunks = 0
                    with session.post(endpoint, json=body, headers=headers, timeout=30, stream=True) as http:
                        for line in http.iter_lines():
                            if not line.startswith(b"data: "):
                                continue
                            if decode:
                                event = json.loads(line[6:])
                                if event.get("type") == "content_block_delta" and event["delta"].get("text"):
                                    chunks += 1
                            elif b'"text_delta"' in line:
                                chunks += 1
                    return chunks
                return call
            return make

        calls = max(THREADS, args.calls // 8)
        say(f"stream, anthropic, {THREADS} threads, {calls} streams a round")
        with LLMManager(manager_config(url, [KEY])) as manager:
            client = manager.get_client("anthropic")

            def ours() -> Callable[[], int]:
                def call() -> int:
                    return sum(1 for _ in client.stream_complete(STREAM_PROMPT, max_tokens=STREAM_MAX_TOKENS))
                return call

            best = best_of({"raw iter_lines": lambda: drive(raw(False), calls),
                            "raw iter_lines + json.loads": lambda: drive(raw(True), calls),
                            "llm_sync stream_complete": lambda: drive(ours, calls)}, args.rounds)
    base = best["raw iter_lines"]
    decoded = best["raw iter_lines + json.loads"]
    mine = best["llm_sync stream_complete"]
    for name, run in best.items():
        ratio = "1.00" if run is base else f"{run.rate / base.rate:.2f}× raw"
        if run is mine:
            ratio += f", {run.rate / decoded.rate:.2f}× raw + json"
        rows.append(Row("stream (anthropic)", name, f"{run.rate:,.0f} chunks/s", ratio,
                        f"{run.cpu_us_per_call:,.0f}", f"{run.units / run.calls:.0f} chunks a stream"))
    return rows


def bench_ratelimit(args: argparse.Namespace) -> list[Row]:
    from . import ratelimit_bench

    count = 100 if args.quick else 300
    rows = []
    for provider in (LLMProvider.ANTHROPIC, LLMProvider.OPENAI):
        for scenario in ("matching", "stricter", "learned"):
            say(f"ratelimit, {scenario}, {provider.value}, {count} requests")
            r = ratelimit_bench.run(scenario, count, provider, simulator=SimProcess)
            rows.append(Row(f"rate limit: {scenario}", provider.value,
                            f"{r['seconds']:.1f} s (min {r['minimum']:.1f} s)",
                            f"{r['rate_share']:.1%} of max",
                            note=f"{r['server_429s']} server 429s, {r['failed']} failed"))
    return rows


def bench_keys(args: argparse.Namespace) -> list[Row]:
    total_rpm = 100_000_000
    total_tpm = 10_000_000_000
    runs: dict[str, Run] = {}
    variants: dict[str, Callable[[], Run]] = {}
    managers = []
    sims = []
    try:
        for count in (4, 256):
            keys = [f"sk-bench-k{i}" for i in range(count)]
            sim = SimProcess(keys=tuple(keys)).__enter__()
            sims.append(sim)
            limits = {"requests_per_minute": total_rpm // count, "input_tokens_per_minute": total_tpm // count,
                      "output_tokens_per_minute": total_tpm // count}
            manager = LLMManager(manager_config(sim.base_url, keys, rate_limits=[limits]))
            managers.append(manager)
            client = manager.get_client("anthropic")
            # Steady state: every key's connection open before timing, as
            # in a service that has run a while (256 cold connections would
            # otherwise dominate one round).
            drive(lambda client=client: lambda: (client.complete(PROMPT, max_tokens=MAX_TOKENS), 1)[1], 2 * count)

            def make(client: Any = client) -> Callable[[], int]:
                def call() -> int:
                    client.complete(PROMPT, max_tokens=MAX_TOKENS)
                    return 1
                return call
            variants[f"{count} keys"] = lambda make=make: drive(make, args.calls)
        say(f"keys, 4 against 256, {THREADS} threads, {args.calls} calls a round")
        runs = best_of(variants, args.rounds)
    finally:
        for manager in managers:
            manager.close()
        for sim in sims:
            sim.__exit__(None, None, None)
    four = runs["4 keys"]
    return [Row("keys (same total limits)", name, f"{run.rate:,.0f} calls/s",
                "1.00" if run is four else f"{run.rate / four.rate:.2f}× 4 keys", f"{run.cpu_us_per_call:,.0f}")
            for name, run in runs.items()]


def bench_memory(args: argparse.Namespace) -> list[Row]:
    calls = 5_000 if args.quick else 20_000
    say(f"memory, 256 keys, {calls} calls (a fresh process)")
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", str(calls), str(THREADS)], cwd=ROOT,
                         env=child_env(), check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    before, idle, after = figures["before"], figures["idle"], figures["after"]
    return [Row("memory (256 keys)", "manager idle", f"{idle:.1f} MiB RSS",
                note=f"{idle - before:+.1f} MiB for the manager"),
            Row("memory (256 keys)", f"after {calls:,} calls", f"{after:.1f} MiB RSS", f"{after - idle:+.1f} MiB",
                note="growth over the idle manager")]


BENCHES: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "complete": bench_complete, "stream": bench_stream, "ratelimit": bench_ratelimit,
    "keys": bench_keys, "memory": bench_memory,
}


def table(rows: list[Row]) -> str:
    lines = ["| section | variant | measured | ratio | client CPU µs/call | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    last = None
    for row in rows:
        section = row.section if row.section != last else ""
        last = row.section
        lines.append(f"| {section} | {row.variant} | {row.figure} | {row.ratio} | {row.cpu} | {row.note} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--calls", type=int, help="calls a round (default 4000, quick 1000)")
    parser.add_argument("--rounds", type=int, help="rounds, best kept (default 3, quick 1)")
    args = parser.parse_args(argv)
    args.calls = args.calls or (1000 if args.quick else 4000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SECTIONS)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(name, None)  # everything here talks to 127.0.0.1
    rows: list[Row] = []
    for name in chosen:
        rows.extend(BENCHES[name](args))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
