"""An in-process broker with RabbitMQ's semantics, for `skuflow up` with no server to install.

A `MemoryHub` plays the server: exchanges, bindings and queues, shared by every `MemoryBroker` opened on
the same URL (`memory://` is the process's hub; `memory://NAME` a separate one, as tests use). A hub
lives while a broker uses it: when the last one closes, its queues go too. Wait
queues hold a message for their delay and then dead-letter it back to the work queue, adding to its
`x-death` exactly as RabbitMQ does, so that the consumer policy counts attempts the same way on both.
Nothing survives the process: that is the price of needing no server.

Memory is bounded: a queue holds at most `max_length` messages (ready or waiting; `MAX_QUEUE_LENGTH`).
A publish that would go past it is refused (`PublishRefused`, as RabbitMQ's `x-overflow: reject-publish`
answers a nack), so the publisher keeps the message: the outbox relay tries it again with backoff, and a
consumer that cannot put a message aside (its wait queue or DLQ full) hands it back. Inside the hub nothing
is dropped either: a wait queue's message whose work queue is full waits another round; a replay moves only
what fits; a message that can be neither retried nor dead-lettered returns to its own queue after the
longest retry delay (counted there). Only messages in flight (at most `prefetch` per consumer) may come
back over a bound.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from skuflow.messaging.broker import Broker, BrokerOptions, Outgoing, PublishRefused, QueueState, Subscription
from skuflow.messaging.consumer import RepublishingDelivery, batcher_for, handle_delivery
from skuflow.messaging.envelope import DEATHS, REASON, Envelope
from skuflow.messaging.topology import Topology, dead_letter_queue, wait_queue

log = logging.getLogger("skuflow.messaging.memory")

# Per queue: ~100-200 MB of envelopes when full. Far beyond a healthy backlog (consumers drain thousands a
# second); what reaches it is a queue nobody drains, such as dead letters piling up for days.
MAX_QUEUE_LENGTH = 100_000


@dataclass
class _Queue:
    name: str
    # A wait queue: hold each message `ttl` seconds, then move it to `dead_letter_to`.
    ttl: float | None = None
    dead_letter_to: str | None = None
    ready: deque[Envelope] = field(default_factory=deque)
    waiting: int = 0
    consumers: int = 0  # of every broker on the hub, as RabbitMQ counts them
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def get(self) -> Envelope:
        while not self.ready:
            self.changed.clear()
            await self.changed.wait()
        # No await between the check and the pop: a cancelled getter never loses a message.
        return self.ready.popleft()

    @property
    def length(self) -> int:
        """Messages held: ready, and waiting (in a wait queue, or handed back for later)."""
        return len(self.ready) + self.waiting

    def put(self, envelope: Envelope, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(envelope)
        else:
            self.ready.append(envelope)
        self.changed.set()


class MemoryHub:
    _hubs: ClassVar[weakref.WeakValueDictionary[str, MemoryHub]] = weakref.WeakValueDictionary()

    def __init__(self, max_length: int = MAX_QUEUE_LENGTH) -> None:
        self.max_length = max_length  # messages per queue (see the module's docstring)
        self.exchanges: dict[str, str] = {}  # name -> kind
        self.bindings: dict[str, list[tuple[str, str]]] = {}  # exchange -> [(queue, routing key)]
        self.queues: dict[str, _Queue] = {}

    @classmethod
    def for_url(cls, url: str) -> MemoryHub:
        name = url.removeprefix("memory://").strip("/")
        hub = cls._hubs.get(name)
        if hub is None:
            hub = cls._hubs[name] = cls()
        return hub

    def declare(self, topology: Topology, delays: Sequence[float]) -> None:
        for exchange in topology.exchanges:
            self.exchanges.setdefault(exchange.name, exchange.kind)
        for queue in topology.queues:
            self.queues.setdefault(queue.name, _Queue(queue.name))
            dlq = dead_letter_queue(queue.name)
            self.queues.setdefault(dlq, _Queue(dlq))
            for delay in delays:
                name = wait_queue(queue.name, delay)
                self.queues.setdefault(name, _Queue(name, ttl=delay, dead_letter_to=queue.name))
            binding = (queue.name, queue.routing_key)
            bound = self.bindings.setdefault(queue.exchange.name, [])
            if binding not in bound:
                bound.append(binding)

    def route(self, outgoing: Outgoing) -> list[_Queue]:
        if outgoing.exchange == "":
            target = self.queues.get(outgoing.routing_key)
            return [target] if target else []
        kind = self.exchanges.get(outgoing.exchange)
        if kind is None:
            raise PublishRefused.undeclared(outgoing)
        return [
            self.queues[queue]
            for queue, key in self.bindings.get(outgoing.exchange, [])
            if kind == "fanout" or key == outgoing.routing_key
        ]

    def has_room(self, queue: _Queue) -> bool:
        return queue.length < self.max_length

    def refuse_if_full(self, outgoing: Outgoing, queues: Sequence[_Queue]) -> None:
        """Refuse the whole message when one of its queues is full (none gets a copy: the publisher sends it
        again later, whole)."""
        for queue in queues:
            if not self.has_room(queue):
                raise PublishRefused.one(
                    outgoing,
                    f"queue {queue.name!r} is full ({queue.length:,} messages; the in-process broker holds at "
                    f"most {self.max_length:,} a queue): it takes more as its consumers drain it "
                    "(dead letters: `skuflow dlq list`, `skuflow dlq replay`), or use RabbitMQ",
                )

    def deliver(self, queue: _Queue, envelope: Envelope) -> None:
        if queue.ttl is None:
            queue.put(envelope)
            return
        queue.waiting += 1
        asyncio.get_running_loop().call_later(queue.ttl, self._expire, queue, envelope)

    def _expire(self, queue: _Queue, envelope: Envelope) -> None:
        assert queue.dead_letter_to is not None
        target = self.queues[queue.dead_letter_to]
        if not self.has_room(target):  # it waits another round here, still counted, rather than overfill it
            asyncio.get_running_loop().call_later(queue.ttl or 1.0, self._expire, queue, envelope)
            return
        queue.waiting -= 1
        target.put(_with_death(envelope, queue.name, queue.dead_letter_to))

    def hand_back(self, queue: _Queue, envelope: Envelope, delay: float) -> None:
        """Put `envelope` back on `queue` after `delay` seconds, counted there meanwhile."""
        queue.waiting += 1

        def back() -> None:
            queue.waiting -= 1
            queue.put(envelope)

        asyncio.get_running_loop().call_later(delay, back)


def _with_death(envelope: Envelope, queue: str, routing_key: str) -> Envelope:
    """Record an expiry in `x-death` as RabbitMQ does: one entry per (queue, reason), newest first."""
    deaths = [dict(death) for death in envelope.headers.get(DEATHS) or []]
    entry = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == "expired"), None)
    if entry is None:
        entry = {"queue": queue, "reason": "expired", "count": 0, "exchange": "", "routing-keys": [routing_key]}
    else:
        deaths.remove(entry)
    entry["count"] = int(entry["count"]) + 1
    entry["time"] = datetime.now(UTC)
    return envelope.with_headers(**{DEATHS: [entry, *deaths]})


class MemoryBroker(Broker):
    system = "memory"

    def __init__(self, url: str = "memory://", app_id: str = "skuflow", options: BrokerOptions | None = None) -> None:
        super().__init__(app_id, options or BrokerOptions())
        self.url = url
        self._hub: MemoryHub | None = None

    @property
    def hub(self) -> MemoryHub:
        if self._hub is None:
            raise RuntimeError("the broker is not connected: call connect() first")
        return self._hub

    async def connect(self) -> None:
        self._hub = MemoryHub.for_url(self.url)

    @property
    def is_connected(self) -> bool:
        return self._hub is not None

    async def _disconnect(self) -> None:
        self._hub = None

    async def declare(self, topology: Topology) -> None:
        self.hub.declare(topology, self.options.retry_delays)

    async def _publish_many(self, messages: Sequence[Outgoing], window: int) -> None:
        hub = self.hub
        refusals: list[PublishRefused] = []
        for outgoing in messages:  # as mandatory publishes: what cannot be routed is refused, the rest goes
            try:
                queues = hub.route(outgoing)
                if not queues:
                    raise PublishRefused.unroutable(outgoing)
                hub.refuse_if_full(outgoing, queues)
            except PublishRefused as refusal:
                refusals.append(refusal)
                continue
            for queue in queues:
                hub.deliver(queue, outgoing.envelope)
            self.stats.count_published(outgoing)
        await asyncio.sleep(0)  # a publish is a suspension point on every broker
        if refusals:
            raise PublishRefused.of(refusals, len(messages))

    async def _consume(self, subscription: Subscription[Any], prefetch: int) -> _MemoryConsumer:
        for name in (
            dead_letter_queue(subscription.queue),
            *(wait_queue(subscription.queue, delay) for delay in self.options.retry_delays),
        ):
            self._queue(name)
        queue = self._queue(subscription.queue)
        consumer = _MemoryConsumer(self, queue, subscription, prefetch)
        consumer.start()
        return consumer

    async def take(self, queue: str, limit: int) -> list[Envelope]:
        source = self._queue(queue)
        taken: list[Envelope] = []
        while source.ready and len(taken) < limit:
            taken.append(source.ready.popleft())
        return taken

    async def peek(self, queue: str, limit: int = 1000) -> list[Envelope]:
        return list(self._queue(queue).ready)[:limit]

    async def replay(self, queue: str, message_id: str | None = None) -> int:
        target, letters = self._queue(queue), self._queue(dead_letter_queue(queue))
        chosen = [letter for letter in letters.ready if message_id is None or letter.message_id == message_id]
        chosen = chosen[: max(0, self.hub.max_length - target.length)]  # what fits; the rest stays dead-lettered
        for letter in chosen:
            letters.ready.remove(letter)
            target.put(letter.replayed())
        await asyncio.sleep(0)
        return len(chosen)

    async def purge(self, queue: str) -> int:
        source = self._queue(queue)
        purged = len(source.ready)
        source.ready.clear()
        return purged

    async def queue_state(self, queue: str) -> QueueState:
        source = self._queue(queue)
        return QueueState(ready=source.length, consumers=source.consumers)

    def _queue(self, name: str) -> _Queue:
        try:
            return self.hub.queues[name]
        except KeyError:
            raise LookupError(f"no queue {name!r}: declare the topology (with these retry delays) first") from None


class _MemoryDelivery(RepublishingDelivery):
    settled = False

    async def ack(self) -> None:
        self.settled = True


class _MemoryConsumer:
    def __init__(self, broker: MemoryBroker, queue: _Queue, subscription: Subscription[Any], prefetch: int) -> None:
        self._broker = broker
        self._queue = queue
        self._subscription = subscription
        self._batcher = batcher_for(subscription, broker.options, broker.tracing)
        self._slots = asyncio.Semaphore(prefetch)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def queue(self) -> str:
        return self._subscription.queue

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._pump = asyncio.create_task(self._run(), name=f"consume {self.queue}")
        self._queue.consumers += 1

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                envelope = await self._queue.get()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            task = asyncio.create_task(self._process(envelope))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _process(self, envelope: Envelope) -> None:
        delivery = _MemoryDelivery(self._broker, self.queue, envelope)
        try:
            await handle_delivery(self._subscription, delivery, self._broker, self._batcher)
        except asyncio.CancelledError:
            # Stopped past the grace period: like an unacked message on a closed channel, back it goes.
            if not delivery.settled:
                self._queue.put(envelope, front=True)
            raise
        except Exception as error:
            if not delivery.settled:
                self._set_aside(envelope, error)
        finally:
            self._slots.release()

    def _set_aside(self, envelope: Envelope, error: Exception) -> None:
        """A delivery that could not be settled (its retry or its dead-lettering refused, a full queue):
        to the DLQ as on RabbitMQ, where the consumer rejects it and the queue's own dead-lettering takes
        over; or, with the DLQ full too, back to its queue after the longest retry delay, never dropped."""
        hub = self._broker.hub
        letters = hub.queues[dead_letter_queue(self.queue)]
        if hub.has_room(letters):
            log.exception("could not settle %s from %s; moving it to the DLQ", envelope.message_id, self.queue)
            letters.put(envelope.with_headers(**{REASON: f"could not settle: {error!r}"}))
            return
        delay = max(self._broker.options.retry_delays)
        log.error(
            "could not settle %s from %s (%r) and its DLQ is full: back on the queue in %ss",
            envelope.message_id,
            self.queue,
            error,
            delay,
        )
        hub.hand_back(self._queue, envelope, delay)

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopped)

    async def _stop(self, grace: float | None) -> None:
        if self._pump is None:
            return
        pump, self._pump = self._pump, None
        pump.cancel()
        self._queue.consumers -= 1  # it takes no more, as a cancelled consumer on RabbitMQ
        await asyncio.gather(pump, return_exceptions=True)
        grace = self._broker.options.shutdown_grace if grace is None else grace
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._broker._forget(self)
