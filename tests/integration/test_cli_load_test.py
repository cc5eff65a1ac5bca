"""``llm-sync load-test``: a progress bar on stderr, then a summary whose
counts add up; ``--json`` is one JSON object and nothing else on stdout."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from llm_sync.cli import main
from llm_sync.commands.load_test import THREAD_PREFIX, Outcome, percentile, summarise


@pytest.fixture
def config(llm_simulator: Any, tmp_path: Path) -> Path:
    path = tmp_path / "llm.yaml"
    path.write_text("providers:\n"
                    f"  anthropic: {{api_keys: [{', '.join(llm_simulator.keys)}], base_url: '{llm_simulator.base_url}'}}\n"
                    "pool: {max_size: 4}\n")
    return path


def _json_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["load-test", "--json", *args])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1, captured.out  # one object, nothing else on stdout
    return code, json.loads(lines[0]), captured.err


def _adds_up(summary: dict[str, Any]) -> None:
    assert summary["succeeded"] + summary["failed"] == summary["requests"]
    assert sum(summary["per_key"].values()) == summary["succeeded"]
    assert sum(summary["failures"].values()) == summary["failed"]


def test_json_summary_counts_add_up_and_429s_are_seen(config: Path, llm_simulator: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    llm_simulator.inject(status=429, count=2)  # requeued onto other keys: seen, not failed
    code, summary, err = _json_run(capsys, "--config", str(config), "-n", "40", "--concurrency", "4")
    assert code == 0
    _adds_up(summary)
    assert (summary["requests"], summary["succeeded"], summary["failed"]) == (40, 40, 0)
    assert summary["rate_limited_429"] == 2 and summary["failures"] == {}
    assert set(summary["per_key"]) <= {f"anthropic-{i}" for i in range(4)}  # keys paused by a 429 may sit out
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert summary["first_chunk_ms"] is None and summary["stream"] is False
    assert summary["concurrency"] == 4 and summary["endpoint"] == "anthropic" and summary["throughput_rps"] > 0
    assert "40/40" in err  # the progress bar went to stderr
    assert llm_simulator.request_count() == 42
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_failures_are_counted_by_type_and_the_exit_status_says_so(config: Path, llm_simulator: Any,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    llm_simulator.inject(status=400, count=3)  # never retried
    code, summary, _ = _json_run(capsys, "--config", str(config), "-n", "10", "-c", "2")
    assert code == 1
    _adds_up(summary)
    assert summary["failed"] == 3 and summary["failures"] == {"LLMProviderError": 3}


def test_streamed_calls_measure_the_first_chunk(capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _ = _json_run(capsys, "--simulate", "--stream", "-n", "12", "-c", "3", "--provider", "openai")
    assert code == 0 and summary["stream"] is True
    _adds_up(summary)
    assert summary["first_chunk_ms"]["p50"] <= summary["latency_ms"]["max"]
    assert all(key.startswith("openai-") for key in summary["per_key"])


def test_the_human_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load-test", "--simulate", "-n", "8", "-c", "2", "--stream"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("load-test: 8 calls to anthropic (")
    for label in ("succeeded    8/8 in ", "latency      p50 ", "first chunk  p50 ", "429s seen    0",
                  "failures     none", "per key\n    anthropic-"):
        assert label in out, out
    assert "sk-sim" not in out


def test_bad_counts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["load-test", "--simulate", "-n", "0"])
    assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (50.0, 95.0, 99.0)
    assert percentile([3.0], 0.99) == 3.0 and percentile([], 0.5) is None


def test_a_run_where_everything_failed_has_no_latency() -> None:
    summary = summarise([Outcome(0.1, error="LLMConnectionError")] * 2, 1.0, 0)
    assert summary["latency_ms"] is None and summary["per_key"] == {} and summary["throughput_rps"] == 0.0
    assert summary["failures"] == {"LLMConnectionError": 2}
