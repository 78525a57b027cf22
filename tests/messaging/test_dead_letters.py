"""Dead letters, listed in place and replayed once their cause is fixed (`skuflow dlq`), on both brokers."""

from __future__ import annotations

from skuflow.messaging import Message, Reject, dead_letter_queue
from tests.conftest import BrokerFactory
from tests.messaging.test_conformance import QUEUE, Received, SkuProcessed, publish_event, recorder, sku_processed
from tests.support.waiting import wait_until


async def test_dead_letters_are_listed_in_place_and_replayed_with_every_attempt_again(make_broker: BrokerFactory):
    broker = await make_broker()
    received: Received = []
    cause = {"fixed": False}

    async def refuse_until_fixed(message: Message[SkuProcessed]) -> None:
        if not cause["fixed"]:
            raise Reject(f"{message.body.sku}: no such product yet")

    await broker.consume(sku_processed(QUEUE, recorder(received, refuse_until_fixed)))
    sent = [await publish_event(broker, f"SKU-{n}") for n in range(3)]
    dlq = dead_letter_queue(QUEUE)
    await wait_until(lambda: _depth_is(broker, dlq, 3), what="three dead letters")

    letters = await broker.peek(dlq)
    assert [letter.message_id for letter in letters] == [envelope.message_id for envelope in sent]
    assert letters[0].headers["x-reason"] == "rejected: SKU-0: no such product yet"
    assert await broker.depth(dlq) == 3  # listing took nothing away

    assert await broker.replay(QUEUE) == 3  # while the cause is not fixed, they come back, once each
    await wait_until(lambda: len(received) == 6, what="the three refused again")
    await wait_until(lambda: _depth_is(broker, dlq, 3), what="three dead letters again")

    cause["fixed"] = True
    assert await broker.replay(QUEUE, message_id=sent[1].message_id) == 1
    await wait_until(lambda: len(received) == 7, what="the one replayed")
    assert received[-1].body.sku == "SKU-1"
    assert received[-1].attempt == 1  # every attempt again
    assert "x-reason" not in received[-1].envelope.headers
    assert await broker.replay(QUEUE) == 2
    await wait_until(lambda: len(received) == 9, what="the rest replayed")
    assert await broker.depth(dlq) == 0
    assert await broker.replay(QUEUE) == 0


async def _depth_is(broker, queue: str, count: int) -> bool:
    return await broker.depth(queue) == count
