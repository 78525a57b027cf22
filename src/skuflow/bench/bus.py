"""`skuflow bench bus`: the messaging layer beside raw aio-pika, same work, same process, same broker.

Each run declares a fresh fanout exchange with three durable queues for each side, publishes N persistent
messages with a window of publisher confirms in flight, then consumes the 3N deliveries (manual ack,
prefetch 100) from the full queues. Raw aio-pika is written the obvious way; the layer adds what it always
does (envelope, JSON body, validation, the consumer policy). With `against="faststream"` FastStream (the
`bench` extra, imported only by its side) does the same work as a third side, written as its users would.
With `against="traced"` the third side is the layer again with a tracer (a PRODUCER span per publish, a
CONSUMER span per delivery): each run a fresh SDK tracer provider (`service.name` "bench") exporting with a
BatchSpanProcessor and the OTLP/HTTP exporter to the bench's sink (`otlp_sink`, a process of its own), as a
service exports when OTEL_EXPORTER_OTLP_ENDPOINT is set (OTEL_BSP_* apply). The exporter works in its
background thread during the timed parts, as it would in a service; the final flush of what is still queued
when the consumers are done is outside the timing, and its seconds are reported beside the spans the sink
received, so that a span the processor dropped (its queue full) shows.
Raw is always measured: every ratio is paired run by run. The sides take turns going first.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import aio_pika
import pydantic
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from rich.table import Table

from skuflow.bench.otlp_sink import OtlpSink, otlp_sink
from skuflow.messaging import BrokerOptions, Exchange, Message, Outgoing, Queue, Subscription, Topology
from skuflow.messaging.amqp import AmqpBroker
from skuflow.messaging.topology import dead_letter_queue, wait_queue
from skuflow.messaging.tracing import SCHEMA_URL

QUEUES_PER_EXCHANGE = 3
PREFETCH = 100
_BENCH_DELAY = 60.0  # the layer declares one wait queue per delay; one is enough here
AGAINST = ("raw", "faststream", "traced")
FASTSTREAM_INSTALL = "pip install 'skuflow[bench]'"
SIDE_NAMES = {
    "raw": "raw aio-pika",
    "layer": "skuflow.messaging",
    "faststream": "FastStream",
    "traced": "skuflow.messaging, traced",
}
_SHORT_NAMES = {"raw": "raw", "layer": "layer", "faststream": "FastStream", "traced": "traced"}  # ratios' headings
# The ratios reported besides layer/raw: (JSON key prefix, side, baseline). `publish_ratio` stays layer/raw.
THIRD_SIDE_RATIOS = {
    "faststream": (("faststream_raw_", "faststream", "raw"), ("layer_faststream_", "layer", "faststream")),
    "traced": (("traced_raw_", "traced", "raw"), ("traced_layer_", "traced", "layer")),
}


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
    faststream: list[Rates] = field(default_factory=list)  # empty unless measured
    traced: list[Rates] = field(default_factory=list)  # empty unless measured
    spans: list[int] = field(default_factory=list)  # traced: spans the sink received, each run
    flush_seconds: list[float] = field(default_factory=list)  # traced: each run's final flush, not timed

    @property
    def against(self) -> str:
        return "faststream" if self.faststream else "traced" if self.traced else "raw"

    @property
    def sides(self) -> tuple[str, ...]:
        return ("raw", "layer") if self.against == "raw" else ("raw", "layer", self.against)

    @property
    def ratios(self) -> tuple[tuple[str, str, str], ...]:
        """(JSON key prefix, side, baseline) of each ratio reported; `publish_ratio` stays layer/raw."""
        return (("", "layer", "raw"), *THIRD_SIDE_RATIOS.get(self.against, ()))

    @property
    def spans_expected(self) -> int:
        """Spans of a traced run: one per publish, one per delivery."""
        return self.messages * (1 + QUEUES_PER_EXCHANGE)

    def median(self, side: str, figure: str) -> float:
        return float(statistics.median(getattr(rates, figure) for rates in getattr(self, side)))

    def ratio(self, figure: str, side: str = "layer", baseline: str = "raw") -> float:
        """The median of each run's side/baseline ratio: pairing the sides run by run cancels the broker's drift."""
        pairs = zip(getattr(self, side), getattr(self, baseline), strict=True)
        return float(statistics.median(getattr(mine, figure) / getattr(theirs, figure) for mine, theirs in pairs))

    def as_dict(self) -> dict[str, object]:
        summary = {
            f"{side}_{figure}_median": self.median(side, figure)
            for side in self.sides
            for figure in ("publish", "consume")
        }
        ratios = {
            f"{prefix}{figure}_ratio": self.ratio(figure, side, baseline)
            for prefix, side, baseline in self.ratios
            for figure in ("publish", "consume")
        }
        traced: dict[str, object] = {}
        if self.traced:
            traced = {
                "spans_expected": self.spans_expected,
                "spans_median": statistics.median(self.spans),
                "flush_seconds_median": statistics.median(self.flush_seconds),
            }
        return {**asdict(self), "against": self.against, **summary, **ratios, **traced}

    def table(self) -> Table:
        runs, window = len(self.raw), self.window
        caption = "rates: median of runs; ratios: median of per-run ratios"
        if self.traced:
            caption += (
                f"\ntraced: spans over OTLP/HTTP to a local sink (BatchSpanProcessor), "
                f"{statistics.median(self.spans):,.0f} of {self.spans_expected:,} received (median of runs); "
                f"the final flush ({statistics.median(self.flush_seconds):.2f} s) is outside the timing"
            )
        table = Table(
            title=f"bench bus: {self.messages:,} messages x {runs} runs, fanout to 3 queues, window {window}",
            caption=caption,
        )
        table.add_column("figure (median of runs)")
        for side in self.sides:
            table.add_column(SIDE_NAMES[side], justify="right")
        for _, side, baseline in self.ratios:
            table.add_column(f"{_SHORT_NAMES[side]} / {_SHORT_NAMES[baseline]}", justify="right")
        for figure, unit in (("publish", "msg/s"), ("consume", "deliveries/s")):
            rates = [f"{self.median(side, figure):,.0f}" for side in self.sides]
            ratios = [f"{self.ratio(figure, side, baseline):.2f}x" for _, side, baseline in self.ratios]
            table.add_row(f"{figure} ({unit})", *rates, *ratios)
        return table


def faststream_installed() -> bool:
    return importlib.util.find_spec("faststream") is not None


async def run(
    url: str, messages: int, runs: int, window: int, progress: Callable[[str], None], against: str = "raw"
) -> BusReport:
    sides = ["raw", "layer"] if against == "raw" else ["raw", "layer", against]
    rates: dict[str, list[Rates]] = {side: [] for side in sides}
    spans: list[int] = []
    flushes: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        sink = await stack.enter_async_context(otlp_sink()) if against == "traced" else None

        async def traced(url: str, messages: int, window: int) -> Rates:
            assert sink is not None
            measured, received, flush = await _traced(url, messages, window, sink)
            spans.append(received)
            flushes.append(flush)
            return measured

        measures: dict[str, Callable[[str, int, int], Awaitable[Rates]]] = {
            "raw": _raw,
            "layer": _layer,
            "faststream": _faststream,
            "traced": traced,
        }
        for n in range(runs):
            first = n % len(sides)  # each run starts with the next side, so that none always goes first
            for side in sides[first:] + sides[:first]:
                measured = await measures[side](url, messages, window)
                rates[side].append(measured)
                exported = f", {spans[-1]:,} spans received (flush {flushes[-1]:.2f} s)" if side == "traced" else ""
                progress(
                    f"run {n + 1}/{runs} {SIDE_NAMES[side]}: "
                    f"publish {measured.publish:,.0f} msg/s, consume {measured.consume:,.0f}/s{exported}"
                )
    return BusReport(
        messages,
        window,
        rates["raw"],
        rates["layer"],
        rates.get("faststream", []),
        rates.get("traced", []),
        spans,
        flushes,
    )


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


async def _traced(url: str, messages: int, window: int, sink: OtlpSink) -> tuple[Rates, int, float]:
    """The layer with a tracer whose spans go to the sink; the spans the sink received of the run, and the
    seconds of the final flush (after the timed parts)."""
    # Imported here, as telemetry does: only a run that exports loads the exporter (and `requests`).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sink.traces_url)))
    before = await sink.received()
    try:
        rates = await _layer(url, messages, window, provider.get_tracer("skuflow.messaging", schema_url=SCHEMA_URL))
    finally:
        started = time.perf_counter()
        await asyncio.to_thread(provider.force_flush)
        flush = time.perf_counter() - started
        await asyncio.to_thread(provider.shutdown)
    return rates, (await sink.received()).spans - before.spans, flush


async def _layer(url: str, messages: int, window: int, tracer: Tracer | None = None) -> Rates:
    exchange_name, queue_names = bench_names("traced" if tracer else "layer")
    exchange = Exchange(exchange_name, "fanout")
    topology = Topology((exchange,), tuple(Queue(name, exchange) for name in queue_names))
    broker = AmqpBroker(url, "bench", BrokerOptions(retry_delays=(_BENCH_DELAY,), prefetch=PREFETCH))
    broker.tracing.use(tracer)
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


async def _faststream(url: str, messages: int, window: int) -> Rates:
    # The optional `bench` extra: imported here only, so that skuflow never needs it otherwise.
    from faststream import AckPolicy
    from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

    exchange_name, queue_names = bench_names("faststream")
    exchange = RabbitExchange(exchange_name, type=ExchangeType.FANOUT, durable=True)
    queues = [RabbitQueue(name, durable=True) for name in queue_names]
    broker = RabbitBroker(
        url,
        app_id="bench",
        # One channel for publishing and consuming, as raw has: confirms on (FastStream's default), and the
        # prefetch applies to each consumer.
        default_channel=Channel(prefetch_count=PREFETCH),
        # FastStream logs every delivery ("Received", "Processed") to stdout at INFO by default; the layer
        # logs none. Its logging still runs, into a logger of ours at the process's level (WARNING here).
        logger=logging.getLogger("skuflow.bench.faststream"),
    )
    publisher = broker.publisher(exchange=exchange, persist=True, message_type="bench_event")

    remaining = messages * len(queues)
    done = asyncio.Event()

    async def count(event: BenchEvent) -> None:  # FastStream validates the body into the model
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            done.set()

    for queue in queues:
        # Acked when the handler returns, rejected if it raises: a consumer with manual acks, as the others.
        broker.subscriber(queue, exchange, ack_policy=AckPolicy.REJECT_ON_ERROR)(count)

    try:
        await broker.connect()  # connected, publishing possible; the subscribers start with broker.start()
        await broker.declare_exchange(exchange)
        for queue in queues:
            await (await broker.declare_queue(queue)).bind(exchange_name)

        slots = asyncio.Semaphore(window)
        correlation_id = uuid.uuid4().hex

        async def publish(n: int) -> None:
            async with slots:  # each publish waits for its confirm; the window is ours, as with raw
                await publisher.publish(
                    BenchEvent(sku=f"SKU-{n}", n=n), message_id=uuid.uuid4().hex, correlation_id=correlation_id
                )

        started = time.perf_counter()
        await asyncio.gather(*(publish(n) for n in range(messages)))
        publish_rate = messages / (time.perf_counter() - started)

        started = time.perf_counter()
        await broker.start()
        await done.wait()
        consume_rate = messages * len(queues) / (time.perf_counter() - started)
        await broker.stop()  # waits for the handlers before the queues go

        await delete_bench_objects(url, exchange_name, queue_names)
        return Rates(publish_rate, consume_rate)
    finally:
        await broker.stop()


async def delete_bench_objects(url: str, exchange_name: str, queue_names: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection, connection.channel() as channel:
        for name in queue_names:
            for queue in (name, dead_letter_queue(name), wait_queue(name, _BENCH_DELAY)):
                await channel.queue_delete(queue)
        await channel.exchange_delete(exchange_name)
