"""What happens to a delivered message, decided once for every broker.

1. The envelope's `type` must be the subscription's and the body must validate against its model;
   otherwise the message can never succeed, so it goes straight to the DLQ with the reason.
2. The handler runs inside the message's flow (its correlation id; its message id as the cause of
   whatever the handler publishes), alone or with others (a batched subscription: batching.py), bounded
   by `handler_timeout` (far below RabbitMQ's 30-minute `consumer_timeout`, which would close the channel
   under a message held longer).
3. The handler returned: ack. It raised `Reject`: DLQ. It raised anything else (or timed out): retry
   after the next delay of `retry_delays` (the message waits aside, the queue keeps flowing), and after
   the last one, DLQ with the last error. Cancelled (shutdown past its grace, or a lost connection):
   nothing is settled, so the broker puts the message back on its queue.

Attempts: each trip through one of the queue's wait queues is one retry. The layer counts them in its own
`skuflow-retries` header, set on the copy it puts aside, and cross-checks the broker's `x-death` (the
larger wins): RabbitMQ up to 3.12 keeps counting in a republished `x-death`, RabbitMQ 3.13+ restarts it
from the broker's own record, so neither alone is reliable across versions.
"""

from __future__ import annotations

import abc
import enum
import functools
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pydantic

from skuflow.messaging.batching import Batcher
from skuflow.messaging.broker import Broker, BrokerOptions, Delivery, Message, Reject, Subscription
from skuflow.messaging.context import flow_scope
from skuflow.messaging.envelope import ATTEMPTS, DEATHS, ORIGINAL_QUEUE, REASON, RETRIES, Envelope, text
from skuflow.messaging.timeouts import bounded
from skuflow.messaging.topology import dead_letter_queue, is_wait_queue_of, wait_queue
from skuflow.messaging.tracing import MessageTracing, settled

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("skuflow.messaging")


class Outcome(enum.Enum):
    ACKED = "acked"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"


def retries_so_far(headers: Mapping[str, Any], queue: str) -> int:
    """How many times the message has been put aside in one of `queue`'s wait queues."""
    deaths = headers.get(DEATHS)
    # Any publisher can set these headers: what cannot be read counts as no retry, never as an error.
    counted_by_broker = sum(
        _count(death.get("count"))
        for death in (deaths if isinstance(deaths, list | tuple) else ())
        if isinstance(death, Mapping)
        and text(death.get("reason")) == "expired"
        and is_wait_queue_of(queue, text(death.get("queue")))
    )
    try:
        counted_by_us = int(headers.get(RETRIES) or 0)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        counted_by_us = 0
    return max(counted_by_broker, counted_by_us)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def batcher_for(
    subscription: Subscription[Any], options: BrokerOptions, tracing: MessageTracing
) -> Batcher[Any] | None:
    """The batcher of a consumer of a batched subscription (one per consumer); None for the others."""
    if subscription.batch_handler is None:
        return None
    return Batcher(
        subscription.batch_handler,
        subscription.max_batch,
        options.handler_timeout,
        functools.partial(tracing.batch, subscription),
    )


async def handle_delivery(
    subscription: Subscription[Any], delivery: Delivery, broker: Broker, batcher: Batcher[Any] | None = None
) -> None:
    """Run one delivery through validation and the handler (or `batcher`, which hands it to the subscription's
    batch handler with others), and settle it (counted in the broker's `stats`, timed from delivery to
    settlement for its `on_settled`; traced by its `tracing`)."""
    stats = broker.stats
    stats.delivered += 1
    stats.by_queue[subscription.queue, "delivered"] += 1
    started = time.perf_counter()
    outcome = await _settle(subscription, delivery, broker, batcher)
    if stats.on_settled is not None:
        stats.on_settled(subscription.queue, outcome.value, time.perf_counter() - started)
    if outcome is Outcome.ACKED:
        stats.acked += 1
        stats.by_queue[subscription.queue, "acked"] += 1
    elif outcome is Outcome.RETRIED:
        stats.retried += 1
        stats.by_queue[subscription.queue, "retried"] += 1
    else:
        stats.dead_lettered += 1
        stats.by_queue[subscription.queue, "dead_lettered"] += 1


async def _settle(
    subscription: Subscription[Any], delivery: Delivery, broker: Broker, batcher: Batcher[Any] | None
) -> Outcome:
    envelope = delivery.envelope
    retries = retries_so_far(envelope.headers, subscription.queue)
    attempt = retries + 1
    if broker.tracing.tracer is None:
        return (await _handle(subscription, delivery, broker.options, attempt, None, batcher))[0]
    with broker.tracing.processing(subscription, envelope, attempt, delivery.tag) as span:
        outcome, reason = await _handle(subscription, delivery, broker.options, attempt, span, batcher)
        settled(span, outcome.value, reason)
        return outcome


