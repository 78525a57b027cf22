"""What every raw service has: an asyncpg pool (its tables made at start), the bus (the `sku_processed` fanout
exchange, and for consumers a durable queue bound to it), and an aiohttp client session.

The bus is aio-pika's here (`aio_pika_bus`); `skuflow.bench.faststream_flow` plugs FastStream's in its place,
so that the two flows differ in their messaging only."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from aiohttp import web

from skuflow.bench.raw.settings import Settings

EXCHANGE = "sku_processed"
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT

Handler = Callable[[web.Application, str], Awaitable[None]]  # (app, SKU)
Consumer = tuple[str, Handler]  # (queue, handler of a SKU)
Publish = Callable[[str], Awaitable[None]]  # one persistent, confirmed `sku_processed` for a SKU
# Opens the bus for the app (setting its PUBLISH, consuming for `consumer`) and closes it after the block.
Bus = Callable[[web.Application, Consumer | None], AbstractAsyncContextManager[None]]

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
PUBLISH = web.AppKey[Publish]("publish")
HTTP = web.AppKey("http", aiohttp.ClientSession)


@contextlib.asynccontextmanager
async def aio_pika_bus(app: web.Application, consumer: Consumer | None) -> AsyncIterator[None]:
    connection = await aio_pika.connect_robust(app[SETTINGS].amqp_url)
    channel = await connection.channel()  # publisher confirms on: aio-pika's default
    await channel.set_qos(prefetch_count=app[SETTINGS].prefetch)
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)

    async def publish(sku: str) -> None:
        body = json.dumps({"sku": sku}).encode()
        await exchange.publish(aio_pika.Message(body, content_type="application/json", delivery_mode=PERSISTENT), "")

    app[PUBLISH] = publish
    if consumer is not None:
        name, handle = consumer
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():  # acked after the handler; an error rejects it, not requeued
                await handle(app, json.loads(message.body)["sku"])

        await queue.consume(on_message)  # aiormq runs each delivery as a task: up to `prefetch` at once
    try:
        yield
    finally:
        await connection.close()


def application(settings: Settings, schema: str, bus: Bus, consumer: Consumer | None = None) -> web.Application:
    """An app with its resources opened at start and closed at stop."""
    app = web.Application()
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.database_url)
        await pool.execute(schema)
        app[POOL], app[HTTP] = pool, aiohttp.ClientSession()
        async with bus(app, consumer):
            yield
        await app[HTTP].close()
        await pool.close()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})  # answered only once the resources are open


async def get_json(app: web.Application, url: str) -> Any:
    async with app[HTTP].get(url) as response:
        response.raise_for_status()
        return await response.json()
