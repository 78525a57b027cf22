"""The raw flow's bus in FastStream: the `sku_processed` fanout exchange, a durable queue per consumer, one
`SkuProcessed` body model for both ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pydantic
from aiohttp import web
from faststream import AckPolicy
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from skuflow.bench.raw.common import EXCHANGE, PUBLISH, SETTINGS, Consumer


class SkuProcessed(pydantic.BaseModel):
    sku: str


@contextlib.asynccontextmanager
async def faststream_bus(app: web.Application, consumer: Consumer | None) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    exchange = RabbitExchange(EXCHANGE, type=ExchangeType.FANOUT, durable=True)
    broker = RabbitBroker(
        settings.amqp_url,
        # One channel for publishing and consuming, as the raw flow has: confirms on (FastStream's default), and
        # the prefetch applies to each consumer.
        default_channel=Channel(prefetch_count=settings.prefetch),
        # FastStream logs every delivery at INFO by default; the raw flow and skuflow log none. Its logging still
        # runs, into a logger of ours left at Python's default level (WARNING).
        logger=logging.getLogger("skuflow.bench.faststream"),
    )
    publisher = broker.publisher(exchange=exchange, persist=True)
    if consumer is not None:
        queue, handle = consumer

        # Acked when the handler returns, rejected (not requeued) if it raises; FastStream validates the body.
        @broker.subscriber(RabbitQueue(queue, durable=True), exchange, ack_policy=AckPolicy.REJECT_ON_ERROR)
        async def on_sku_processed(event: SkuProcessed) -> None:
            await handle(app, event.sku)

    async def publish(sku: str) -> None:
        await publisher.publish(SkuProcessed(sku=sku))  # waits for the broker's confirm

    app[PUBLISH] = publish
    try:
        await broker.connect()
        await broker.declare_exchange(exchange)  # inventory consumes nothing: its publisher needs the exchange
        await broker.start()  # declares and binds the consumer's queue, then consumes
        yield
    finally:
        await broker.stop()
