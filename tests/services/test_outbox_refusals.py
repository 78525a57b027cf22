"""A message the broker refuses does not hold up the outbox: the messages behind it go out, the refused one
is put off (by a backoff every relay honours), reported, and goes out once the topology is fixed."""

from __future__ import annotations

import asyncio

from skuflow.inventory.db import outbox as outbox_table
from skuflow.inventory.service import MIGRATIONS
from skuflow.messaging import SKUFLOW, Exchange, Outgoing, Queue, Topology, create_broker
from skuflow.platform.db import Database
from skuflow.platform.outbox import Outbox, OutboxRelay
from tests.conftest import TEST_OPTIONS, Stack
from tests.support.waiting import wait_until

LATE = Exchange("test.late", "fanout")  # a topology an operator has not declared yet
BACKOFF = 1.5  # seconds between tries of a refused message


async def test_a_refused_message_is_put_off_and_goes_out_once_the_topology_is_fixed(stack: Stack):
    db = Database(stack.database_urls["inventory"], MIGRATIONS)
    await db.migrate()
    outbox = Outbox(db, outbox_table)
    brokers = [create_broker(stack.broker_url, f"inventory-{n}", TEST_OPTIONS) for n in range(2)]
    relays = [
        OutboxRelay(outbox, broker, batch_size=10, poll_seconds=0.05, refused_backoff=(BACKOFF, BACKOFF))
        for broker in brokers
    ]
    try:
        for broker in brokers:
            await broker.connect()
            await broker.declare(SKUFLOW)
        late = brokers[0].envelope("late_event", {"n": 0})
        async with db.transaction() as session:
            events = [
                Outgoing(brokers[0].envelope("sku_processed", {"sku": f"SKU-{n}"}), "sku_processed") for n in range(3)
            ]
            await outbox.add_many(session, [events[0], Outgoing(late, LATE.name), *events[1:]])
        for relay in relays:  # two processes, as it were
            relay.start()

        # The messages behind the refused one go out; it stays pending, put off and reported.
        await wait_until(lambda: _is(outbox.pending(), 1), timeout=20, what="the good messages relayed")
        taken = await brokers[0].take("catalog.sku_processed", 10)
        assert sorted(event.json()["sku"] for event in taken) == ["SKU-0", "SKU-1", "SKU-2"]
        report = await relays[0].refusals()
        assert (report["messages"], report["latest"][0]["message_id"]) == (1, late.message_id)
        assert "'test.late' is not declared" in report["latest"][0]["reason"]
        await asyncio.sleep(BACKOFF / 2)  # within the backoff, neither relay tries it again
        assert (await relays[0].refusals())["latest"][0]["refusals"] == 1
        assert sum(relay.refusals_met for relay in relays) == 1

        # The exchange exists, but no queue is bound: refused again, for another reason, after the backoff.
        await brokers[0].declare(Topology((LATE,), ()))
        await wait_until(lambda: _refused_because(relays[0], "unroutable late_event"), what="the second refusal")
        assert (await relays[1].refusals())["latest"][0]["refusals"] == 2

        # Fixed: the message goes out.
        await brokers[0].declare(Topology((LATE,), (Queue("test.late.events", LATE),)))
        await wait_until(lambda: _is(outbox.pending(), 0), timeout=20, what="the refused message relayed")
        assert [event.message_id for event in await brokers[0].take("test.late.events", 10)] == [late.message_id]
        assert await relays[0].refusals() == {"messages": 0, "latest": []}
    finally:
        for relay in relays:
            await relay.stop()
        for broker in brokers:
            await broker.close()
        await db.close()


async def _is(count, expected: int) -> bool:
    return await count == expected


async def _refused_because(relay: OutboxRelay, reason: str) -> bool:
    latest = (await relay.refusals())["latest"]
    return bool(latest) and reason in latest[0]["reason"]
