"""Many calls from plain threads: ``complete_batch`` and ``concurrent.futures``.

    python examples/futures_batch.py --simulate   # offline, against the built-in simulator
    LLM_SYNC_SIMULATE=1 python examples/futures_batch.py   # the same
    python examples/futures_batch.py              # $LLM_SYNC_CONFIG, ./config/llm.yaml or ANTHROPIC_API_KEY

``complete_batch`` returns answers in input order (failures in place with
``return_exceptions=True``) and draws a progress bar with
``progress=True`` (a tqdm bar with ``pip install llm_sync[progress]``, a plain
line without); Ctrl-C stops it at once. ``submit`` returns a
``concurrent.futures.Future``, to mix LLM calls with other work and take
answers as they come (``as_completed``). Nothing else to install.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import as_completed
from contextlib import ExitStack
from typing import Any

from llm_sync import LLMError, LLMManager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulate", action="store_true", help="run against the built-in simulator")
    parser.add_argument("-n", type=int, default=20, help="prompts per part")
    args = parser.parse_args()
    with ExitStack() as stack:
        config: Any = None  # the environment's
        if args.simulate or os.environ.get("LLM_SYNC_SIMULATE") == "1":
            from llm_sync.testing import Simulator

            sim = stack.enter_context(Simulator(keys=("sk-sim-1", "sk-sim-2", "sk-sim-3")))
            config = {"providers": {"anthropic": {"api_keys": list(sim.keys), "base_url": sim.base_url}}}
        manager = stack.enter_context(LLMManager(config))
        client = manager.get_client("anthropic")

        # 1. A batch: answers in input order, failures in place.
        started = time.monotonic()
        answers = client.complete_batch([f"Question {i}" for i in range(args.n)], max_tokens=50,
                                        return_exceptions=True, progress=True)
        failed = [a for a in answers if isinstance(a, LLMError)]
        print(f"batch: {len(answers) - len(failed)}/{len(answers)} answered in {time.monotonic() - started:.2f}s; "
              f"first: {answers[0].content if not failed else failed[0]!r}")

        # 2. Futures: submit, do other work, take answers as they complete.
        futures = {client.submit(f"Summarise item {i}", max_tokens=50): i for i in range(args.n)}
        for count, future in enumerate(as_completed(futures), 1):
            try:
                response = future.result()
            except LLMError as error:
                print(f"item {futures[future]} failed: {type(error).__name__}")
                continue
            if count <= 3:
                print(f"item {futures[future]:>2} by {response.client_id}: {response.content}")
        per_key = {key["client_id"]: key["total_requests"] for key in manager.get_status("anthropic")["client_statuses"]}
        print("calls per key:", per_key)


if __name__ == "__main__":
    main()
