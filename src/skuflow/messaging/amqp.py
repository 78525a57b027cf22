"""RabbitMQ through aio-pika: a robust connection, a confirming publisher channel, a channel per consumer.

Durable exchanges and queues, persistent messages, publisher confirms, `mandatory` publishes (an
unroutable message raises instead of vanishing), manual acks after the handler returns. The robust
connection reconnects by itself and restores the declared topology and the consumers; a publish during
an outage waits and retries until `publish_timeout`, then raises `PublishError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq.abc
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq import spec
from yarl import URL

from skuflow.messaging.acking import ChannelAcks
from skuflow.messaging.broker import (
    Broker,
    BrokerOptions,
    Outgoing,
    PublishError,
    PublishRefused,
    QueueState,
    Subscription,
)
from skuflow.messaging.consumer import RepublishingDelivery, batcher_for, handle_delivery
from skuflow.messaging.envelope import CAUSATION_ID, CONTENT_TYPE, Envelope, text
from skuflow.messaging.topology import Topology, dead_letter_queue, wait_queue

log = logging.getLogger("skuflow.messaging.amqp")

_RECONNECT_BACKOFF_MAX = 2.0
_MISSING_FOR = 1.0  # seconds an exchange found missing is believed missing
_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
_RECONNECT_INTERVAL = 1.0  # aio-pika's default of 5 s leaves consumers idle longer than needed


class AmqpBroker(Broker):
    def __init__(self, url: str, app_id: str, options: BrokerOptions | None = None) -> None:
        super().__init__(app_id, options or BrokerOptions())
        self.url = url
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._missing: dict[str, float] = {}  # exchanges found missing, until when (loop time) to believe it
        self._declared: set[str] = set()  # work queues this client declared, with their DLQ and wait queues

    async def connect(self) -> None:
        url = URL(self.url)
        if "reconnect_interval" not in url.query:  # the URL may set its own
            url = url.update_query(reconnect_interval=_RECONNECT_INTERVAL)
        self._connection = await aio_pika.connect_robust(url, client_properties={"connection_name": self.app_id})
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)

    async def _disconnect(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None
        self._exchanges.clear()

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("the broker is not connected: call connect() first")
        return self._channel

    async def declare(self, topology: Topology) -> None:
        channel = self.channel
        for exchange in topology.exchanges:
            self._exchanges[exchange.name] = await channel.declare_exchange(
                exchange.name, aio_pika.ExchangeType(exchange.kind), durable=True
            )
        for queue in topology.queues:
            dlq = dead_letter_queue(queue.name)
            await channel.declare_queue(dlq, durable=True)
            for delay in self.options.retry_delays:
                await channel.declare_queue(
                    wait_queue(queue.name, delay),
                    durable=True,
                    arguments={
                        "x-message-ttl": round(delay * 1000),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": queue.name,
                    },
                )
            # The queue's own dead-lettering is a safety net (rejections outside the consumer policy);
            # the policy itself republishes to the DLQ with the reason.
            work = await channel.declare_queue(
                queue.name,
                durable=True,
                arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
            )
            await work.bind(self._exchanges[queue.exchange.name], routing_key=queue.routing_key)
            self._declared.add(queue.name)

    async def _exchange(self, outgoing: Outgoing) -> AbstractExchange:
        """The exchange to publish to: declared by this client, or found on the broker (checked once, and a
        missing one believed missing for a second, so that a batch to it does not probe once a message)."""
        name = outgoing.exchange
        if name == "":
            return self.channel.default_exchange
        if name not in self._exchanges:
            if self._connection is None:
                raise RuntimeError("the broker is not connected: call connect() first")
            now = asyncio.get_running_loop().time()
            if self._missing.get(name, 0.0) > now:
                raise PublishRefused.undeclared(outgoing)
            try:
                async with self._connection.channel() as probe:  # a failed passive declare closes its channel
                    await probe.declare_exchange(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                self._missing[name] = now + _MISSING_FOR
                raise PublishRefused.undeclared(outgoing) from None
            self._missing.pop(name, None)
            self._exchanges[name] = await self.channel.get_exchange(name, ensure=False)
        return self._exchanges[name]

    async def _publish_many(self, messages: Sequence[Outgoing], window: int) -> None:
        if len(messages) == 1:
            await self._publish(messages[0])
            return
        slots = asyncio.Semaphore(window)
        refusals: list[PublishRefused] = []

        async def one(outgoing: Outgoing) -> None:
            async with slots:
                try:
                    await self._publish(outgoing)
                except PublishRefused as refusal:  # this message only: the others go on
                    refusals.append(refusal)

        try:
            async with asyncio.TaskGroup() as group:  # an unreachable broker cancels the rest
                for outgoing in messages:
                    group.create_task(one(outgoing))
        except* PublishError as errors:
            raise errors.exceptions[0] from None
        if refusals:
            raise PublishRefused.of(refusals, len(messages))

    async def _publish(self, outgoing: Outgoing) -> None:
        properties = _properties(outgoing.envelope)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.publish_timeout
        backoff = 0.05
        while True:
            try:
                exchange = await self._exchange(outgoing)
                # The robust channel hands its channel over once the connection is back: bounded, as the publish.
                async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                    channel = await self.channel.get_underlay_channel()
                    await channel.basic_publish(
                        outgoing.envelope.body,
                        exchange=exchange.name,
                        routing_key=outgoing.routing_key,
                        properties=properties,
                        mandatory=True,
                    )
            except aiormq.exceptions.PublishError:
                raise PublishRefused.unroutable(outgoing) from None
            except aiormq.exceptions.DeliveryError:
                raise PublishRefused.one(outgoing, f"the broker refused (nack) {outgoing.envelope.type}") from None
            except PublishError:
                raise
            except aiormq.exceptions.ChannelNotFoundEntity:
                # An exchange was deleted under us (the broker closed the channel; it reopens by itself). Every
                # publish in flight on the channel lands here: each looks its exchange up again, and only
                # those whose exchange is gone are refused.
                self._exchanges.pop(outgoing.exchange, None)
                continue
            except Exception as error:  # connection or channel lost: the robust connection is recovering
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise PublishError(f"broker unreachable for {self.options.publish_timeout}s: {error!r}") from error
                log.warning("publish of %s failed (%r); retrying in %.2fs", outgoing.envelope.type, error, backoff)
                await asyncio.sleep(min(backoff, remaining))
                backoff = min(backoff * 2, _RECONNECT_BACKOFF_MAX)
                continue
            self.stats.count_published(outgoing)
            return

    async def _consume(self, subscription: Subscription[Any], prefetch: int) -> _AmqpConsumer:
        if self._connection is None:
            raise RuntimeError("the broker is not connected: call connect() first")
        if subscription.queue not in self._declared:  # declared by another client: check it all exists
            for name in (
                subscription.queue,
                dead_letter_queue(subscription.queue),
                *(wait_queue(subscription.queue, delay) for delay in self.options.retry_delays),
            ):
                await self.depth(name)  # raises LookupError unless declared with these retry delays
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        # ensure=True declares (passively) through the robust channel, which then restores the consumer
        # after a reconnection; ensure=False would not.
        queue = await channel.get_queue(subscription.queue, ensure=True)
        consumer = _AmqpConsumer(self, channel, queue, subscription)
        await consumer.start()
        return consumer

    async def take(self, queue: str, limit: int) -> list[Envelope]:
        return await self._get(queue, limit, settle=True)

    async def peek(self, queue: str, limit: int = 1000) -> list[Envelope]:
        # Taken without acknowledging: closing the channel hands every one back, in its place.
        return await self._get(queue, limit, settle=False)

    async def _get(self, queue: str, limit: int, *, settle: bool) -> list[Envelope]:
        """Up to `limit` messages from `queue`, one basic.get each, on a channel of their own; acked if
        `settle`, else handed back when that channel closes."""
        if self._connection is None:
            raise RuntimeError("the broker is not connected: call connect() first")
        await self.depth(queue)  # raises LookupError for a queue that does not exist
        got: list[Envelope] = []
        async with self._connection.channel() as channel:
            source = await channel.get_queue(queue, ensure=False)
            while len(got) < limit:
                message = await source.get(no_ack=False, fail=False)
                if message is None:
                    break
                got.append(_from_amqp(message))
                if settle:
                    await message.ack()
        return got

    async def replay(self, queue: str, message_id: str | None = None) -> int:
        if self._connection is None:
            raise RuntimeError("the broker is not connected: call connect() first")
        letters = dead_letter_queue(queue)
        await self.depth(queue)
        # Only the letters there now: one replayed that fails again comes back to the end of the queue.
        waiting = await self.depth(letters)
        moved = 0
        async with self._connection.channel(publisher_confirms=True) as channel:
            source = await channel.get_queue(letters, ensure=False)
            for _ in range(waiting):
                message = await source.get(no_ack=False, fail=False)
                if message is None:
                    break
                letter = _from_amqp(message)
                if message_id is not None and letter.message_id != message_id:
                    continue  # left unacknowledged: back in the dead-letter queue when the channel closes
                # Confirmed on the work queue before it leaves the dead letters: never lost, at worst twice.
                replayed = letter.replayed()
                await (await channel.get_underlay_channel()).basic_publish(
                    replayed.body, routing_key=queue, properties=_properties(replayed), mandatory=True
                )
                await message.ack()
                moved += 1
        return moved

    async def purge(self, queue: str) -> int:
        if self._connection is None:
            raise RuntimeError("the broker is not connected: call connect() first")
        await self.depth(queue)  # raises LookupError for a queue that does not exist
        async with self._connection.channel() as channel:
            purged = await (await channel.get_queue(queue, ensure=False)).purge()
        return int(purged.message_count or 0)

    async def queue_state(self, queue: str) -> QueueState:
        if self._connection is None:
            raise RuntimeError("the broker is not connected: call connect() first")
        try:
            async with self._connection.channel() as channel:  # a failed passive declare closes its channel
                declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise LookupError(f"no queue {queue!r}: declare the topology (with these retry delays) first") from None
        result = declared.declaration_result
        return QueueState(ready=int(result.message_count or 0), consumers=int(result.consumer_count or 0))


class _AmqpDelivery(RepublishingDelivery):
    def __init__(self, broker: AmqpBroker, queue: str, message: AbstractIncomingMessage, acks: ChannelAcks) -> None:
        super().__init__(broker, queue, _from_amqp(message))
        self._tag = self.tag = _tag(message)
        self._acks = acks

    async def ack(self) -> None:
        await self._acks.ack(self._tag)


class _AmqpConsumer:
    def __init__(
        self, broker: AmqpBroker, channel: AbstractChannel, queue: AbstractQueue, subscription: Subscription[Any]
    ) -> None:
        self._broker = broker
        self._channel = channel
        self._queue = queue
        self._subscription = subscription
        self._batcher = batcher_for(subscription, broker.options, broker.tracing)
        self._tag: str | None = None
        self._acks: ChannelAcks | None = None  # of the channel now delivering; a reopened one gets its own
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None

    @property
    def queue(self) -> str:
        return self._subscription.queue

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            acks = self._acks_of(message.channel)
        except aiormq.exceptions.ChannelInvalidStateError:
            return  # its channel closed: the broker delivers it again
        acks.delivered(_tag(message))
        if self._stopping:
            return  # left unacked: closing the channel hands it back to the queue
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await handle_delivery(
                self._subscription,
                _AmqpDelivery(self._broker, self.queue, message, acks),
                self._broker,
                self._batcher,
            )
        except Exception:
            # Settling failed: the retry or dead-letter copy could not be published. If the channel died
            # under us, the broker redelivers. If it lives, reject without requeue: the queue's own
            # dead-lettering moves the message to the DLQ, instead of redelivering it in a tight loop.
            log.exception("could not settle %s from %s; rejecting it to the DLQ", message.message_id, self.queue)
            if not self._channel.is_closed:
                try:
                    await acks.reject(_tag(message))
                except Exception:
                    log.debug("reject failed too; the broker will redeliver", exc_info=True)
        finally:
            self._tasks.discard(task)

    def _acks_of(self, channel: aiormq.abc.AbstractChannel) -> ChannelAcks:
        if self._acks is None or self._acks.channel is not channel:
            self._acks = ChannelAcks(channel)
        return self._acks

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopped)

    async def _stop(self, grace: float | None) -> None:
        self._stopping = True
        grace = self._broker.options.shutdown_grace if grace is None else grace
        try:
            if self._tag is not None and not self._channel.is_closed:
                try:
                    await self._queue.cancel(self._tag, timeout=5)
                except Exception:
                    log.debug("cancel of %s failed", self.queue, exc_info=True)
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
                if pending:
                    log.warning(
                        "%s: %d message(s) still in flight after %ss go back to the queue",
                        self.queue,
                        len(pending),
                        grace,
                    )
            # Closing the channel cancels what is still running; its unacked messages return to the queue.
            await self._channel.close()
        finally:
            self._broker._forget(self)


async def unreachable(url: str, seconds: float = 10.0) -> str | None:
    """Why RabbitMQ at `url` does not accept an AMQP connection, or None when it does. The AMQP port itself:
    the management API may answer while it does not. Callers name the URL, its password hidden."""
    try:
        connection = await aio_pika.connect(url, timeout=seconds)
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as error:
        return str(error) or type(error).__name__
    await connection.close()
    return None


def _tag(message: AbstractIncomingMessage) -> int:
    assert message.delivery_tag is not None  # None only for a message published, never for a delivery
    return message.delivery_tag


def _properties(envelope: Envelope) -> spec.Basic.Properties:
    """The envelope's AMQP properties, built directly: aio-pika's `Message` would build the same after
    checking and copying each field, a cost paid per publish."""
    headers: dict[str, Any] = _writable(dict(envelope.headers))
    if envelope.causation_id is not None:
        headers[CAUSATION_ID] = envelope.causation_id
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=_PERSISTENT,
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        message_type=envelope.type,
        timestamp=envelope.timestamp,
        app_id=envelope.app_id,
        headers=headers,
    )


def _writable(value: Any) -> Any:
    """A header value pamqp can write. It reads a long string that is not UTF-8 (another client's) as `bytes`,
    which it cannot write back: a retry's or dead letter's copy of such a message would never publish. Bytes
    go out as an AMQP byte array instead."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {key: _writable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(item) for item in value]
    return value


def _from_amqp(message: AbstractIncomingMessage) -> Envelope:
    headers: dict[str, Any] = dict(message.headers or {})
    causation = headers.pop(CAUSATION_ID, None)
    timestamp = message.timestamp or datetime.now(UTC)
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return Envelope(
        type=message.type or "",
        body=message.body,
        app_id=message.app_id or "",
        message_id=message.message_id or "",
        correlation_id=message.correlation_id or "",
        causation_id=text(causation) or None,
        timestamp=timestamp,
        headers=headers,
    )
