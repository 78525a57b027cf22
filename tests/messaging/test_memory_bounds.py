"""The in-process broker's memory is bounded (issue 14, defect 10): a queue holds at most `max_length`
messages; a publish beyond it is refused (the publisher keeps the message), and inside the hub nothing is
dropped to make room: what cannot move yet waits, still counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pydantic
import pytest

from skuflow.messaging import SKUFLOW, BrokerOptions, Message, PublishRefused, Subscription, dead_letter_queue, new_id
from skuflow.messaging.memory import MAX_QUEUE_LENGTH, MemoryBroker, MemoryHub
from skuflow.messaging.topology import wait_queue
from tests.support.waiting import wait_until

QUEUE = "catalog.sku_processed"
DLQ = dead_letter_queue(QUEUE)
OPTIONS = BrokerOptions(retry_delays=(0.1, 0.2), prefetch=4, shutdown_grace=1)
BOUND = 3


class SkuProcessed(pydantic.BaseModel):
    sku: str


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker(f"memory://bounds-{new_id()}", "test", OPTIONS)  # a hub of its own
    await broker.connect()
    broker.hub.max_length = BOUND
    await broker.declare(SKUFLOW)
    try:
        yield broker
    finally:
        await broker.close()


async def publish(broker: MemoryBroker, sku: str, exchange: str = "sku_processed", routing_key: str = "") -> None:
    await broker.publish(broker.envelope("sku_processed", {"sku": sku}), exchange, routing_key)


def test_a_queue_holds_a_hundred_thousand_messages_by_default():
    assert MemoryHub().max_length == MAX_QUEUE_LENGTH == 100_000


async def test_a_publish_into_a_full_queue_is_refused_whole_naming_the_queue_and_taken_once_it_drains(
    broker: MemoryBroker,
):
    for n in range(BOUND):
        await publish(broker, f"SKU-{n}")  # a fanout: every sku_processed queue gets each

    with pytest.raises(PublishRefused, match=r"queue 'inventory.sku_processed' is full \(3 messages.*at most 3"):
        await publish(broker, "SKU-9")

    assert await broker.depth("users.sku_processed") == BOUND, "no queue got a copy of the refused message"
    for queue in ("inventory.sku_processed", "catalog.sku_processed", "users.sku_processed"):
        await broker.take(queue, 1)
    await publish(broker, "SKU-9")
    assert await broker.depth(QUEUE) == BOUND


async def test_a_message_that_cannot_be_dead_lettered_into_a_full_dlq_comes_back_later_and_is_never_dropped(
    broker: MemoryBroker,
):
    for n in range(BOUND):
        await publish(broker, f"OLD-{n}", "", DLQ)  # dead letters nobody has looked at
    handled: list[str] = []

    async def handler(message: Message[SkuProcessed]) -> None:
        handled.append(message.body.sku)

    await broker.consume(Subscription(QUEUE, "sku_processed", SkuProcessed, handler))
    await broker.publish(broker.envelope("sku_processed", {"skus": "poison"}), "", QUEUE)

    await wait_until(lambda: broker.hub.queues[QUEUE].waiting == 1, what="the poison message handed back")
    assert await broker.depth(DLQ) == BOUND, "the DLQ did not grow past its bound"

    await broker.take(DLQ, 1)  # someone reads a dead letter: room for one
    await wait_until(lambda: broker.hub.queues[DLQ].length == BOUND, timeout=5, what="the poison message dead-lettered")
    letters = await broker.peek(DLQ)
    assert len(letters) == BOUND
    assert letters[-1].headers["x-reason"].startswith("invalid sku_processed body")
    assert await broker.depth(QUEUE) == 0
    assert handled == []


async def test_a_retried_message_waits_while_its_work_queue_is_full(broker: MemoryBroker):
    retry = wait_queue(QUEUE, OPTIONS.retry_delays[0])
    for n in range(BOUND):
        await publish(broker, f"SKU-{n}", "", QUEUE)
    await publish(broker, "LATER", "", retry)  # put aside by an earlier attempt, due back while QUEUE is full

    # Past its delay, three times over: what is checked is that nothing happened (so a wait, not a poll).
    await asyncio.sleep(3 * OPTIONS.retry_delays[0])
    assert await broker.depth(QUEUE) == BOUND
    assert await broker.depth(retry) == 1, "still counted where it waits"

    await broker.take(QUEUE, 1)
    await wait_until(lambda: broker.hub.queues[retry].length == 0, timeout=5, what="the retried message moved on")
    assert [envelope.body for envelope in await broker.peek(QUEUE)][-1] == b'{"sku":"LATER"}'


async def test_a_replay_moves_only_what_fits_and_the_rest_stays_dead_lettered(broker: MemoryBroker):
    for n in range(BOUND):
        await publish(broker, f"DEAD-{n}", "", DLQ)
    await publish(broker, "WAITING", "", QUEUE)

    moved = await broker.replay(QUEUE)

    assert moved == BOUND - 1
    assert await broker.depth(QUEUE) == BOUND
    assert await broker.depth(DLQ) == 1
