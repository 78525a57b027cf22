"""What every broker offers, whatever carries the messages.

`AmqpBroker` (RabbitMQ) and `MemoryBroker` (in-process) implement this one interface with one behaviour;
the conformance suite in `tests/messaging` runs against both. What happens to a delivery (validate, call
the handler, ack, retry later, dead-letter) is decided once, in `skuflow.messaging.consumer`; a broker only
supplies the transport primitives of a `Delivery`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import pydantic

from skuflow.messaging.context import flow_scope
from skuflow.messaging.envelope import Envelope
from skuflow.messaging.topology import Topology, dead_letter_queue, wait_queues
from skuflow.messaging.tracing import MessageTracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
log = logging.getLogger("skuflow.messaging")

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1, 5, 30, 120, 600)


class PublishError(Exception):
    """The broker did not take a message: not confirmed, unroutable, or unreachable past the bound."""


class PublishRefused(PublishError):
    """The broker is there but will not take some messages (no such exchange, no queue for one, a nack):
    sending them again unchanged fails again until the topology or the broker's limits change. `refused`
    gives each refused message's id and the reason; every other message of the publish was taken."""

    def __init__(self, reason: str, refused: Mapping[str, str]) -> None:
        super().__init__(reason)
        self.refused = dict(refused)

    @classmethod
    def one(cls, outgoing: Outgoing, reason: str) -> PublishRefused:
        return cls(reason, {outgoing.envelope.message_id: reason})

    @classmethod
    def undeclared(cls, outgoing: Outgoing) -> PublishRefused:
        return cls.one(outgoing, f"exchange {outgoing.exchange!r} is not declared: declare the topology first")

    @classmethod
    def unroutable(cls, outgoing: Outgoing) -> PublishRefused:
        return cls.one(
            outgoing,
            f"unroutable {outgoing.envelope.type}: no queue bound to exchange {outgoing.exchange!r} "
            f"with routing key {outgoing.routing_key!r}",
        )

    @classmethod
    def of(cls, refusals: Sequence[PublishRefused], total: int) -> PublishRefused:
        """One error for the refusals of a batch of `total` messages."""
        if total == 1 and len(refusals) == 1:
            return refusals[0]
        refused = {message_id: reason for refusal in refusals for message_id, reason in refusal.refused.items()}
        return cls(f"{len(refused)} of {total} messages refused, e.g. {refusals[0]}", refused)


class Reject(Exception):
    """Raised by a handler for a message that can never succeed: it goes to the DLQ without retries."""


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    prefetch: int = 32
    # How long a publish keeps trying while the broker is unreachable before it raises.
    publish_timeout: float = 30.0
    shutdown_grace: float = 30.0
    # A handler running longer fails (and is retried): RabbitMQ closes a channel whose message stays
    # unacked past its consumer_timeout (30 minutes by default).
    handler_timeout: float = 120.0

    def __post_init__(self) -> None:
        if any(delay <= 0 for delay in self.retry_delays):
            raise ValueError("retry delays must be positive")
        if self.prefetch < 1:
            raise ValueError("prefetch must be at least 1")


@dataclass(frozen=True, slots=True)
class Message(Generic[ModelT]):
    """What a handler receives: the validated body, its envelope, and which attempt this is (1 = first)."""

    body: ModelT
    envelope: Envelope
    attempt: int
    span: Span | None = None  # its processing span while traced (a batch's span links to it)

    def flow(self) -> flow_scope:
        """The message's flow, for work done on its behalf: its correlation id, and itself as the cause of
        whatever is published (a handler of a single message already runs in it; one of a batch says so)."""
        return flow_scope(self.envelope.correlation_id, causation_id=self.envelope.message_id)


Handler = Callable[[Message[ModelT]], Awaitable[None]]
# A service's handler takes the messages it may handle together (one statement, one call for all of them);
# `each` runs it on one message at a time, as the consumers deliver today.
BatchHandler = Callable[[Sequence[Message[ModelT]]], Awaitable[None]]
Publish = Callable[[Sequence["Outgoing"]], Awaitable[None]]