async def _handle(
    subscription: Subscription[Any],
    delivery: Delivery,
    options: BrokerOptions,
    attempt: int,
    span: Span | None,
    batcher: Batcher[Any] | None,
) -> tuple[Outcome, str | None]:
    """Validate, handle and settle; the outcome, and why when it is not acked."""
    envelope = delivery.envelope
    problem = _envelope_problem(envelope, subscription)
    if problem:
        await delivery.dead_letter(problem, attempt)
        return Outcome.DEAD_LETTERED, problem
    try:
        body = subscription.model.model_validate_json(envelope.body)
    except pydantic.ValidationError as error:
        reason = f"invalid {envelope.type} body: {_describe(error)}"
        await delivery.dead_letter(reason, attempt)
        return Outcome.DEAD_LETTERED, reason

    with flow_scope(envelope.correlation_id, causation_id=envelope.message_id):
        try:
            message = Message(body, envelope, attempt, span)
            if batcher is not None:
                await batcher.handle(message)
            else:
                await bounded(subscription.handler(message), options.handler_timeout)
        except Reject as error:
            log.warning("%s rejected %s: %s", subscription.queue, envelope.message_id, error)
            reason = f"rejected: {error}"
            await delivery.dead_letter(reason, attempt)
            return Outcome.DEAD_LETTERED, reason
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if isinstance(error, TimeoutError):
                reason = f"the handler took longer than {options.handler_timeout}s"
            if attempt > len(options.retry_delays):
                log.error(
                    "%s gave up on %s after %d attempts: %s", subscription.queue, envelope.message_id, attempt, reason
                )
                await delivery.dead_letter(reason, attempt)
                return Outcome.DEAD_LETTERED, reason
            delay = options.retry_delays[attempt - 1]
            log.warning(
                "%s attempt %d of %s failed, retrying in %ss: %s",
                subscription.queue,
                attempt,
                envelope.message_id,
                delay,
                reason,
            )
            await delivery.retry_later(delay, attempt)  # the retries so far, this one included
            return Outcome.RETRIED, reason
    await delivery.ack()
    return Outcome.ACKED, None


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


_PROBLEMS_SHOWN = 5  # a body of 2,000 unknown fields makes 2,000 problems: the reason names a few
_NAME_SHOWN = 64  # characters of a field's name (the body chose it, and may have made it 100,000 long)


def _describe(error: pydantic.ValidationError) -> str:
    """One line per problem, naming the field: `sku: Field required`; bounded, since the reason travels as a
    header (RabbitMQ takes one frame of headers: 128 KiB by default) and is shown by `skuflow dlq list`."""
    problems = error.errors(include_url=False, include_input=False)
    shown = [
        f"{'.'.join(_shortened(str(part)) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in problems[:_PROBLEMS_SHOWN]
    ]
    if len(problems) > _PROBLEMS_SHOWN:
        shown.append(f"and {len(problems) - _PROBLEMS_SHOWN} more")
    return "; ".join(shown)


def _shortened(name: str) -> str:
    return name if len(name) <= _NAME_SHOWN else f"{name[:_NAME_SHOWN]}...({len(name)} characters)"


class RepublishingDelivery(abc.ABC):
    """Retry and dead-letter by publishing a copy (confirmed) and then acking the original.

    Shared by both brokers: a copy goes to the default exchange, addressed to the wait queue or the DLQ
    by name. If the process dies between the two steps the message is delivered again: at least once.
    """

    tag: int | None = None  # the broker's delivery tag, where it has one

    def __init__(self, broker: Broker, queue: str, envelope: Envelope) -> None:
        self._broker = broker
        self._queue = queue
        self._envelope = envelope

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @abc.abstractmethod
    async def ack(self) -> None: ...

    async def retry_later(self, delay: float, retries: int) -> None:
        aside = self._envelope.with_headers(**{RETRIES: retries})
        await self._broker.publish(aside, "", wait_queue(self._queue, delay))
        await self.ack()

    async def dead_letter(self, reason: str, attempts: int) -> None:
        letter = self._envelope.with_headers(**{REASON: reason, ATTEMPTS: attempts, ORIGINAL_QUEUE: self._queue})
        await self._broker.publish(letter, "", dead_letter_queue(self._queue))
        await self.ack()
