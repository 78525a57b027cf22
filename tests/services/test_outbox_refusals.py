"""A message the broker refuses does not hold up the outbox: the messages behind it go out, the refused one
is held back, tried again with backoff, reported, and goes out once the topology is fixed."""

from __future__ import annotations

from skuflow.inventory.db import outbox as outbox_table
from skuflow.inventory.service import MIGRATIONS
from skuflow.messaging import SKUFLOW, Exchange, Outgoing, Queue, Topology, create_broker
from skuflow.platform.db import Database
from skuflow.platform.outbox import Outbox, OutboxRelay
from tests.conftest import TEST_OPTIONS, Stack
from tests.support.waiting import wait_until

LATE = Exchange("test.late", "fanout")  # a topology an operator has not declared yet


async def test_a_refused_message_is_held_back_and_goes_out_once_the_topology_is_fixed(stack: Stack):
    db = Database(stack.database_urls["inventory"], MIGRATIONS)
    await db.migrate()
    outbox = Outbox(db, outbox_table)
    broker = create_broker(stack.broker_url, "inventory", TEST_OPTIONS)
    await broker.connect()
    await broker.declare(SKUFLOW)
    relay = OutboxRelay(outbox, broker, batch_size=10, poll_seconds=0.05, refused_backoff=(0.2, 0.4))
    try:
        async with db.transaction() as session:
            late = broker.envelope("late_event", {"n": 0})
            messages = [
                Outgoing(broker.envelope("sku_processed", {"sku": f"SKU-{n}"}), "sku_processed") for n in range(3)
            ]
            await outbox.add_many(session, [messages[0], Outgoing(late, LATE.name), *messages[1:]])
        relay.start()

        # The messages behind the refused one go out; it stays pending, held back and reported.
        await wait_until(lambda: _is(outbox.pending(), 1), timeout=20, what="the good messages relayed")
        events = await broker.take("catalog.sku_processed", 10)
        assert sorted(event.json()["sku"] for event in events) == ["SKU-0", "SKU-1", "SKU-2"]
        report = relay.refusals()
        assert report["messages"] == 1
        assert report["latest"][0]["message_id"] == late.message_id
        assert "'test.late' is not declared" in report["latest"][0]["error"]

        # The exchange exists, but no queue is bound: refused still, for another reason, and tried again.
        await broker.declare(Topology((LATE,), ()))
        await wait_until(
            lambda: _refused_because(relay, "unroutable late_event"), timeout=20, what="the unroutable refusal"
        )
        assert relay.refused[next(iter(relay.refused))].attempts >= 2

        # Fixed: the held-back message goes out and is forgotten.
        await broker.declare(Topology((LATE,), (Queue("test.late.events", LATE),)))
        await wait_until(lambda: _is(outbox.pending(), 0), timeout=20, what="the refused message relayed")
        assert [event.message_id for event in await broker.take("test.late.events", 10)] == [late.message_id]
        assert relay.refusals() == {"messages": 0, "latest": []}
    finally:
        await relay.stop()
        await broker.close()
        await db.close()


async def _is(count, expected: int) -> bool:
    return await count == expected


async def _refused_because(relay: OutboxRelay, reason: str) -> bool:
    return any(reason in refused.error for refused in relay.refused.values())