def each(handler: BatchHandler[ModelT]) -> Handler[ModelT]:
    async def one(message: Message[ModelT]) -> None:
        await handler((message,))

    return one


@dataclass(frozen=True, slots=True)
class Subscription(Generic[ModelT]):
    """A queue, the one message type it carries, the model that validates its body, and its handler.

    A batched subscription's `batch_handler` takes the messages that arrive together (at most `max_batch`);
    `handler` then runs it on one message (see `skuflow.messaging.batching`)."""

    queue: str
    message_type: str
    model: type[ModelT]
    handler: Handler[ModelT]
    batch_handler: BatchHandler[ModelT] | None = None
    max_batch: int = 1
    # Where its messages come from, for the processing spans (`tracing.processed_destination`), and the
    # routing key of its binding.
    destination: str = ""
    routing_key: str = ""

    @classmethod
    def batched(
        cls,
        queue: str,
        message_type: str,
        model: type[ModelT],
        handler: BatchHandler[ModelT],
        max_batch: int,
        **where: str,
    ) -> Subscription[ModelT]:
        """`where`: `destination` and `routing_key`, as the fields."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        return cls(queue, message_type, model, each(handler), batch_handler=handler, max_batch=max_batch, **where)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message and where to publish it: an exchange (or "" for a queue by name) and a routing key."""

    envelope: Envelope
    exchange: str
    routing_key: str = ""


