"""Prometheus metrics, one registry per service (several services can share a process under `skuflow up`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
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

        self.client_requests = Counter(
            "skuflow_http_client_requests",
            "HTTP requests this service made to others, by target service and route",
            ["service", "target", "method", "route", "status"],
            registry=self.registry,
        )

    def client_trace(self, targets: Mapping[str, str]) -> aiohttp.TraceConfig:
        """An aiohttp trace counting each request of the process's client; `targets` names the services by
        their `host:port`."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(_session: Any, _context: Any, params: aiohttp.TraceRequestEndParams) -> None:
            url = params.url
            target = targets.get(f"{url.host}:{url.port}", f"{url.host}:{url.port}")
            route = route_of(url.path)
            self.client_requests.labels(self.service, target, params.method, route, str(params.response.status)).inc()

        trace.on_request_end.append(on_request_end)
        return trace

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
        by_queue = CounterMetricFamily(
            "skuflow_queue_messages",
            "Deliveries this service's consumers took from each queue, by outcome",
            labels=["service", "queue", "outcome"],
        )
        for (queue, outcome), count in sorted(self.stats.by_queue.items()):
            by_queue.add_metric([self.service, queue, outcome], count)
        yield by_queue
        by_route = CounterMetricFamily(
            "skuflow_published_messages",
            "Messages this service published, by exchange, routing key and type",
            labels=["service", "exchange", "routing_key", "type"],
        )
        for (exchange, routing_key, kind), count in sorted(self.stats.by_route.items()):
            by_route.add_metric([self.service, exchange, routing_key, kind], count)
        yield by_route


class _GaugeCollector(Collector):
    def __init__(self, service: str, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.service, self.name, self.documentation, self.read = service, name, documentation, read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["service"])
        family.add_metric([self.service], self.read())
        yield family


_COLLECTIONS = re.compile(r"/(skus|products|users|flows|wishlist)/[^/]+")


def route_of(path: str) -> str:
    """A path with its ids replaced, so that routes count together: /v1/skus/SKU-1/availability ->
    /v1/skus/{id}/availability."""
    return _COLLECTIONS.sub(lambda match: f"/{match.group(1)}/{{id}}", path)
