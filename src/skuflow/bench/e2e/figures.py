"""What `skuflow bench e2e` measures: the workload, each phase's figures, and how the message and call counts
are read from the services' own `/metrics` (the change between a look before the phase and one after)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from skuflow.bench.processes import ProcessFigures  # role "system" (the services) or "bench" (load, SMTP, FTP)
from skuflow.service_client import ServiceError

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (metric, labels) -> value, of one service
Progress = Callable[[str, int, int], None]  # phase, done, total


BASELINE_SYSTEMS = {  # what each baseline is, in the JSON
    "raw": "skuflow.bench.raw: aiohttp + aio-pika + asyncpg + aiosmtplib, a process per service",
    "faststream": "skuflow.bench.faststream_flow: the raw flow with FastStream's RabbitBroker for its messaging",
}
# The throughput ratios, shown when the denominator ran: JSON key -> (numerator, denominator).
RATIOS = {
    "ratio": ("skuflow", "raw"),
    "ratio_faststream": ("skuflow", "faststream"),
    "ratio_faststream_raw": ("faststream", "raw"),
}


class BenchError(Exception):
    """The benchmark could not be run; the message says why."""


class NotConverged(BenchError):
    """A phase did not converge within the bound; the message says what was missing."""


@contextlib.contextmanager
def as_bench_errors() -> Iterator[None]:
    """A service's refusal, or a broker or database out of reach, as the `BenchError` that says so."""
    try:
        yield
    except ServiceError as error:
        raise BenchError(str(error)) from None
    except OSError as error:
        raise BenchError(f"cannot reach the broker or the database: {error}") from None


def platform_versions() -> dict[str, str]:
    """Python's and skuflow's versions (a run adds its broker's, database's, ...)."""
    return {"python": platform.python_version(), "skuflow": importlib.metadata.version("skuflow")}


def machine() -> dict[str, Any]:
    """The CPUs and the load average (1, 5, 15 minutes) as a run begins."""
    return {"cpus": os.cpu_count() or 0, "load_average": [round(n, 2) for n in os.getloadavg()]}


@dataclass(frozen=True)
class Workload:
    skus: int = 5_000
    users: int = 500
    wishes: int = 10  # SKUs each user wishes for
    batch: int = 1  # SKUs per HTTP report
    concurrency: int = 32  # HTTP reports in flight
    rate: float | None = None  # HTTP reports started per second (open loop), None: as fast as answered
    timeout: float = 600.0  # seconds for a phase to converge
    poll: float = 0.25  # seconds between two looks at convergence


@dataclass
class PhaseFigures:
    mode: str
    phase: str  # "http", "ftp", or "mixed" (compare's: half over HTTP, half in a snapshot)
    skus: int = 0
    reports: int = 0  # HTTP reports sent (an FTP snapshot counts as none)
    refused: int = 0  # HTTP reports answered 503 (backpressure) and sent again after Retry-After
    due_emails: int = 0
    converge_seconds: float = 0.0  # first report sent -> last SKU in catalog or last email accepted
    changes_per_second: float = 0.0  # SKUs / converge_seconds
    catalog_latency_ms: dict[str, float] = field(default_factory=dict)  # report sent -> catalog updated
    email_latency_ms: dict[str, float] = field(default_factory=dict)  # report sent -> email accepted
    answer_ms: dict[str, float] = field(default_factory=dict)  # POST /v1/stock sent -> answer read
    published: dict[str, float] = field(default_factory=dict)  # "exchange -> routing key (type)" -> messages
    delivered: dict[str, float] = field(default_factory=dict)  # queue -> deliveries
    retried: float = 0.0  # deliveries retried or dead-lettered by the messaging layer
    dead_lettered: float = 0.0
    steps_resent: float = 0.0  # orchestration: commands sent again, unanswered
    steps_failed: float = 0.0
    http_calls: dict[str, float] = field(default_factory=dict)  # "service -> target route" -> requests
    emails: int = 0  # accepted by the SMTP sink during the phase
    processes: list[ProcessFigures] = field(default_factory=list)
    peak_memory_mb: float = 0.0  # the system's processes, summed
    load_average: list[float] = field(default_factory=list)  # 1, 5, 15 minutes, at the phase's end
    knows: dict[str, list[str]] = field(default_factory=dict)  # service -> queues consumed, endpoints called
    system: str = "skuflow"  # or a baseline: "raw" or "faststream" (see BASELINE_SYSTEMS)


