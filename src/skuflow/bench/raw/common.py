"""What every raw service has: an asyncpg pool (its tables made at start), an aio-pika connection with the
`sku_processed` fanout exchange, an aiohttp client session, and for consumers a durable queue bound to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from aiohttp import web

from skuflow.bench.raw.settings import Settings

EXCHANGE = "sku_processed"
SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
EXCHANGE_KEY = web.AppKey("exchange", aio_pika.abc.AbstractExchange)
HTTP = web.AppKey("http", aiohttp.ClientSession)

Handler = Callable[[web.Application, str], Awaitable[None]]  # (app, SKU)


def application(settings: Settings, schema: str, consumer: tuple[str, Handler] | None = None) -> web.Application:
    """An app with its resources opened at start and closed at stop; `consumer`: (queue, handler of a SKU)."""
    app = web.Application()
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.database_url)
        await pool.execute(schema)
        connection = await aio_pika.connect_robust(settings.amqp_url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.prefetch)
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        app[POOL], app[EXCHANGE_KEY], app[HTTP] = pool, exchange, aiohttp.ClientSession()
        if consumer is not None:
            name, handle = consumer
            queue = await channel.declare_queue(name, durable=True)
            await queue.bind(exchange)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():  # acked after the handler; an error rejects it, not requeued
                    await handle(app, json.loads(message.body)["sku"])

            await queue.consume(on_message)  # aiormq runs each delivery as a task: up to `prefetch` at once
        yield
        await connection.close()
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
