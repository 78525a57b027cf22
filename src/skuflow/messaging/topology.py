"""Exchanges, queues and the topology they make (the system's own is in `routes.py`).

Each broker turns a `Topology` into its own objects; declaring is idempotent. For every work queue `Q`
the broker also declares `Q.dlq` (dead letters) and one wait queue per retry delay, `Q.retry.<ms>ms`,
whose expired messages fall back into `Q` (so a waiting message never blocks the work queue).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

ExchangeKind = Literal["fanout", "direct"]


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    kind: ExchangeKind


@dataclass(frozen=True, slots=True)
class Queue:
    """A durable work queue bound to one exchange; a direct exchange routes by the queue's own name, unless
    `binding_key` names another (a second queue receiving copies of what is routed to the first)."""

    name: str
    exchange: Exchange
    binding_key: str | None = None

    @property
    def routing_key(self) -> str:
        if self.exchange.kind == "fanout":
            return ""
        return self.binding_key or self.name


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]

    def __post_init__(self) -> None:
        for queue in self.queues:
            if queue.exchange not in self.exchanges:
                raise ValueError(f"queue {queue.name!r} is bound to undeclared exchange {queue.exchange.name!r}")
        names = [queue.name for queue in self.queues]
        if len(names) != len(set(names)):
            raise ValueError("queue names must be unique")

    def queue(self, name: str) -> Queue:
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise KeyError(f"no queue {name!r} in the topology")

    def bound_to(self, exchange: str, routing_key: str) -> list[Queue]:
        """The queues a message published to `exchange` with `routing_key` reaches."""
        return [
            queue
            for queue in self.queues
            if queue.exchange.name == exchange and (queue.exchange.kind == "fanout" or queue.routing_key == routing_key)
        ]


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def wait_queue(queue: str, delay_seconds: float) -> str:
    return f"{queue}.retry.{round(delay_seconds * 1000)}ms"


def is_wait_queue_of(queue: str, candidate: str) -> bool:
    return candidate.startswith(f"{queue}.retry.") and candidate.endswith("ms")


def wait_queues(queue: str, delays: Iterable[float]) -> list[str]:
    return sorted({wait_queue(queue, delay) for delay in delays})
