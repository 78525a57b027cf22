"""Prometheus metrics, one registry per service (several services can share a process under `skuflow up`).

Every metric is listed, with its type, labels and what moves it, in docs/observability.md ("Metrics"); a test
holds that table and each service's `/metrics` equal, and checks that each metric moves when its event happens.

Counts kept in memory (the broker's, the verifier's, the mailer's) are read at scrape time. What needs I/O (the
outbox's and the email table's backlogs, the broker's queues) is read by a `Sampler` every
SKUFLOW_METRICS_REFRESH_SECONDS, each reading bounded by a timeout, and `/metrics` shows the last values read:
a scrape never waits on the database or the broker, however slow they are.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from skuflow.messaging import Broker, BrokerStats, dead_letter_queue
from skuflow.platform.background import Periodic

log = logging.getLogger("skuflow.metrics")
# No `_created` series beside each counter and histogram: one more series each, that Prometheus ignores.
disable_created_metrics()  # type: ignore[no-untyped-call]

READ_TIMEOUT = 2.0  # seconds one sampled reading may take before it counts as failed (the last value stands)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# From delivery to settlement: a handler's database work, a batch's wait for its peers, the settling publish.
HANDLING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)


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
            "skuflow_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and status",
            ["service", "method", "route", "status"],
            registry=self.registry,
            buckets=HTTP_BUCKETS,
        )
        self.handling = Histogram(
            "skuflow_message_handling_duration_seconds",
            "Time from a message's delivery to its settlement (ack, retry or dead letter), by queue and outcome",
            ["service", "queue", "outcome"],
            registry=self.registry,
            buckets=HANDLING_BUCKETS,
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
        self.latency.labels(self.service, method, route, str(status)).observe(seconds)

    def watch_broker(self, stats: BrokerStats) -> None:
        """Export the broker's counts, and time each settled delivery."""
        self.registry.register(_BrokerCollector(self.service, stats))
        stats.on_settled = self._settled

    def _settled(self, queue: str, outcome: str, seconds: float) -> None:
        self.handling.labels(self.service, queue, outcome).observe(seconds)

    def watch_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.registry.register(_Collector(GaugeMetricFamily, self.service, name, documentation, _unlabelled(read)))

    def watch_counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A count kept elsewhere (only ever growing), exported as the counter `{name}_total`."""
        self.registry.register(_Collector(CounterMetricFamily, self.service, name, documentation, _unlabelled(read)))

    def watch_labelled(
        self,
        kind: Literal["counter", "gauge"],
        name: str,
        documentation: str,
        labels: Sequence[str],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        """A counter (exported as `{name}_total`) or a gauge with labels besides `service`: `read` gives each
        series' label values and its value."""
        family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        self.registry.register(_Collector(family, self.service, name, documentation, read, tuple(labels)))


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


def _unlabelled(read: Callable[[], float]) -> Callable[[], Mapping[tuple[str, ...], float]]:
    return lambda: {(): read()}


class _Collector(Collector):
    def __init__(
        self,
        kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
        service: str,
        name: str,
        documentation: str,
        read: Callable[[], Mapping[tuple[str, ...], float]],
        labels: tuple[str, ...] = (),
    ) -> None:
        self.kind, self.service, self.name, self.documentation = kind, service, name, documentation
        self.read, self.labels = read, labels

    def collect(self) -> Iterable[Metric]:
        family = self.kind(self.name, self.documentation, labels=["service", *self.labels])
        for values, value in sorted(self.read().items()):
            family.add_metric([self.service, *values], value)
        yield family


class Sampler:
    """Readings that need I/O, taken every `every` seconds, each within READ_TIMEOUT, concurrently; `/metrics`
    exports the last values read. A reading that fails or times out leaves its last values standing (logged
    once until it works again)."""

    def __init__(self, metrics: ServiceMetrics, every: float) -> None:
        self.metrics = metrics
        self._readings: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self.problems: dict[str, str] = {}  # what failed at the last refresh, by reading
        self.refreshes = 0  # completed refreshes (tests wait on it)
        self._periodic = Periodic("metrics sampler", self.refresh, every)

    def gauge(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Awaitable[float]],
    ) -> None:
        """A gauge of one value per service (`read` awaited at each refresh)."""
        last: dict[tuple[str, ...], float] = {}

        async def refresh() -> None:
            last[()] = float(await read())

        self._readings.append((name, refresh))
        self.metrics.watch_labelled("gauge", name, documentation, (), lambda: last)

    def reading(self, name: str, read: Callable[[], Awaitable[None]]) -> None:
        """Something awaited at each refresh that keeps its own values, which collectors export."""
        self._readings.append((name, read))

    async def start(self) -> None:
        if self._readings:
            await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def refresh(self) -> None:
        await asyncio.gather(*(self._read(name, read) for name, read in self._readings))
        self.refreshes += 1

    async def _read(self, name: str, read: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(read(), READ_TIMEOUT)
        except Exception as error:
            if name not in self.problems:
                log.warning("metrics: cannot read %s (%r); its last value stands until it can", name, error)
            self.problems[name] = repr(error)
            return
        if self.problems.pop(name, None) is not None:
            log.info("metrics: %s read again", name)


class QueueStates:
    """Each queue a service consumes, and its dead-letter queue, as the broker sees it: messages ready and
    consumers, read by a `Sampler`. A queue the broker does not know (not declared) is left out."""

    def __init__(self, broker: Broker, queues: Callable[[], Iterable[str]]) -> None:
        self.broker = broker
        self.queues = queues
        self.ready: dict[tuple[str, ...], float] = {}
        self.consumers: dict[tuple[str, ...], float] = {}

    def watched(self) -> list[str]:
        names = sorted(set(self.queues()))
        return sorted({*names, *(dead_letter_queue(name) for name in names)})

    async def refresh(self) -> None:
        queues = self.watched()
        states = await asyncio.gather(*(self.broker.queue_state(queue) for queue in queues), return_exceptions=True)
        ready: dict[tuple[str, ...], float] = {}
        consumers: dict[tuple[str, ...], float] = {}
        for queue, state in zip(queues, states, strict=True):
            if isinstance(state, LookupError):
                continue
            if isinstance(state, BaseException):
                raise state
            ready[queue,], consumers[queue,] = state.ready, state.consumers
        self.ready, self.consumers = ready, consumers

    def export(self, metrics: ServiceMetrics, sampler: Sampler) -> None:
        sampler.reading("queue states", self.refresh)
        metrics.watch_labelled(
            "gauge",
            "skuflow_queue_ready_messages",
            "Messages ready in each queue this service consumes and in its dead-letter queue (the broker's count, "
            "not those delivered and not yet acked), at the last reading",
            ("queue",),
            lambda: self.ready,
        )
        metrics.watch_labelled(
            "gauge",
            "skuflow_queue_consumers",
            "Consumers of each queue this service consumes and of its dead-letter queue (all processes', as the "
            "broker counts them), at the last reading",
            ("queue",),
            lambda: self.consumers,
        )


_COLLECTIONS = re.compile(r"/(skus|products|users|flows|wishlist)/[^/]+")


def route_of(path: str) -> str:
    """A path with its ids replaced, so that routes count together: /v1/skus/SKU-1/availability ->
    /v1/skus/{id}/availability."""
    return _COLLECTIONS.sub(lambda match: f"/{match.group(1)}/{{id}}", path)