class Delivery(Protocol):
    """One delivered message, with the transport operations that settle it (exactly one is called)."""

    @property
    def envelope(self) -> Envelope: ...

    @property
    def tag(self) -> int | None:
        """The broker's delivery tag (RabbitMQ's), for the processing span; None where there is none."""

    async def ack(self) -> None: ...

    async def retry_later(self, delay: float, retries: int) -> None:
        """Put the message aside for `delay` seconds, then back on its queue, marked as its `retries`th."""

    async def dead_letter(self, reason: str, attempts: int) -> None:
        """Move the message to its queue's DLQ with `x-reason` and `x-attempts`."""


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue as the broker sees it now: messages ready (not counting those delivered and not yet acked),
    and the consumers taking from it."""

    ready: int
    consumers: int


class Consumer(Protocol):
    @property
    def queue(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    async def stop(self, grace: float | None = None) -> None:
        """Take no new messages; let those in flight finish within `grace`; return the rest to the queue."""


@dataclass
class BrokerStats:
    """Counts kept by a broker client; later exported as Prometheus metrics."""

    published: int = 0
    delivered: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    # The same, finer: (queue, outcome) -> deliveries, and (exchange, routing key, type) -> published.
    by_queue: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_route: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # Told of each settled delivery: its queue, its outcome (acked, retried, dead_lettered) and the seconds from
    # its delivery to its settlement (whoever exports the counts keeps the durations: a histogram, say).
    on_settled: Callable[[str, str, float], None] | None = None

    def count_published(self, outgoing: Outgoing) -> None:
        self.published += 1
        self.by_route[outgoing.exchange, outgoing.routing_key, outgoing.envelope.type] += 1


class Broker(abc.ABC):
    """A connection to a broker on behalf of one service (`app_id`)."""

    def __init__(self, app_id: str, options: BrokerOptions) -> None:
        self.app_id = app_id
        self.options = options
        self.stats = BrokerStats()
        self.tracing = MessageTracing(self.system)
        self._consumers: list[Consumer] = []

    system = "rabbitmq"  # `messaging.system` in its spans

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers)

    async def __aenter__(self) -> Broker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None: ...

    async def close(self) -> None:
        """Stop every consumer (together, draining within one grace period), then disconnect."""
        consumers, self._consumers = self._consumers, []
        try:
            results = await asyncio.gather(*(consumer.stop() for consumer in consumers), return_exceptions=True)
            for consumer, result in zip(consumers, results, strict=True):
                if isinstance(result, Exception):
                    log.warning("stopping the consumer of %s failed: %r", consumer.queue, result)
        finally:
            await self._disconnect()

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool:
        """Whether the broker is reachable right now (readiness checks ask this)."""

    @abc.abstractmethod
    async def declare(self, topology: Topology) -> None:
        """Declare exchanges, queues, bindings, DLQs and wait queues; safe to repeat."""

    async def publish(self, envelope: Envelope, exchange: str, routing_key: str = "") -> None:
        """Publish one persistent message and wait for the broker's confirm; raise `PublishError` if none."""
        await self.publish_many([Outgoing(envelope, exchange, routing_key)])

    async def publish_many(self, messages: Sequence[Outgoing], window: int = 100) -> None:
        """Publish with up to `window` confirms in flight; return once every message is confirmed.

        On `PublishError` some of the messages may have reached the broker and others not: publish the
        batch again (consumers deduplicate by `message_id`), as the outbox relay does. On `PublishRefused`
        (a subclass) the broker took every message but those it names.
        """
        if self.tracing.tracer is None:
            await self._publish_many(messages, window)
            return
        traced, spans = self.tracing.sending(messages)
        try:
            await self._publish_many(traced, window)
        except PublishRefused as refusal:
            self.tracing.sent(spans, traced, refusal, refusal.refused)
            raise
        except BaseException as error:
            self.tracing.sent(spans, traced, error, {})
            raise
        self.tracing.sent(spans, traced, None, {})

    @abc.abstractmethod
    async def _publish_many(self, messages: Sequence[Outgoing], window: int) -> None: ...

    async def consume(self, subscription: Subscription[Any], prefetch: int | None = None) -> Consumer:
        """Start consuming a queue; the broker stops the consumer on close."""
        consumer = await self._consume(subscription, prefetch or self.options.prefetch)
        self._consumers.append(consumer)
        return consumer

    @abc.abstractmethod
    async def _consume(self, subscription: Subscription[Any], prefetch: int) -> Consumer: ...

    @abc.abstractmethod
    async def take(self, queue: str, limit: int) -> list[Envelope]:
        """Remove up to `limit` messages from a queue and return them (dead-letter inspection, tests)."""

    @abc.abstractmethod
    async def peek(self, queue: str, limit: int = 1000) -> list[Envelope]:
        """Up to `limit` messages waiting in a queue, oldest first, left where they are (`skuflow dlq list`)."""

    @abc.abstractmethod
    async def replay(self, queue: str, message_id: str | None = None) -> int:
        """Move the dead letters of the work queue `queue` (all, or the one with `message_id`) back onto it,
        each with every attempt again (`Envelope.replayed`); answers how many moved."""

    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Remove every message ready in a queue (not those being handled); answers how many went."""

    @abc.abstractmethod
    async def queue_state(self, queue: str) -> QueueState:
        """A queue's ready messages and consumers, read together; `LookupError` for a queue not declared."""

    async def depth(self, queue: str) -> int:
        """Messages ready in a queue (not counting those delivered and not yet acked)."""
        return (await self.queue_state(queue)).ready

    def envelope(self, type: str, body: Any, **kwargs: Any) -> Envelope:
        """Build an envelope stamped with this broker's `app_id` (see `Envelope.new`)."""
        return Envelope.new(type, body, app_id=self.app_id, **kwargs)

    def _forget(self, consumer: Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)


def all_queue_names(topology: Topology, delays: Iterable[float]) -> list[str]:
    """Every queue a topology turns into: work queues, their DLQs and their wait queues."""
    names: list[str] = []
    for queue in topology.queues:
        names += [queue.name, dead_letter_queue(queue.name), *wait_queues(queue.name, delays)]
    return names
