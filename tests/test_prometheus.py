"""Prometheus export: the text format parsed back by prometheus_client's own
parser, and the collector registered into a fresh registry."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from llm_sync.errors import LLMError, LLMRateLimitError, LLMStreamError, LLMTimeoutError
from llm_sync.middleware.metrics import LATENCY_BUCKETS, MetricsMiddleware
from llm_sync.models import LLMResponse, Message, Usage
from llm_sync.prometheus import ProviderMetrics, format_value, make_collector, render_metrics_text
from llm_sync.providers.base import LLMRequest

REQUEST = LLMRequest(messages=[Message("user", "hi")], model="m")
WEIRD = 'we"ird\\id\nx'  # a quote, a backslash and a newline
SECRET = "sk-ant-api03-SECRETSECRETSECRET"

FAMILIES = {
    "llm_sync_requests": "counter",
    "llm_sync_request_latency_seconds": "histogram",
    "llm_sync_tokens": "counter",
    "llm_sync_rate_limited": "counter",
    "llm_sync_errors": "counter",
    "llm_sync_queue_size": "gauge",
    "llm_sync_in_flight": "gauge",
    "llm_sync_available_clients": "gauge",
    "llm_sync_total_clients": "gauge",
    # issue 10.4: per-model families (provider, model labels)
    "llm_sync_model_requests": "counter",
    "llm_sync_model_request_latency_seconds": "histogram",
    "llm_sync_model_tokens": "counter",
    "llm_sync_model_rate_limited": "counter",
    "llm_sync_model_errors": "counter",
}


def prometheus_parser() -> Any:
    return pytest.importorskip(
        "prometheus_client.parser",
        reason="prometheus_client is not installed (it is in the dev extra): pip install prometheus_client",
    )


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def recorded(latencies_ms: list[float], failures: list[LLMError], cancelled: int = 0,
             tokens: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """get_metrics() of a real MetricsMiddleware fed these outcomes."""
    clock = Clock()
    mw = MetricsMiddleware(clock=clock)
    for ms in latencies_ms:
        clock.now = 0.0

        def ok(request: LLMRequest, ms: float = ms) -> LLMResponse:
            clock.now = ms / 1000.0
            return LLMResponse(content="ok", usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]))

        mw.handle(REQUEST, {"client_id": "x"}, ok)
    for error in failures:
        mw.process_error(error, {"client_id": "x"})
    for _ in range(cancelled):
        mw.process_error(LLMStreamError("closed", cancelled=True), {"client_id": "x"})
    return mw.get_metrics()


@pytest.fixture
def providers() -> dict[str, ProviderMetrics]:
    return {
        "anthropic": ProviderMetrics(
            metrics={
                "anthropic-0": recorded([40, 80, 300, 2000], [
                    LLMRateLimitError("slow", status_code=429),
                    LLMRateLimitError("slow", status_code=429),
                    LLMTimeoutError("late"),
                ], cancelled=1, tokens=(10, 20)),
                WEIRD: recorded([70_000], []),
            },
            status={"queue_size": 3, "in_flight": 2, "available_clients": 0, "total_clients": 2,
                    "client_statuses": [{"client_id": "anthropic-0", "note": SECRET}]},
        ),
        "openai": ProviderMetrics(
            metrics={"openai-0": recorded([], [])},
            status={"queue_size": 0, "in_flight": 0, "available_clients": 4, "total_clients": 4},
        ),
    }


def samples(text: str) -> tuple[dict[tuple[str, frozenset], float], dict[str, str]]:
    """(sample name, labels) → value, and family name → type."""
    parser = prometheus_parser()
    values: dict[tuple[str, frozenset], float] = {}
    types: dict[str, str] = {}
    for family in parser.text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in values, f"duplicate sample {key}"
            values[key] = s.value
    return values, types


def lab(**labels: str) -> frozenset:
    return frozenset(labels.items())


# --- the text format -------------------------------------------------------------
def test_every_family_is_declared_once_with_its_type(providers: dict[str, ProviderMetrics]):
    text = render_metrics_text(providers)
    assert text.endswith("\n") and not text.endswith("\n\n")
    _, types = samples(text)
    assert types == FAMILIES
    for name, kind in FAMILIES.items():
        exposed = f"{name}_total" if kind == "counter" else name
        assert text.count(f"# TYPE {exposed} {kind}\n") == 1  # once for both providers
        assert text.count(f"# HELP {exposed} ") == 1


def test_counters_parse_back_to_the_recorded_values(providers: dict[str, ProviderMetrics]):
    values, _ = samples(render_metrics_text(providers))
    key = {"provider": "anthropic", "client_id": "anthropic-0"}
    assert values[("llm_sync_requests_total", lab(**key, outcome="success"))] == 4
    assert values[("llm_sync_requests_total", lab(**key, outcome="failure"))] == 3
    assert values[("llm_sync_requests_total", lab(**key, outcome="cancelled"))] == 1
    assert values[("llm_sync_tokens_total", lab(**key, direction="input"))] == 40
    assert values[("llm_sync_tokens_total", lab(**key, direction="output"))] == 80
    assert values[("llm_sync_rate_limited_total", lab(**key))] == 2
    assert values[("llm_sync_errors_total", lab(**key, error_type="LLMRateLimitError"))] == 2
    assert values[("llm_sync_errors_total", lab(**key, error_type="LLMTimeoutError"))] == 1
    idle = {"provider": "openai", "client_id": "openai-0"}
    assert values[("llm_sync_requests_total", lab(**idle, outcome="success"))] == 0
    assert not any(name == "llm_sync_errors_total" and dict(labels).get("provider") == "openai"
                   for name, labels in values)


def test_histogram_buckets_are_cumulative_and_inf_equals_count(providers: dict[str, ProviderMetrics]):
    values, _ = samples(render_metrics_text(providers))
    key = {"provider": "anthropic", "client_id": "anthropic-0"}
    buckets = [values[("llm_sync_request_latency_seconds_bucket", lab(**key, le=format_value(b)))]
               for b in LATENCY_BUCKETS]
    # 40 ms, 80 ms, 300 ms, 2 s
    assert buckets == [1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4]
    assert buckets == sorted(buckets)
    assert values[("llm_sync_request_latency_seconds_count", lab(**key))] == buckets[-1] == 4
    assert values[("llm_sync_request_latency_seconds_sum", lab(**key))] == pytest.approx(2.42)
    weird = {"provider": "anthropic", "client_id": WEIRD}
    assert values[("llm_sync_request_latency_seconds_bucket", lab(**weird, le="60.0"))] == 0
    assert values[("llm_sync_request_latency_seconds_bucket", lab(**weird, le="+Inf"))] == 1


def test_gauges_come_from_the_pool_status(providers: dict[str, ProviderMetrics]):
    values, _ = samples(render_metrics_text(providers))
    assert values[("llm_sync_queue_size", lab(provider="anthropic"))] == 3
    assert values[("llm_sync_in_flight", lab(provider="anthropic"))] == 2
    assert values[("llm_sync_available_clients", lab(provider="anthropic"))] == 0
    assert values[("llm_sync_available_clients", lab(provider="openai"))] == 4
    assert values[("llm_sync_total_clients", lab(provider="openai"))] == 4


def test_label_values_are_escaped(providers: dict[str, ProviderMetrics]):
    text = render_metrics_text(providers)
    assert 'client_id="we\\"ird\\\\id\\nx"' in text
    assert WEIRD not in text  # the raw newline never reaches the output
    values, _ = samples(text)
    assert values[("llm_sync_requests_total",
                   lab(provider="anthropic", client_id=WEIRD, outcome="success"))] == 1


def test_inf_bucket_and_number_formats(providers: dict[str, ProviderMetrics]):
    text = render_metrics_text(providers)
    assert 'le="+Inf"' in text and 'le="inf"' not in text
    assert 'le="0.05"' in text and 'le="1.0"' in text
    assert (format_value(1.5), format_value(3), format_value(float("inf")), format_value(float("-inf")),
            format_value(float("nan")), format_value(True)) == ("1.5", "3", "+Inf", "-Inf", "NaN", "1")


def test_only_the_pool_figures_leave_the_status_dict(providers: dict[str, ProviderMetrics]):
    text = render_metrics_text(providers)
    assert SECRET not in text and "sk-" not in text and "note" not in text


def test_no_providers_still_declares_the_families():
    text = render_metrics_text({})
    values, types = samples(text)
    assert values == {} and types == FAMILIES


def test_missing_figures_read_as_zero():
    values, _ = samples(render_metrics_text({"openai": ProviderMetrics({"openai-0": {}}, {})}))
    key = {"provider": "openai", "client_id": "openai-0"}
    assert values[("llm_sync_requests_total", lab(**key, outcome="success"))] == 0
    assert values[("llm_sync_request_latency_seconds_count", lab(**key))] == 0
    assert values[("llm_sync_queue_size", lab(provider="openai"))] == 0


# --- prometheus_client collector ---------------------------------------------------
def test_collector_in_a_fresh_registry_matches_the_text(providers: dict[str, ProviderMetrics]):
    prometheus_parser()
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(make_collector(lambda: providers))
    exposed = generate_latest(registry).decode("utf-8")
    for name, kind in FAMILIES.items():
        exposed_name = f"{name}_total" if kind == "counter" else name
        assert f"# TYPE {exposed_name} {kind}" in exposed
    assert samples(exposed) == samples(render_metrics_text(providers))


def test_collector_reads_the_source_on_every_scrape():
    prometheus_parser()
    from prometheus_client import CollectorRegistry, generate_latest

    state = {"queue": 1}
    registry = CollectorRegistry()
    registry.register(make_collector(lambda: {"anthropic": ProviderMetrics({}, {"queue_size": state["queue"]})}))
    first, _ = samples(generate_latest(registry).decode())
    state["queue"] = 7
    second, _ = samples(generate_latest(registry).decode())
    key = ("llm_sync_queue_size", lab(provider="anthropic"))
    assert (first[key], second[key]) == (1, 7)


def test_registering_does_not_call_the_source_and_names_are_claimed():
    prometheus_parser()
    from prometheus_client import CollectorRegistry

    def source() -> dict[str, ProviderMetrics]:
        raise AssertionError("source called at registration")

    registry = CollectorRegistry()
    registry.register(make_collector(source))
    with pytest.raises(ValueError):  # describe() claimed the names: a second copy collides
        registry.register(make_collector(source))


def test_make_collector_without_prometheus_client_raises_llm_error(monkeypatch: pytest.MonkeyPatch):
    for name in [m for m in sys.modules if m == "prometheus_client" or m.startswith("prometheus_client.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now raises ImportError
    with pytest.raises(LLMError, match="pip install prometheus_client"):
        make_collector(dict)


# --- per model (issue 10.4) -------------------------------------------------------
def test_model_label_sums_over_keys_and_keeps_per_key_series():
    def ok(request: LLMRequest) -> LLMResponse:
        return LLMResponse(content="ok", usage=Usage(input_tokens=5, output_tokens=7))

    per_key = {}
    for client_id in ("a-0", "a-1"):
        mw = MetricsMiddleware()
        for model in ("opus", "haiku", "haiku"):
            mw.handle(LLMRequest(messages=[Message("user", "hi")], model=model),
                      {"client_id": client_id, "model": model}, ok)
        mw.process_error(LLMRateLimitError("slow", status_code=429), {"client_id": client_id, "model": "opus"})
        per_key[client_id] = mw.get_metrics()
        assert per_key[client_id]["per_model"]["haiku"]["successful_requests"] == 2
        assert per_key[client_id]["per_model"]["opus"]["errors"] == {"LLMRateLimitError": 1}
    values, _ = samples(render_metrics_text({"a": ProviderMetrics(per_key, {})}))
    opus, haiku = lab(provider="a", model="opus", outcome="success"), lab(provider="a", model="haiku", outcome="success")
    assert values[("llm_sync_model_requests_total", opus)] == 2
    assert values[("llm_sync_model_requests_total", haiku)] == 4
    assert values[("llm_sync_model_requests_total", lab(provider="a", model="opus", outcome="failure"))] == 2
    assert values[("llm_sync_model_tokens_total", lab(provider="a", model="haiku", direction="output"))] == 28
    assert values[("llm_sync_model_request_latency_seconds_count", lab(provider="a", model="haiku"))] == 4
    assert values[("llm_sync_model_request_latency_seconds_bucket", lab(provider="a", model="opus", le="+Inf"))] == 2
    assert values[("llm_sync_model_rate_limited_total", lab(provider="a", model="opus"))] == 2
    assert values[("llm_sync_model_errors_total",
                   lab(provider="a", model="opus", error_type="LLMRateLimitError"))] == 2
    # the per-key series are unchanged
    assert values[("llm_sync_requests_total", lab(provider="a", client_id="a-0", outcome="success"))] == 3


def test_models_beyond_the_cap_count_as_other(monkeypatch: pytest.MonkeyPatch):
    import llm_sync.middleware.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "MAX_MODELS", 2)
    mw = MetricsMiddleware()
    for model in ("a", "b", "c", "d"):
        mw.process_error(LLMTimeoutError("late"), {"client_id": "x", "model": model})
    assert set(mw.get_metrics()["per_model"]) == {"a", "b", "other"}
    assert mw.get_metrics()["per_model"]["other"]["failed_requests"] == 2
