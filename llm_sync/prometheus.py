"""Prometheus export of the metrics and pool status.

Two outputs from one description of the families:

- :func:`render_metrics_text` writes the text exposition format 0.0.4
  (what ``manager.metrics_text()`` returns), with no dependency;
- :func:`make_collector` gives a collector for ``prometheus_client``
  (``REGISTRY.register(make_collector(source))``), which is imported only
  there.

Families (prefix ``llm_sync_``), labelled by ``provider`` and, per key,
``client_id`` — an id such as ``anthropic-0``, never a key:

=============================  =========  ==================================
``requests_total``             counter    ``outcome``: success|failure|cancelled
``request_latency_seconds``    histogram  successful calls
``tokens_total``               counter    ``direction``: input|output
``rate_limited_total``         counter    calls that failed with a 429
``errors_total``               counter    ``error_type``: the error class
``queue_size``                 gauge      callers waiting for a client
``in_flight``                  gauge      calls in flight
``available_clients``          gauge      free leases
``total_clients``              gauge      pool size
=============================  =========  ==================================

Per model (labels ``provider`` and ``model``, the model the request named,
summed over the provider's keys; from ``get_metrics()["per_model"]``):
``model_requests_total`` (``outcome``), ``model_request_latency_seconds``,
``model_tokens_total`` (``direction``), ``model_rate_limited_total`` and
``model_errors_total`` (``error_type``). They are families of their own, so
the per-key series keep their labels and a sum over either family never
counts a call twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Union

from .errors import LLMError
from .middleware.metrics import LATENCY_BUCKETS

__all__ = ["ProviderMetrics", "render_metrics_text", "make_collector", "PREFIX", "CONTENT_TYPE"]

PREFIX = "llm_sync_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Number = Union[int, float]


@dataclass(frozen=True)
class ProviderMetrics:
    """One provider's figures: ``metrics`` maps each client id to that key's
    ``MetricsMiddleware.get_metrics()``; ``status`` is the pool's
    ``get_status()`` dict (``queue_size``, ``in_flight``,
    ``available_clients``, ``total_clients``; missing figures read as 0)."""

    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Histogram:
    buckets: tuple[tuple[float, Number], ...]  # (upper bound, cumulative count), +Inf last
    sum: float
    count: Number


@dataclass
class _Family:
    name: str  # as exposed; counters end in _total
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]
    series: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)  # (label values, number | _Histogram)


def _families(providers: Mapping[str, ProviderMetrics]) -> list[_Family]:
    """Every family, with samples in provider, then client id order."""
    key_labels = ("provider", "client_id")
    requests = _Family(f"{PREFIX}requests_total", "counter",
                       "LLM calls finished, by outcome (a retried call counts once).",
                       key_labels + ("outcome",))
    latency = _Family(f"{PREFIX}request_latency_seconds", "histogram",
                      "Latency of successful LLM calls, from call start to the full response.",
                      key_labels)
    tokens = _Family(f"{PREFIX}tokens_total", "counter",
                     "Tokens the provider reported, by direction.", key_labels + ("direction",))
    limited = _Family(f"{PREFIX}rate_limited_total", "counter",
                      "LLM calls that failed with HTTP 429.", key_labels)
    errors = _Family(f"{PREFIX}errors_total", "counter",
                     "Failed LLM calls by error class.", key_labels + ("error_type",))
    gauges = {
        "queue_size": _Family(f"{PREFIX}queue_size", "gauge", "Callers waiting for a pooled client.", ("provider",)),
        "in_flight": _Family(f"{PREFIX}in_flight", "gauge", "LLM calls in flight.", ("provider",)),
        "available_clients": _Family(f"{PREFIX}available_clients", "gauge", "Free pool leases.", ("provider",)),
        "total_clients": _Family(f"{PREFIX}total_clients", "gauge",
                                 "Pool size: the most calls in flight at once.", ("provider",)),
    }
    model_labels = ("provider", "model")
    m_requests = _Family(f"{PREFIX}model_requests_total", "counter",
                         "LLM calls finished per model, by outcome (a retried call counts once).",
                         model_labels + ("outcome",))
    m_latency = _Family(f"{PREFIX}model_request_latency_seconds", "histogram",
                        "Latency of successful LLM calls per model.", model_labels)
    m_tokens = _Family(f"{PREFIX}model_tokens_total", "counter",
                       "Tokens the provider reported per model, by direction.", model_labels + ("direction",))
    m_limited = _Family(f"{PREFIX}model_rate_limited_total", "counter",
                        "LLM calls per model that failed with HTTP 429.", model_labels)
    m_errors = _Family(f"{PREFIX}model_errors_total", "counter",
                       "Failed LLM calls per model by error class.", model_labels + ("error_type",))
    for provider_name, pm in providers.items():
        provider = str(provider_name)
        for model_name, fig in _per_model(pm.metrics).items():
            key = (provider, model_name)
            m_requests.series += [
                (key + ("success",), fig.get("successful_requests", 0)),
                (key + ("failure",), fig.get("failed_requests", 0)),
                (key + ("cancelled",), fig.get("cancelled_requests", 0)),
            ]
            m_latency.series.append((key, _histogram(fig)))
            m_tokens.series += [
                (key + ("input",), fig.get("input_tokens", 0)),
                (key + ("output",), fig.get("output_tokens", 0)),
            ]
            m_limited.series.append((key, fig.get("rate_limited", 0)))
            for error_type, count in sorted((fig.get("errors") or {}).items()):
                m_errors.series.append((key + (str(error_type),), count))
        for client_name, m in pm.metrics.items():
            key = (provider, str(client_name))
            requests.series += [
                (key + ("success",), m.get("successful_requests", 0)),
                (key + ("failure",), m.get("failed_requests", 0)),
                (key + ("cancelled",), m.get("cancelled_requests", 0)),
            ]
            latency.series.append((key, _histogram(m)))
            tokens.series += [
                (key + ("input",), m.get("input_tokens", 0)),
                (key + ("output",), m.get("output_tokens", 0)),
            ]
            limited.series.append((key, m.get("rate_limited", 0)))
            for error_type, count in sorted((m.get("errors") or {}).items()):
                errors.series.append((key + (str(error_type),), count))
        for figure, family in gauges.items():
            family.series.append(((provider,), pm.status.get(figure) or 0))
    return [requests, latency, tokens, limited, errors, *gauges.values(),
            m_requests, m_latency, m_tokens, m_limited, m_errors]


_SUMMED = ("successful_requests", "failed_requests", "cancelled_requests", "input_tokens", "output_tokens",
           "rate_limited", "latency_sum_seconds", "latency_count")


def _per_model(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model's figures summed over the keys' ``per_model`` dicts."""
    out: dict[str, dict[str, Any]] = {}
    for m in metrics.values():
        for model_name, figures in (m.get("per_model") or {}).items():
            total = out.setdefault(str(model_name), {"errors": {}, "latency_histogram": {}})
            for name in _SUMMED:
                total[name] = total.get(name, 0) + figures.get(name, 0)
            for error_type, count in (figures.get("errors") or {}).items():
                total["errors"][error_type] = total["errors"].get(error_type, 0) + count
            for bound, count in (figures.get("latency_histogram") or {}).items():
                total["latency_histogram"][bound] = total["latency_histogram"].get(bound, 0) + count
    return dict(sorted(out.items()))


