"""Messages no producer of ours would build, published as they are to one queue of the running services, and
what became of them (acked, retried, dead-lettered), as the consuming service counts it.

An `Envelope` carries its body as bytes and is published unchanged by either broker (only the consumer
validates), so one code path reaches both stacks; an empty `message_id` or `type` travels as an empty AMQP
property.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from skuflow.messaging import FLOW_REPLIES, SKUFLOW, Broker, Envelope, dead_letter_queue, new_id
from skuflow.messaging.envelope import ATTEMPTS, REASON, text
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.services.conftest import System

QUEUES = tuple(queue.name for queue in SKUFLOW.queues)
OUTCOMES = ("acked", "retried", "dead_lettered")


def message_type(queue: str) -> str:
    """The one message type a work queue carries (CONTRACT section 2)."""
    return "step_finished" if queue == FLOW_REPLIES else queue.split(".", 1)[1]


def owner(queue: str) -> str:
    return queue.split(".", 1)[0]


def raw_envelope(
    type: str,
    body: bytes,
    *,
    headers: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
) -> Envelope:
    return Envelope(
        type=type,
        body=body,
        app_id="fuzzer",
        message_id=new_id() if message_id is None else message_id,
        correlation_id=new_id() if correlation_id is None else correlation_id,
        causation_id=None,
        timestamp=datetime.now(UTC).replace(microsecond=0),
        headers=MappingProxyType(dict(headers or {})),
    )


async def publish_raw(broker: Broker, queue: str, envelope: Envelope) -> None:
    """Straight onto `queue` (the default exchange routes by the queue's name, on both brokers)."""
    await broker.publish(envelope, "", queue)


def counted(system: System, queue: str) -> Counter[str]:
    """What the consuming service has done with the deliveries of `queue` so far."""
    stats = getattr(system, owner(queue)).app.state.runtime.broker.stats
    return Counter({outcome: stats.by_queue[queue, outcome] for outcome in OUTCOMES})


@dataclass
class Tally:
    """The services' counts at a starting point, to tell what happened to the messages published since."""

    system: System
    start: dict[str, Counter[str]]

    @classmethod
    def now(cls, system: System) -> Tally:
        return cls(system, {queue: counted(system, queue) for queue in QUEUES})

    def since(self, queue: str) -> Counter[str]:
        now = counted(self.system, queue)
        return Counter({outcome: now[outcome] - self.start[queue][outcome] for outcome in OUTCOMES})

    async def settled(self, expected: Mapping[str, int], timeout: float = 20.0) -> dict[str, Counter[str]]:
        """Wait until `expected[queue]` messages of each queue were acked or dead-lettered (retries, if any,
        run their course first: the test options' delays are short); answer the counts since the start."""

        def done() -> bool:
            return all(
                self.since(queue)["acked"] + self.since(queue)["dead_lettered"] >= count
                for queue, count in expected.items()
            )

        await wait_until(done, timeout=timeout, what=f"the consumers to settle {dict(expected)}")
        return {queue: self.since(queue) for queue in QUEUES}


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    correlation_id: str
    reason: str
    attempts: int
    headers: Mapping[str, Any]


async def take_dead_letters(broker: Broker, queue: str) -> list[DeadLetter]:
    """Empty `queue`'s DLQ, answering what was in it."""
    letters = await broker.take(dead_letter_queue(queue), 100_000)
    return [
        DeadLetter(
            letter.message_id,
            letter.correlation_id,
            text(letter.headers.get(REASON)),
            int(letter.headers.get(ATTEMPTS) or 0),
            letter.headers,
        )
        for letter in letters
    ]
