"""manager.metrics() and metrics_text() after real calls, parsed back."""

from __future__ import annotations

import pytest

prometheus_client = pytest.importorskip("prometheus_client", reason="prometheus_client is a dev extra")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_text_round_trips(make_manager, llm_simulator):
    manager = make_manager()
    client = manager.get_client("anthropic")
    client.complete_batch([f"q{i}" for i in range(6)], max_tokens=20)
    llm_simulator.inject(status=400)
    with pytest.raises(Exception):
        client.complete("bad")
    aggregated = manager.metrics("anthropic")
    assert aggregated["total_requests"] == 7
    assert aggregated["successful_requests"] == 6 and aggregated["failed_requests"] == 1
    assert aggregated["errors"] == {"LLMProviderError": 1}
    assert aggregated["input_tokens"] > 0 and aggregated["p99_latency"] >= aggregated["p50_latency"] > 0

    samples = _samples(manager.metrics_text())
    success = sum(v for (name, labels), v in samples.items()
                  if name == "llm_sync_requests_total" and ("outcome", "success") in labels
                  and ("provider", "anthropic") in labels)
    assert success == 6
    counts = sum(v for (name, labels), v in samples.items()
                 if name == "llm_sync_request_latency_seconds_count" and ("provider", "anthropic") in labels)
    assert counts == 6
    assert samples[("llm_sync_queue_size", (("provider", "anthropic"),))] == 0
    for key in llm_simulator.keys:
        assert key not in manager.metrics_text()


def test_collector_registers_with_prometheus_client(make_manager):
    manager = make_manager()
    manager.get_client("openai").complete("hi")
    registry = prometheus_client.CollectorRegistry()
    registry.register(manager.prometheus_collector())
    text = prometheus_client.generate_latest(registry).decode()
    assert 'llm_sync_requests_total{client_id="openai-' in text
