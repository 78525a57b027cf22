"""What happens to a delivered message, decided once for every broker.

1. The envelope's `type` must be the subscription's and the body must validate against its model;
   otherwise the message can never succeed, so it goes straight to the DLQ with the reason.
2. The handler runs inside the message's flow (its correlation id; its message id as the cause of
   whatever the handler publishes).
3. The handler returned: ack. It raised `Reject`: DLQ. It raised anything else: retry after the next
   delay of `retry_delays` (the message waits aside, the queue keeps flowing), and after the last one,
   DLQ with the last error. Cancelled (shutdown past its grace): nothing is settled, so the broker puts
   the message back on its queue.

Attempts are counted from the broker's own `x-death` header: each trip through one of the queue's wait
queues is one retry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from skuflow.messaging.broker import Broker, BrokerOptions, BrokerStats, Delivery, Message, Reject, Subscription
from skuflow.messaging.context import flow_scope
from skuflow.messaging.envelope import ATTEMPTS, DEATHS, ORIGINAL_QUEUE, REASON, Envelope
from skuflow.messaging.topology import dead_letter_queue, is_wait_queue_of, wait_queue

log = logging.getLogger("skuflow.messaging")


def retries_so_far(headers: Mapping[str, Any], queue: str) -> int:
    """How many times the message has expired out of one of `queue`'s wait queues (from `x-death`)."""
    deaths = headers.get(DEATHS) or []
    return sum(
        int(death.get("count", 0))
        for death in deaths
        if isinstance(death, Mapping)
        and _text(death.get("reason")) == "expired"
        and is_wait_queue_of(queue, _text(death.get("queue")))
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


async def handle_delivery(
    subscription: Subscription[Any], delivery: Delivery, options: BrokerOptions, stats: BrokerStats
) -> None:
    """Run one delivery through validation and the handler, and settle it (counted in `stats`)."""
    stats.delivered += 1
    outcome = await _settle(subscription, delivery, options.retry_delays)
    setattr(stats, outcome, getattr(stats, outcome) + 1)


async def _settle(subscription: Subscription[Any], delivery: Delivery, retry_delays: Sequence[float]) -> str:
    envelope = delivery.envelope
    attempt = retries_so_far(envelope.headers, subscription.queue) + 1

    problem = _envelope_problem(envelope, subscription)
    if problem:
        await delivery.dead_letter(problem, attempt)
        return "dead_lettered"
    try:
        body = subscription.model.model_validate_json(envelope.body)
    except pydantic.ValidationError as error:
        await delivery.dead_letter(f"invalid {envelope.type} body: {_describe(error)}", attempt)
        return "dead_lettered"

    with flow_scope(envelope.correlation_id, causation_id=envelope.message_id):
        try:
            await subscription.handler(Message(body, envelope, attempt))
        except Reject as error:
            log.warning("%s rejected %s: %s", subscription.queue, envelope.message_id, error)
            await delivery.dead_letter(f"rejected: {error}", attempt)
            return "dead_lettered"
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if attempt > len(retry_delays):
                log.error(
                    "%s gave up on %s after %d attempts: %s", subscription.queue, envelope.message_id, attempt, reason
                )
                await delivery.dead_letter(reason, attempt)
                return "dead_lettered"
            delay = retry_delays[attempt - 1]
            log.warning(
                "%s attempt %d of %s failed, retrying in %ss: %s",
                subscription.queue,
                attempt,
                envelope.message_id,
                delay,
                reason,
            )
            await delivery.retry_later(delay)
            return "retried"
    await delivery.ack()
    return "acked"


def _envelope_problem(envelope: Envelope, subscription: Subscription[Any]) -> str | None:
    if envelope.type != subscription.message_type:
        return (
            f"unexpected message type {envelope.type!r} on {subscription.queue} "
            f"(expected {subscription.message_type!r})"
        )
    missing = [name for name in ("message_id", "correlation_id") if not getattr(envelope, name)]
    if missing:
        return f"envelope lacks {', '.join(missing)}"
    return None


def _describe(error: pydantic.ValidationError) -> str:
    """One line per problem, naming the field: `sku: Field required`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
    )


class RepublishingDelivery:
    """Retry and dead-letter by publishing a copy (confirmed) and then acking the original.

    Shared by both brokers: a copy goes to the default exchange, addressed to the wait queue or the DLQ
    by name. If the process dies between the two steps the message is delivered again: at least once.
    """

    def __init__(self, broker: Broker, queue: str, envelope: Envelope) -> None:
        self._broker = broker
        self._queue = queue
        self._envelope = envelope

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    async def ack(self) -> None:
        raise NotImplementedError

    async def retry_later(self, delay: float) -> None:
        await self._broker.publish(self._envelope, "", wait_queue(self._queue, delay))
        await self.ack()

    async def dead_letter(self, reason: str, attempts: int) -> None:
        letter = self._envelope.with_headers(**{REASON: reason, ATTEMPTS: attempts, ORIGINAL_QUEUE: self._queue})
        await self._broker.publish(letter, "", dead_letter_queue(self._queue))
        await self.ack()
