"""RabbitMQ out of reach for one client (through a proxy the test cuts), leaving the broker itself alone."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse

import aio_pika
import pytest

from skuflow.messaging import COMMANDS, SKUFLOW, Outgoing, PublishError, PublishRefused, create_broker
from tests.conftest import TEST_OPTIONS
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.amqp


async def test_a_publish_waits_out_a_short_outage_and_raises_past_the_bound(amqp_url: str):
    parts = urllib.parse.urlsplit(amqp_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    via_proxy = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}").geturl()
    broker = create_broker(via_proxy, "inventory", dataclasses.replace(TEST_OPTIONS, publish_timeout=1.5))
    await broker.connect()
    try:
        await broker.declare(SKUFLOW)
        await proxy.cut()

        started = time.monotonic()
        with pytest.raises(PublishError, match=r"broker unreachable for 1\.5s"):
            await broker.publish(broker.envelope("sku_processed", {"sku": "SKU-1"}), "sku_processed")
        assert 1.4 <= time.monotonic() - started < 5

        # Back within the bound: the same call succeeds once the connection has recovered.
        async def restore() -> None:
            await asyncio.sleep(0.5)
            await proxy.start()

        restoring = asyncio.create_task(restore())
        broker.options = dataclasses.replace(broker.options, publish_timeout=15)
        await broker.publish(broker.envelope("sku_processed", {"sku": "SKU-2"}), "sku_processed")
        await restoring
        [delivered] = await broker.take("catalog.sku_processed", 10)
        assert delivered.json() == {"sku": "SKU-2"}
    finally:
        await broker.close()
        await proxy.cut()


async def test_an_exchange_deleted_under_a_publisher_refuses_its_messages_and_spares_the_others(amqp_url: str):
    """A client that declared an exchange gets it back by itself (aio-pika's robust channel declares it again
    when the broker closes the channel); one that only found it must learn that it is gone."""
    declarer = create_broker(amqp_url, "catalog", TEST_OPTIONS)
    publisher = create_broker(amqp_url, "inventory", dataclasses.replace(TEST_OPTIONS, publish_timeout=10))
    try:
        for broker in (declarer, publisher):
            await broker.connect()
        await declarer.declare(SKUFLOW)
        await publisher.publish(publisher.envelope("sku_processed", {"sku": "SKU-1"}), "sku_processed")
        connection = await aio_pika.connect(amqp_url)
        async with connection, connection.channel() as channel:
            await channel.exchange_delete("sku_processed")  # an operator's mistake, while inventory runs

        gone = publisher.envelope("sku_processed", {"sku": "SKU-2"})
        fine = [publisher.envelope("recalculate_sku", {"sku": f"SKU-{n}"}) for n in range(5)]
        batch = [
            Outgoing(gone, "sku_processed"),
            *(Outgoing(c, COMMANDS.name, "inventory.recalculate_sku") for c in fine),
        ]
        started = time.monotonic()
        with pytest.raises(PublishRefused) as refused:
            await publisher.publish_many(batch)
        assert time.monotonic() - started < 5, "refused at once, not after the publish timeout"
        assert list(refused.value.refused) == [gone.message_id]
        assert "'sku_processed' is not declared" in refused.value.refused[gone.message_id]
        commands = await publisher.take("inventory.recalculate_sku", 10)
        assert sorted(c.message_id for c in commands) == sorted(c.message_id for c in fine)
    finally:
        await publisher.close()
        await declarer.close()
