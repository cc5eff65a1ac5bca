"""Where a command's calls go: the configured endpoints, or the simulator.

``--config PATH`` (default: ``$LLM_SYNC_CONFIG``, ``./config/llm.yaml``,
then ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY``) names the real endpoints;
``--simulate`` starts the built-in simulator on 127.0.0.1 and points an
``anthropic`` and an ``openai`` endpoint at it, so every command runs
offline with no key.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional, TextIO

from ..manager import LLMManager

__all__ = ["SIMULATED_KEYS", "add_target_arguments", "open_manager", "endpoints", "write_status"]

SIMULATED_KEYS = ("sk-sim-1", "sk-sim-2", "sk-sim-3", "sk-sim-4")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (default: $LLM_SYNC_CONFIG, ./config/llm.yaml, env keys)")
    parser.add_argument("--simulate", action="store_true",
                        help="run against the built-in simulator on 127.0.0.1 (offline, no key)")
    parser.add_argument("--provider", metavar="ENDPOINT",
                        help="a configured endpoint name (default: the first under providers:)")
    parser.add_argument("--model", help="the model (default: the endpoint's first)")


def simulated_config(base_url: str) -> dict[str, Any]:
    """Both endpoint kinds on one simulator, four keys each."""
    keys = list(SIMULATED_KEYS)
    return {
        "providers": {
            "anthropic": {"api_keys": keys, "base_url": base_url},
            "openai": {"api_keys": keys, "base_url": f"{base_url}/v1", "models": ["gpt-4o-mini"]},
        },
        "pool": {"max_size": 8, "acquire_timeout": 30.0},
    }


@contextmanager
def open_manager(args: argparse.Namespace) -> Iterator[LLMManager]:
    """A manager for the command's target, closed (and the simulator
    stopped) on the way out."""
    if not getattr(args, "simulate", False):
        with LLMManager(args.config) as manager:
            yield manager
        return
    from ..testing import Simulator

    with Simulator(keys=SIMULATED_KEYS) as sim, LLMManager(simulated_config(sim.base_url)) as manager:
        yield manager


def endpoints(manager: LLMManager, args: argparse.Namespace, every: bool = False) -> list[str]:
    """``--provider``'s endpoint; else the first configured (or all of them)."""
    if args.provider:
        return [manager.pool(args.provider).name]
    return list(manager.providers) if every else [manager.providers[0]]


def write_status(manager: LLMManager, endpoint: str, out: Optional[TextIO] = None) -> None:
    """The pool and each key of one endpoint, as ``llm-sync`` shows them."""
    out = out or sys.stdout
    status = manager.get_status(endpoint)
    out.write(
        f"  pool: {status['available_clients']}/{status['total_clients']} leases free, "
        f"{status['queue_size']} waiting, {status['in_flight']} in flight\n"
    )
    for key in status["client_statuses"]:
        limits = key["rate_limit_status"]
        extra = (f", {limits['requests_remaining']} requests and {limits['tokens_remaining']} tokens left "
                 f"(limits {limits['limits']['requests_per_minute']:.0f} rpm)") if limits else ""
        out.write(
            f"    {key['client_id']}: {key['total_requests']} requests, "
            f"{key['failed_requests']} failed{extra}\n"
        )
