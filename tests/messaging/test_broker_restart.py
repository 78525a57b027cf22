"""RabbitMQ going away mid-stream: publishers wait and retry, consumers resume, nothing is lost.

These tests disturb the whole broker, so they are marked `disruptive` and run in a pass of their own.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse

import pytest

from skuflow.messaging import SKUFLOW, Broker, Envelope, Message, Subscription, create_broker
from tests.conftest import TEST_OPTIONS
from tests.messaging.test_conformance import SkuProcessed
from tests.support.rabbitmq import RabbitMQ
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.amqp, pytest.mark.disruptive]

QUEUE = "catalog.sku_processed"
MESSAGES = 300


async def _open(url: str, app_id: str) -> Broker:
    broker = create_broker(url, app_id, TEST_OPTIONS)
    await broker.connect()
    await broker.declare(SKUFLOW)
    return broker


async def _stream_through(url: str, disrupt) -> None:
    """Publish a steady stream, disrupt the broker a third of the way in, and check every message arrived."""
    producer, consumer = await _open(url, "inventory"), await _open(url, "catalog")
    received: set[str] = set()

    async def record(message: Message[SkuProcessed]) -> None:
        received.add(message.envelope.message_id)

    try:
        await consumer.consume(Subscription(QUEUE, "sku_processed", SkuProcessed, record))
        sent: list[Envelope] = []

        async def publish_steadily() -> None:
            for n in range(MESSAGES):
                envelope = producer.envelope("sku_processed", SkuProcessed(sku=f"SKU-{n}"))
                await producer.publish(envelope, "sku_processed")
                sent.append(envelope)
                await asyncio.sleep(0.005)

        publishing = asyncio.create_task(publish_steadily())
        await wait_until(lambda: len(received) >= MESSAGES // 3, what="a third of the stream consumed")
        await asyncio.to_thread(disrupt)
        await asyncio.wait_for(publishing, timeout=60)  # no publish raised: each waited out the outage

        expected = {envelope.message_id for envelope in sent}
        await wait_until(lambda: expected <= received, timeout=60, what="every published message consumed")
        assert len(sent) == MESSAGES
    finally:
        await producer.close()
        await consumer.close()


async def test_the_server_closing_every_connection_loses_nothing(amqp_url: str, rabbitmqctl):
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path[1:])
    await _stream_through(
        amqp_url, lambda: rabbitmqctl("close_all_connections", "--vhost", vhost, "skuflow chaos test")
    )


async def test_a_broker_restart_mid_stream_loses_nothing(amqp_url: str, rabbitmqctl, rabbitmq: RabbitMQ):
    def restart() -> None:
        rabbitmqctl("stop_app")
        try:
            time.sleep(2)  # the outage: publishes meanwhile wait and retry
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")

    try:
        await _stream_through(amqp_url, restart)
    finally:
        # The management API (per-test vhosts) restarts with the broker app.
        await wait_until(lambda: rabbitmq.problem() is None, timeout=60, what="the management API back")
