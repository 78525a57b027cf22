"""`skuflow bench bus`: the messaging layer beside raw aio-pika, same work, same process, same broker.

Each run declares a fresh fanout exchange with three durable queues for each side, publishes N persistent
messages with a window of publisher confirms in flight, then consumes the 3N deliveries (manual ack,
prefetch 100) from the full queues. Raw aio-pika is written the obvious way; the layer adds what it always
does (envelope, JSON body, validation, the consumer policy). The sides alternate who goes first.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import aio_pika
import pydantic
from rich.table import Table

from skuflow.messaging import BrokerOptions, Exchange, Message, Outgoing, Queue, Subscription, Topology
from skuflow.messaging.amqp import AmqpBroker
from skuflow.messaging.topology import dead_letter_queue, wait_queue

QUEUES_PER_EXCHANGE = 3
PREFETCH = 100
_BENCH_DELAY = 60.0  # the layer declares one wait queue per delay; one is enough here


class BenchEvent(pydantic.BaseModel):
    sku: str
    n: int


@dataclass(frozen=True)
class Rates:
    publish: float  # messages/s
    consume: float  # deliveries/s


@dataclass(frozen=True)
class BusReport:
    messages: int
    window: int
    raw: list[Rates]
    layer: list[Rates]

    def median(self, side: str, figure: str) -> float:
        return float(statistics.median(getattr(rates, figure) for rates in getattr(self, side)))

    def ratio(self, figure: str) -> float:
        """The median of each run's layer/raw ratio: pairing the sides run by run cancels the broker's drift."""
        return float(
            statistics.median(
                getattr(layer, figure) / getattr(raw, figure) for raw, layer in zip(self.raw, self.layer, strict=True)
            )
        )

    def as_dict(self) -> dict[str, object]:
        summary = {
            f"{side}_{figure}_median": self.median(side, figure)
            for side in ("raw", "layer")
            for figure in ("publish", "consume")
        }
        ratios = {f"{figure}_ratio": self.ratio(figure) for figure in ("publish", "consume")}
        return {**asdict(self), **summary, **ratios}

    def table(self) -> Table:
        runs, window = len(self.raw), self.window
        table = Table(title=f"bench bus: {self.messages:,} messages x {runs} runs, fanout to 3 queues, window {window}")
        table.add_column("figure (median of runs)")
        table.add_column("raw aio-pika", justify="right")
        table.add_column("skuflow.messaging", justify="right")
        table.add_column("ratio (median of runs)", justify="right")
        for figure, unit in (("publish", "msg/s"), ("consume", "deliveries/s")):
            raw, layer = self.median("raw", figure), self.median("layer", figure)
            table.add_row(f"{figure} ({unit})", f"{raw:,.0f}", f"{layer:,.0f}", f"{self.ratio(figure):.2f}x")
        return table


async def run(url: str, messages: int, runs: int, window: int, progress: Callable[[str], None]) -> BusReport:
    raw: list[Rates] = []
    layer: list[Rates] = []
    for n in range(runs):
        sides: list[tuple[str, Callable[[str, int, int], Awaitable[Rates]], list[Rates]]] = [
            ("raw aio-pika", _raw, raw),
            ("skuflow.messaging", _layer, layer),
        ]
        if n % 2:
            sides.reverse()
        for name, measure, into in sides:
            rates = await measure(url, messages, window)
            into.append(rates)
            progress(f"run {n + 1}/{runs} {name}: publish {rates.publish:,.0f} msg/s, consume {rates.consume:,.0f}/s")
    return BusReport(messages, window, raw, layer)


def bench_names(side: str) -> tuple[str, list[str]]:
    prefix = f"bench.{uuid.uuid4().hex[:8]}.{side}"
    return prefix, [f"{prefix}.q{i}" for i in range(QUEUES_PER_EXCHANGE)]


async def _raw(url: str, messages: int, window: int) -> Rates:
    exchange_name, queue_names = bench_names("raw")
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.FANOUT, durable=True)
        queues = []
        for name in queue_names:
            queue = await channel.declare_queue(name, durable=True)
            await queue.bind(exchange)
            queues.append(queue)

        slots = asyncio.Semaphore(window)
        correlation_id = uuid.uuid4().hex

        async def publish(n: int) -> None:
            async with slots:
                # The same properties as the layer's envelope (CONTRACT section 2): the same work.
                message = aio_pika.Message(
                    json.dumps({"sku": f"SKU-{n}", "n": n}).encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=uuid.uuid4().hex,
                    correlation_id=correlation_id,
                    type="bench_event",
                    timestamp=datetime.now(UTC),
                    app_id="bench",
                )
                await exchange.publish(message, routing_key="")

        started = time.perf_counter()
        await asyncio.gather(*(publish(n) for n in range(messages)))
        publish_rate = messages / (time.perf_counter() - started)

        remaining = messages * len(queues)
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal remaining
            json.loads(message.body)
            await message.ack()
            remaining -= 1
            if remaining == 0:
                done.set()

        started = time.perf_counter()
        tags = [(queue, await queue.consume(on_message)) for queue in queues]
        await done.wait()
        consume_rate = messages * len(queues) / (time.perf_counter() - started)
        for queue, tag in tags:
            await queue.cancel(tag)

        for name in queue_names:
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange_name)
        return Rates(publish_rate, consume_rate)
    finally:
        await connection.close()


async def _layer(url: str, messages: int, window: int) -> Rates:
    exchange_name, queue_names = bench_names("layer")
    exchange = Exchange(exchange_name, "fanout")
    topology = Topology((exchange,), tuple(Queue(name, exchange) for name in queue_names))
    broker = AmqpBroker(url, "bench", BrokerOptions(retry_delays=(_BENCH_DELAY,), prefetch=PREFETCH))
    await broker.connect()
    try:
        await broker.declare(topology)
        started = time.perf_counter()
        await broker.publish_many(
            [
                Outgoing(broker.envelope("bench_event", BenchEvent(sku=f"SKU-{n}", n=n)), exchange_name)
                for n in range(messages)
            ],
            window=window,
        )
        publish_rate = messages / (time.perf_counter() - started)

        remaining = messages * len(queue_names)
        done = asyncio.Event()

        async def count(_: Message[BenchEvent]) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                done.set()

        started = time.perf_counter()
        for name in queue_names:
            await broker.consume(Subscription(name, "bench_event", BenchEvent, count))
        await done.wait()
        consume_rate = messages * len(queue_names) / (time.perf_counter() - started)
        await broker.close()  # drains the consumers before the queues go

        await delete_bench_objects(url, exchange_name, queue_names)
        return Rates(publish_rate, consume_rate)
    finally:
        await broker.close()


async def delete_bench_objects(url: str, exchange_name: str, queue_names: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection, connection.channel() as channel:
        for name in queue_names:
            for queue in (name, dead_letter_queue(name), wait_queue(name, _BENCH_DELAY)):
                await channel.queue_delete(queue)
        await channel.exchange_delete(exchange_name)
