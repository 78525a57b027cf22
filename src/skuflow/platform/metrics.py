"""Prometheus metrics, one registry per service (several services can share a process under `skuflow up`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from skuflow.messaging import BrokerStats


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "skuflow_http_requests",
            "HTTP requests answered",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "skuflow_http_request_seconds",
            "Time to answer an HTTP request",
            ["service", "method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(self.service, method, route, str(status)).inc()
        self.latency.labels(self.service, method, route).observe(seconds)

    def watch_broker(self, stats: BrokerStats) -> None:
        self.registry.register(_BrokerCollector(self.service, stats))

    def watch_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.registry.register(_GaugeCollector(self.service, name, documentation, read))


class _BrokerCollector(Collector):
    def __init__(self, service: str, stats: BrokerStats) -> None:
        self.service = service
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "skuflow_messages", "Messages this service published or settled, by outcome", labels=["service", "outcome"]
        )
        for outcome in ("published", "delivered", "acked", "retried", "dead_lettered"):
            family.add_metric([self.service, outcome], getattr(self.stats, outcome))
        yield family


class _GaugeCollector(Collector):
    def __init__(self, service: str, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.service, self.name, self.documentation, self.read = service, name, documentation, read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["service"])
        family.add_metric([self.service], self.read())
        yield family
