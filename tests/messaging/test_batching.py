"""Batched subscriptions, on both brokers: the messages that arrive while a batch runs form the next one,
and each message keeps its own outcome (acked, retried or dead-lettered alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pydantic

from skuflow.messaging import Broker, Message, Outgoing, Reject, Subscription, dead_letter_queue
from tests.conftest import TEST_OPTIONS, BrokerFactory
from tests.support.waiting import wait_until

QUEUE = "catalog.sku_processed"


class SkuProcessed(pydantic.BaseModel):
    sku: str


Batches = list[list[str]]


def batched(handler, max_batch: int = 100) -> Subscription[SkuProcessed]:
    return Subscription.batched(QUEUE, "sku_processed", SkuProcessed, handler, max_batch)


async def publish(broker: Broker, skus: list[str]) -> None:
    await broker.publish_many(
        [Outgoing(broker.envelope("sku_processed", SkuProcessed(sku=sku)), "sku_processed") for sku in skus]
    )


async def test_messages_that_arrive_while_a_batch_runs_are_handled_together_and_each_acked(
    make_broker: BrokerFactory,
):
    broker = await make_broker()
    batches: Batches = []
    consumer_of: list[object] = []

    async def handle(messages: Sequence[Message[SkuProcessed]]) -> None:
        batches.append([message.body.sku for message in messages])
        if len(batches) == 1:  # the first batch holds on until the consumer is full: the rest must wait
            consumer = consumer_of[0]
            await wait_until(lambda: consumer.in_flight == TEST_OPTIONS.prefetch, what="a full consumer")

    consumer_of.append(await broker.consume(batched(handle)))
    skus = [f"SKU-{n}" for n in range(40)]
    await publish(broker, skus)

    await wait_until(lambda: sum(map(len, batches)) == len(skus), what="every message handled")
    assert sorted(sku for batch in batches for sku in batch) == sorted(skus), "each message once"
    # The first batch held on until the consumer was full: whatever it did not take waited, and went next, whole.
    assert len(batches[0]) + len(batches[1]) == TEST_OPTIONS.prefetch or len(batches[0]) == TEST_OPTIONS.prefetch
    assert max(map(len, batches)) <= TEST_OPTIONS.prefetch
    assert len(batches) < len(skus)
    await wait_until(lambda: consumer_of[0].in_flight == 0, what="every delivery settled")
    assert await broker.depth(QUEUE) == 0
    assert await broker.depth(dead_letter_queue(QUEUE)) == 0


async def test_a_batch_is_never_larger_than_asked(make_broker: BrokerFactory):
    broker = await make_broker()
    sizes: list[int] = []
    gate = asyncio.Event()

    async def handle(messages: Sequence[Message[SkuProcessed]]) -> None:
        sizes.append(len(messages))
        await gate.wait()

    consumer = await broker.consume(batched(handle, max_batch=3))
    await publish(broker, [f"SKU-{n}" for n in range(20)])
    await wait_until(lambda: consumer.in_flight == TEST_OPTIONS.prefetch, what="a full consumer")
    gate.set()

    await wait_until(lambda: sum(sizes) == 20, what="every message handled")
    assert max(sizes) == 3


async def test_a_poison_message_in_a_batch_is_dead_lettered_alone_and_the_others_are_handled(
    make_broker: BrokerFactory,
):
    broker = await make_broker()
    handled: list[str] = []
    calls: Batches = []
    consumer_of: list[object] = []

    async def handle(messages: Sequence[Message[SkuProcessed]]) -> None:
        skus = [message.body.sku for message in messages]
        calls.append(skus)
        if len(calls) == 1:
            consumer = consumer_of[0]
            await wait_until(lambda: consumer.in_flight == TEST_OPTIONS.prefetch, what="a full consumer")
        if "POISON" in skus:
            raise Reject("POISON can never be handled")
        handled.extend(skus)

    consumer_of.append(await broker.consume(batched(handle)))
    skus = ["SKU-0", "SKU-1", "SKU-2", "POISON", "SKU-3", "SKU-4", "SKU-5", "SKU-6"]
    await publish(broker, skus)

    dlq = dead_letter_queue(QUEUE)
    await wait_until(lambda: broker.depth(dlq), what="the poison's dead letter")
    await wait_until(lambda: len(handled) == len(skus) - 1, what="the others handled")
    [letter] = await broker.take(dlq, 10)
    assert letter.json() == {"sku": "POISON"}
    assert (letter.headers["x-reason"], letter.headers["x-attempts"]) == ("rejected: POISON can never be handled", 1)
    assert sorted(handled) == sorted(sku for sku in skus if sku != "POISON"), "each of the others once"
    assert ["POISON"] in calls, "the failed batch was handled again one message at a time"
    await wait_until(lambda: consumer_of[0].in_flight == 0, what="every delivery settled")
    assert await broker.depth(QUEUE) == 0


async def test_a_message_of_a_batch_that_fails_for_now_is_retried_alone(make_broker: BrokerFactory):
    broker = await make_broker()
    attempts: dict[str, list[int]] = {}
    consumer_of: list[object] = []

    async def handle(messages: Sequence[Message[SkuProcessed]]) -> None:
        if not attempts:
            consumer = consumer_of[0]
            await wait_until(lambda: consumer.in_flight == 4, what="four deliveries in flight")
        for message in messages:
            attempts.setdefault(message.body.sku, []).append(message.attempt)
        if any(message.body.sku == "FLAKY" and message.attempt == 1 for message in messages):
            raise RuntimeError("inventory unreachable")

    consumer_of.append(await broker.consume(batched(handle)))
    await publish(broker, ["SKU-0", "FLAKY", "SKU-1", "SKU-2"])

    await wait_until(lambda: 2 in attempts.get("FLAKY", []), what="FLAKY's second attempt")
    await wait_until(lambda: consumer_of[0].in_flight == 0, what="every delivery settled")
    assert attempts["FLAKY"][-1] == 2, "retried after its delay, as its own message"
    assert all(set(attempts[sku]) == {1} for sku in ("SKU-0", "SKU-1", "SKU-2")), "the others were not retried"
    assert await broker.depth(dead_letter_queue(QUEUE)) == 0
