"""The ``llm-sync`` command line.

    llm-sync demo                 everything, offline, against the simulator
    llm-sync check                completion, stream, conversation, pool status
    llm-sync chat                 an interactive session (reads piped input too)
    llm-sync load-test -n N -c C  throughput, latency percentiles, 429s, keys
    llm-sync complete "PROMPT"    one call to a configured endpoint
    llm-sync simulate             run the simulator until Ctrl-C

``check``, ``chat`` and ``load-test`` take ``--config`` (default
``$LLM_SYNC_CONFIG``) or ``--simulate``; each lives in ``llm_sync.commands``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional, Sequence, TextIO

from . import __version__
from .commands import chat, check, load_test
from .commands.target import write_status
from .errors import LLMError
from .manager import LLMManager
from .models import LLMProvider, Message, MessageRole

__all__ = ["main"]

DEMO_KEYS = ("sk-demo-key-1", "sk-demo-key-2", "sk-demo-key-3", "sk-demo-key-4")
DEMO_LOCAL_KEY = "sk-demo-local-key"  # the named endpoint's own key
# Per-key limits the demo's simulator enforces (and the demo's config
# states): 2 requests a second per key, bursts of 2 seconds.
DEMO_LIMITS = {"requests_per_minute": 120, "input_tokens_per_minute": 60_000,
               "output_tokens_per_minute": 12_000, "tokens_per_minute": 72_000, "burst_seconds": 2.0}
DEMO_BATCH = 32


def run_demo(out: TextIO = sys.stdout) -> int:
    """Start the simulator in-process and exercise the client against it."""
    from .testing import SimLimits, Simulator

    with Simulator(keys=DEMO_KEYS + (DEMO_LOCAL_KEY,), limits=SimLimits(**DEMO_LIMITS)) as sim:
        out.write(f"llm-sync {__version__} demo: simulator listening on {sim.base_url} with {len(sim.keys)} keys\n")
        config = {
            "providers": {
                "anthropic": {"api_keys": list(DEMO_KEYS), "base_url": sim.base_url,
                              "models": ["claude-3-5-haiku-20241022"], "rate_limits": DEMO_LIMITS},
                "openai": {"api_keys": list(DEMO_KEYS), "base_url": f"{sim.base_url}/v1",
                           "models": ["gpt-4o-mini"], "rate_limits": DEMO_LIMITS},
                # a named endpoint: any OpenAI-compatible server (vLLM, Ollama, a gateway)
                "local": {"kind": "openai", "api_keys": [DEMO_LOCAL_KEY], "base_url": sim.base_url,
                          "models": ["local-model"], "rate_limits": DEMO_LIMITS},
            },
            "pool": {"max_size": 8, "acquire_timeout": 10.0},
        }
        with LLMManager(config) as manager:
            client = manager.get_client(LLMProvider.ANTHROPIC)

            out.write("\n1. complete()\n")
            response = client.complete([Message(MessageRole.USER, "Hello, world!")], max_tokens=50)
            out.write(f"  {response.content!r}\n  served by {response.client_id}, "
                      f"{response.usage.input_tokens} in / {response.usage.output_tokens} out tokens, "
                      f"stop_reason={response.stop_reason}\n")

            out.write("\n2. stream_complete()\n  ")
            for chunk in client.stream_complete([Message(MessageRole.USER, "Write a story")], max_tokens=30):
                out.write(chunk)
                out.flush()
            out.write("\n")

            out.write(f"\n3. complete_batch() of {DEMO_BATCH} prompts (OpenAI-compatible API); the keys allow "
                      f"{DEMO_LIMITS['requests_per_minute']} requests a minute each in bursts of "
                      f"{DEMO_LIMITS['burst_seconds']:.0f} s, so part of the batch waits in line\n")
            openai = manager.get_client(LLMProvider.OPENAI)
            started = time.monotonic()
            results = openai.complete_batch([f"Question {i}" for i in range(DEMO_BATCH)], max_tokens=20,
                                            return_exceptions=True)
            ok = sum(1 for r in results if not isinstance(r, Exception))
            refused = sum(counts.get(429, 0) for counts in sim.stats().values())
            out.write(f"  {ok}/{len(results)} answered in {time.monotonic() - started:.2f}s, "
                      f"{refused} refused by the server (429); first: {results[0].content!r}\n")

            out.write("\n4. a named endpoint: get_client(\"local\"), kind openai, its own key and pool\n")
            local = manager.get_client("local").complete("Hello from a local server", max_tokens=30)
            out.write(f"  {local.content!r}\n  served by {local.client_id} (endpoint {local.endpoint}, "
                      f"kind {local.provider})\n")

            out.write("\n5. pool status\n")
            for provider in manager.providers:
                out.write(f" {provider}\n")
                write_status(manager, provider, out)
    out.write("\nDone: no network beyond 127.0.0.1 was used.\n")
    return 0


def run_complete(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    with LLMManager(args.config) as manager:
        provider = args.provider or manager.providers[0]
        client = manager.get_client(provider, args.model)
        messages = [Message(MessageRole.USER, args.prompt)]
        kwargs: dict[str, Any] = {"max_tokens": args.max_tokens}
        if args.system:
            kwargs["system"] = args.system
        if args.stream:
            for chunk in client.stream_complete(messages, **kwargs):
                out.write(chunk)
                out.flush()
            out.write("\n")
            return 0
        response = client.complete(messages, **kwargs)
        if args.json:
            out.write(json.dumps(response.model_dump(mode="json", exclude={"raw", "headers"}), indent=2) + "\n")
        else:
            out.write(response.content + "\n")
    return 0


def run_simulate(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from .testing import Simulator

    keys = tuple(k.strip() for k in args.keys.split(",") if k.strip())
    with Simulator(keys=keys, port=args.port) as sim:
        out.write(f"simulator on {sim.base_url} ({len(keys)} keys); Ctrl-C to stop\n")
        out.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-sync", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--version", action="version", version=f"llm-sync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run offline against the built-in simulator")
    for command in (check, chat, load_test):
        command.add_parser(commands)
    complete = commands.add_parser("complete", help="one completion from the configured provider")
    complete.add_argument("prompt")
    complete.add_argument("--provider", metavar="ENDPOINT",
                          help="a configured endpoint name (default: the first under providers:)")
    complete.add_argument("--model")
    complete.add_argument("--max-tokens", type=int, default=1024)
    complete.add_argument("--system")
    complete.add_argument("--config", help="YAML config (default: $LLM_SYNC_CONFIG, ./config/llm.yaml, env keys)")
    complete.add_argument("--stream", action="store_true")
    complete.add_argument("--json", action="store_true", help="print the whole response as JSON")
    simulate = commands.add_parser("simulate", help="serve the simulator until interrupted")
    simulate.add_argument("--port", type=int, default=8000)
    simulate.add_argument("--keys", default="sk-sim-1", help="comma-separated keys to accept")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo()
        if args.command == "complete":
            return run_complete(args)
        if args.command == "simulate":
            return run_simulate(args)
        return int(args.handler(args))
    except LLMError as exc:
        sys.stderr.write(f"llm-sync: {type(exc).__name__}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nllm-sync: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
