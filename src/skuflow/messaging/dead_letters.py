"""Dead letters, as an operator looks at them (`skuflow dlq list`, CONTRACT section 7): per work queue, each
one's message id, type, reason, attempts and age, read in place from the queue's `Q.dlq`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from skuflow.messaging.broker import Broker
from skuflow.messaging.envelope import ATTEMPTS, REASON, text
from skuflow.messaging.routes import SKUFLOW
from skuflow.messaging.topology import dead_letter_queue

WORK_QUEUES = tuple(queue.name for queue in SKUFLOW.queues)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    type: str
    reason: str
    attempts: int
    age_seconds: float  # since the message was first published
    correlation_id: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_queue(queue: str) -> str:
    """The work queue's name, or ValueError naming the ones there are (a `.dlq` name is taken for its queue)."""
    name = queue.removesuffix(".dlq")
    if name not in WORK_QUEUES:
        raise ValueError(f"no work queue {queue!r}: choose one of {', '.join(WORK_QUEUES)}")
    return name


async def dead_letters(broker: Broker, queues: tuple[str, ...] = WORK_QUEUES, limit: int = 1000) -> dict[str, Any]:
    """queue -> {"count", "letters": [...]} for each work queue (up to `limit` letters listed per queue)."""
    now = datetime.now(UTC)
    found: dict[str, Any] = {}
    for queue in queues:
        letters = await broker.peek(dead_letter_queue(queue), limit)
        found[queue] = {
            "count": await broker.depth(dead_letter_queue(queue)),
            "letters": [
                DeadLetter(
                    message_id=letter.message_id,
                    type=letter.type,
                    reason=text(letter.headers.get(REASON)) or "(no reason recorded)",
                    attempts=int(letter.headers.get(ATTEMPTS) or 0),
                    age_seconds=max(0.0, (now - letter.timestamp).total_seconds()),
                    correlation_id=letter.correlation_id,
                ).as_dict()
                for letter in letters
            ],
        }
    return found
