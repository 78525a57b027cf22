"""The messaging layer's spans, on both brokers: a retried message and a dead letter replayed keep their trace;
a batch gives each message its own processing span, and one span for the batch linked to them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pydantic
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from skuflow.messaging import Broker, Message, Outgoing, Reject, Subscription, dead_letter_queue
from skuflow.messaging.tracing import SCHEMA_URL
from tests.conftest import BrokerFactory
from tests.support.waiting import wait_until

QUEUE = "catalog.sku_processed"


class SkuProcessed(pydantic.BaseModel):
    sku: str


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def traced(make_broker: BrokerFactory, spans: InMemorySpanExporter) -> Broker:
    broker = await make_broker()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    broker.tracing.use(provider.get_tracer("skuflow.messaging", schema_url=SCHEMA_URL))
    return broker


def subscription(handler, **batching) -> Subscription[SkuProcessed]:
    where = {"destination": f"sku_processed:{QUEUE}"}
    if batching:
        return Subscription.batched(QUEUE, "sku_processed", SkuProcessed, handler, batching["max_batch"], **where)
    return Subscription(QUEUE, "sku_processed", SkuProcessed, handler, **where)


async def publish(broker: Broker, *skus: str) -> None:
    messages = [Outgoing(broker.envelope("sku_processed", SkuProcessed(sku=sku)), "sku_processed") for sku in skus]
    await broker.publish_many(messages)


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if span.name == name]


async def test_a_retried_message_keeps_its_trace_to_its_last_attempt(make_broker: BrokerFactory, spans):
    broker = await traced(make_broker, spans)
    attempts: list[int] = []

    async def flaky(message: Message[SkuProcessed]) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("not yet")

    await broker.consume(subscription(flaky))
    await publish(broker, "SKU-1")
    await wait_until(lambda: len(named(spans, f"process sku_processed:{QUEUE}")) == 2, what="both attempts' spans")

    [first, second] = sorted(named(spans, f"process sku_processed:{QUEUE}"), key=lambda s: s.start_time or 0)
    [sent] = named(spans, "publish sku_processed")
    assert first.context.trace_id == second.context.trace_id == sent.context.trace_id
    assert (first.attributes["skuflow.messaging.attempt"], second.attributes["skuflow.messaging.attempt"]) == (1, 2)
    assert first.attributes["skuflow.messaging.outcome"] == "retried"
    assert not first.status.is_ok
    assert second.attributes["skuflow.messaging.outcome"] == "acked"
    assert first.kind is second.kind is SpanKind.CONSUMER


async def test_a_dead_letter_replayed_stays_in_its_trace(make_broker: BrokerFactory, spans):
    broker = await traced(make_broker, spans)
    refuse = True

    async def handle(message: Message[SkuProcessed]) -> None:
        if refuse:
            raise Reject("not now")

    consumer = await broker.consume(subscription(handle))
    await publish(broker, "SKU-2")
    await wait_until(lambda: _depth_is(broker, dead_letter_queue(QUEUE), 1), what="the dead letter")
    refuse = False
    assert await broker.replay(QUEUE) == 1
    await wait_until(lambda: len(named(spans, f"process sku_processed:{QUEUE}")) == 2, what="the replay handled")
    await consumer.stop()

    processed = named(spans, f"process sku_processed:{QUEUE}")
    [sent] = named(spans, "publish sku_processed")
    assert {span.context.trace_id for span in processed} == {sent.context.trace_id}
    assert sorted(str(span.attributes["skuflow.messaging.outcome"]) for span in processed) == ["acked", "dead_lettered"]


async def test_a_batch_gives_each_message_its_span_and_one_linked_span_for_the_batch(make_broker: BrokerFactory, spans):
    broker = await traced(make_broker, spans)
    release = asyncio.Event()
    batches: list[int] = []

    async def handle(messages: Sequence[Message[SkuProcessed]]) -> None:
        batches.append(len(messages))
        if len(batches) == 1:
            await release.wait()  # the first holds on: the others gather into the next batch

    consumer = await broker.consume(subscription(handle, max_batch=10))
    await publish(broker, "SKU-0")
    await wait_until(lambda: batches == [1], what="the first batch running")
    await publish(broker, "SKU-1", "SKU-2", "SKU-3")
    await wait_until(lambda: consumer.in_flight == 4, what="the three delivered while the first holds on")
    release.set()
    await wait_until(lambda: len(named(spans, f"process sku_processed:{QUEUE}")) == 4, what="every message's span")

    assert batches[1:] == [3], batches
    [batch] = named(spans, f"handle sku_processed:{QUEUE}")
    assert batch.attributes["messaging.batch.message_count"] == 3
    processed = named(spans, f"process sku_processed:{QUEUE}")
    linked = {link.context.span_id for link in batch.links}
    assert len(linked) == 3
    assert linked < {span.context.span_id for span in processed}
    sent = {span.context.span_id: span for span in named(spans, "publish sku_processed")}
    for span in processed:  # each in the trace of its own publish
        assert span.parent is not None
        assert span.parent.span_id in sent


async def _depth_is(broker: Broker, queue: str, depth: int) -> bool:
    return await broker.depth(queue) == depth
