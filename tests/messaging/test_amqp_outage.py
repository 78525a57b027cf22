"""RabbitMQ out of reach for one client (through a proxy the test cuts), leaving the broker itself alone."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse

import pytest

from skuflow.messaging import SKUFLOW, PublishError, create_broker
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
