"""What `skuflow compare` measures: the workload, each mode's figures, and how they are read from the
services' own `/metrics` (the change between a look before the burst and one after)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (metric, labels) -> value, of one service
Progress = Callable[[str, int, int], None]  # phase, done, total


class CompareError(Exception):
    """The comparison could not be made; the message says why."""


class NotConverged(CompareError):
    """A mode did not converge within the bound; the message says what was missing."""


@dataclass(frozen=True)
class Workload:
    skus: int = 100
    users: int = 20
    wishes: int = 5  # SKUs each user wishes for
    concurrency: int = 10  # HTTP reports in flight
    timeout: float = 60.0  # seconds for a mode to converge


@dataclass
class ModeFigures:
    mode: str
    converge_seconds: float = 0.0
    published: dict[str, float] = field(default_factory=dict)  # "exchange -> routing key (type)" -> messages
    delivered: dict[str, float] = field(default_factory=dict)  # queue -> deliveries
    retried: float = 0.0  # deliveries retried or dead-lettered by the messaging layer
    dead_lettered: float = 0.0
    steps_resent: float = 0.0  # orchestration: commands sent again, unanswered
    steps_failed: float = 0.0
    http_calls: dict[str, float] = field(default_factory=dict)  # "service -> target route" -> requests
    catalog_latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p99
    email_latency_ms: dict[str, float] = field(default_factory=dict)
    emails: int = 0
    peak_memory_mb: float = 0.0  # this process, all services in it
    knows: dict[str, list[str]] = field(default_factory=dict)  # service -> queues consumed, endpoints called


@dataclass
class Comparison:
    workload: Workload
    broker: str
    databases: str
    modes: list[ModeFigures] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload.__dict__,
            "broker": self.broker,
            "databases": self.databases,
            "modes": {figures.mode: figures.__dict__ for figures in self.modes},
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


def mode_figures(mode: str, before: dict[str, Samples], after: dict[str, Samples]) -> ModeFigures:
    figures = ModeFigures(mode)

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
    figures.steps_resent = sum(change for _, _, change in deltas("skuflow_flow_steps_resent"))
    figures.steps_failed = sum(change for _, _, change in deltas("skuflow_flow_steps_failed"))
    figures.knows = {service: sorted(things) for service, things in sorted(consumed.items())}
    return figures


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "count": 0}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "count": len(ordered),
    }