def _histogram(m: Mapping[str, Any]) -> _Histogram:
    """Cumulative buckets from the per-bucket counts in ``latency_histogram``."""
    per_bucket = m.get("latency_histogram") or {}
    running: Number = 0
    buckets = []
    for bound in sorted(set(per_bucket) | set(LATENCY_BUCKETS)):
        running += per_bucket.get(bound, 0)
        buckets.append((float(bound), running))
    return _Histogram(tuple(buckets), float(m.get("latency_sum_seconds", 0.0)), m.get("latency_count", running))


# --- text format 0.0.4 ------------------------------------------------------
def format_value(value: Number) -> str:
    """A sample value or ``le``: ``3``, ``1.5``, ``+Inf``, ``-Inf``, ``NaN``."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _sample(name: str, labels: tuple[str, ...], values: tuple[str, ...], value: Number) -> str:
    pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in zip(labels, values))
    return f"{name}{{{pairs}}} {format_value(value)}" if pairs else f"{name} {format_value(value)}"


def render_metrics_text(providers: Mapping[str, ProviderMetrics]) -> str:
    """The Prometheus text exposition (format 0.0.4) for ``providers``
    (provider name → :class:`ProviderMetrics`), ending in a newline."""
    lines: list[str] = []
    for fam in _families(providers):
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for values, value in fam.series:
            if fam.kind != "histogram":
                lines.append(_sample(fam.name, fam.labels, values, value))
                continue
            for bound, count in value.buckets:
                lines.append(_sample(f"{fam.name}_bucket", fam.labels + ("le",),
                                     values + (format_value(bound),), count))
            lines.append(_sample(f"{fam.name}_sum", fam.labels, values, value.sum))
            lines.append(_sample(f"{fam.name}_count", fam.labels, values, value.count))
    return "\n".join(lines) + "\n"


# --- prometheus_client ---------------------------------------------------------
def make_collector(source: Callable[[], Mapping[str, ProviderMetrics]]) -> "MetricsCollector":
    """A ``prometheus_client`` collector that calls ``source()`` on every
    scrape. Raises :class:`LLMError` when prometheus_client is missing."""
    try:
        import prometheus_client.core  # noqa: F401
    except ImportError:
        raise LLMError("prometheus_client is not installed: pip install prometheus_client") from None
    return MetricsCollector(source)


class MetricsCollector:
    """Yields ``prometheus_client.core`` metric families built from
    ``source()``; safe to scrape from any thread (``source`` must be)."""

    def __init__(self, source: Callable[[], Mapping[str, ProviderMetrics]]) -> None:
        self._source = source

    def __repr__(self) -> str:
        return f"<MetricsCollector source={getattr(self._source, '__qualname__', self._source)!r}>"

    def describe(self) -> Iterator[Any]:
        """The families without samples: lets a registry check names
        without calling ``source``."""
        return self._convert(_families({}))

    def collect(self) -> Iterator[Any]:
        return self._convert(_families(self._source()))

    @staticmethod
    def _convert(families: list[_Family]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        go: Callable[[float], str] = floatToGoString

        kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
        for fam in families:
            out = kinds[fam.kind](fam.name, fam.help, labels=list(fam.labels))
            for values, value in fam.series:
                if fam.kind == "histogram":
                    out.add_metric(list(values), [(go(b), c) for b, c in value.buckets], value.sum)
                else:
                    out.add_metric(list(values), value)
            yield out
