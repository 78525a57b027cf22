"""The transactional outbox: a broker outage delays events and loses none; relays share the work."""

from __future__ import annotations

import urllib.parse
from collections import Counter

import aiohttp
import pytest

from skuflow.inventory.db import outbox as outbox_table
from skuflow.inventory.service import MIGRATIONS, build_app
from skuflow.messaging import SKUFLOW, Outgoing, create_broker
from skuflow.platform.db import Database
from skuflow.platform.outbox import Outbox, OutboxRelay
from skuflow.users.service import build_app as users_app
from tests.conftest import TEST_OPTIONS, WAREHOUSE_SECRET, Stack
from tests.support.proxy import TcpProxy
from tests.support.servers import serve
from tests.support.waiting import wait_until

# A broker that can go away, and relays in several processes: RabbitMQ and PostgreSQL only.
pytestmark = [pytest.mark.amqp, pytest.mark.parametrize("stack", ["production"], indirect=True)]


async def test_reports_are_accepted_while_the_broker_is_down_and_their_events_follow(stack: Stack):
    parts = urllib.parse.urlsplit(stack.broker_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    via_proxy = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}").geturl()
    users = await serve(users_app(stack.settings()))
    inventory = await serve(build_app(stack.settings(users_url=users.url, broker_url=via_proxy)))
    observer = create_broker(stack.broker_url, "observer", TEST_OPTIONS)
    await observer.connect()
    http = aiohttp.ClientSession()
    try:
        form = {"grant_type": "client_credentials", "client_id": "warehouse", "client_secret": WAREHOUSE_SECRET}
        async with http.post(f"{users.url}/v1/auth/token", data=form) as response:
            token = (await response.json())["access_token"]
        await proxy.cut()

        for n in range(5):
            body = {"warehouse_id": "WH-1", "items": [{"sku": f"SKU-{n}", "on_hand": n + 1}]}
            async with http.post(
                f"{inventory.url}/v1/stock", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 202, await response.text()
        async with http.get(f"{inventory.url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["checks"]["broker"] == "down"
        runtime_outbox = inventory.app.state.runtime.outbox
        assert await runtime_outbox.pending() == 5

        await proxy.start()  # the broker is back
        await wait_until(lambda: _equals(runtime_outbox.pending(), 0), timeout=30, what="the outbox drained")
        events = await observer.take("catalog.sku_processed", 100)
        assert sorted(event.json()["sku"] for event in events) == [f"SKU-{n}" for n in range(5)]
    finally:
        await http.close()
        await observer.close()
        await inventory.stop()
        await users.stop()
        await proxy.cut()


async def test_two_relays_on_one_database_publish_each_message_once(stack: Stack):
    db = Database(stack.database_urls["inventory"], MIGRATIONS)
    await db.migrate()
    outbox = Outbox(db, outbox_table)
    brokers = [create_broker(stack.broker_url, f"inventory-{n}", TEST_OPTIONS) for n in range(2)]
    relays: list[OutboxRelay] = []
    try:
        for broker in brokers:
            await broker.connect()
            await broker.declare(SKUFLOW)
        async with db.transaction() as session:  # one call: on PostgreSQL, by COPY
            envelopes = [brokers[0].envelope("sku_processed", {"sku": f"SKU-{n}"}) for n in range(600)]
            await outbox.add_many(session, [Outgoing(envelope, "sku_processed") for envelope in envelopes])
        relays = [OutboxRelay(outbox, broker, batch_size=50) for broker in brokers]
        for relay in relays:
            relay.start()

        await wait_until(lambda: _equals(outbox.pending(), 0), timeout=60, what="600 messages relayed")
        assert all(relay.published > 0 for relay in relays), "both relays took a share"
        assert sum(relay.published for relay in relays) == 600
        events = await brokers[0].take("catalog.sku_processed", 1000)
        assert sorted(event.json()["sku"] for event in events) == sorted(f"SKU-{n}" for n in range(600))
        assert Counter(event.message_id for event in events).most_common(1)[0][1] == 1
    finally:
        for relay in relays:
            await relay.stop()
        for broker in brokers:
            await broker.close()
        await db.close()


async def _equals(value, expected: int) -> bool:
    return await value == expected