@dataclass
class Report:
    workload: Workload
    broker: str  # "memory" or "amqp"
    databases: str  # "sqlite" or "postgresql"
    system: str = "skuflow up"  # or "skuflow up --processes"
    versions: dict[str, str] = field(default_factory=dict)  # python, skuflow, rabbitmq, postgresql
    machine: dict[str, Any] = field(default_factory=dict)  # cpus, load average at the start
    phases: list[PhaseFigures] = field(default_factory=list)
    traced: bool = False  # skuflow's spans exported over OTLP/HTTP to the bench's sink
    spans: dict[str, int] = field(default_factory=dict)  # traced: mode -> spans the sink received (setup included)

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
        for figures in self.phases:
            shown[figures.system][figures.mode][figures.phase] = asdict(figures)
        result = {
            "workload": asdict(self.workload),
            "broker": self.broker,
            "databases": self.databases,
            "system": self.system,
            "versions": self.versions,
            "machine": self.machine,
            "traced": self.traced,
            "spans": self.spans,
            "modes": dict(shown["skuflow"]),
        }
        for flow, system in BASELINE_SYSTEMS.items():
            if shown[flow]:  # the baseline's phase
                result[flow] = {"system": system, "modes": dict(shown[flow])}
        for key, (numerator, denominator) in RATIOS.items():
            if shown[denominator]:  # as "ratio" always was: empty unless the numerator ran too
                result[key] = self.ratio(numerator, denominator)
        return result

    def ratio(self, numerator: str = "skuflow", denominator: str = "raw") -> dict[str, float]:
        """One system's throughput / another's, for each phase both ran (choreography over HTTP)."""
        below = {(f.mode, f.phase): f for f in self.phases if f.system == denominator}
        return {
            f"{f.mode} {f.phase} changes_per_second": round(
                f.changes_per_second / below[f.mode, f.phase].changes_per_second, 3
            )
            for f in self.phases
            if f.system == numerator and (f.mode, f.phase) in below
        }


def all_settled(deliveries: dict[Any, float]) -> bool:
    """Each queue's deliveries were all acked, retried or dead-lettered: none is in a handler."""
    outcomes: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for (service, labels), value in deliveries.items():
        fields = dict(labels)
        outcomes[service, fields["queue"]][fields["outcome"]] = value
    return all(
        counts.get("delivered", 0) == sum(counts.get(name, 0) for name in ("acked", "retried", "dead_lettered"))
        for counts in outcomes.values()
    )


def count_messages(figures: PhaseFigures, before: dict[str, Samples], after: dict[str, Samples]) -> None:
    """The phase's messages, deliveries and calls between services, from the metrics' change."""

    def deltas(name: str) -> Iterator[tuple[str, dict[str, str], float]]:
        for service, samples in after.items():
            for (sample, labels), value in samples.items():
                if sample == name:
                    change = value - before.get(service, {}).get((sample, labels), 0.0)
                    if change:
                        yield service, dict(labels), change

    consumed: dict[str, set[str]] = defaultdict(set)
    for _, labels, change in deltas("skuflow_published_messages_total"):
        route = f"{labels['exchange']} -> {labels['routing_key'] or '(fanout)'} ({labels['type']})"
        figures.published[route] = figures.published.get(route, 0) + change
    for service, labels, change in deltas("skuflow_queue_messages_total"):
        queue, outcome = labels["queue"], labels["outcome"]
        consumed[service].add(f"queue {queue}")
        if outcome == "delivered":
            figures.delivered[queue] = figures.delivered.get(queue, 0) + change
        elif outcome == "retried":
            figures.retried += change
        elif outcome == "dead_lettered":
            figures.dead_lettered += change
    for service, labels, change in deltas("skuflow_http_client_requests_total"):
        call = f"{service} -> {labels['target']} {labels['method']} {labels['route']}"
        figures.http_calls[call] = figures.http_calls.get(call, 0) + change
        consumed[service].add(f"calls {labels['target']} {labels['method']} {labels['route']}")
    figures.steps_resent = sum(change for _, _, change in deltas("skuflow_flow_steps_resent_total"))
    figures.steps_failed = sum(change for _, _, change in deltas("skuflow_flow_steps_failed_total"))
    figures.knows = {service: sorted(things) for service, things in sorted(consumed.items())}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max": ordered[-1],
        "count": len(ordered),
    }
