"""What `skuflow bench stock` loads, started for one run on scratch stacks (`bench e2e`'s) and stopped after it:
skuflow's inventory alone (or, embedded, `skuflow up`), or the raw building blocks' inventory."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg

from skuflow.bench.e2e.raw import TOKEN, raw_services
from skuflow.bench.e2e.stack import StackChoice, scratch_stack
from skuflow.bench.e2e.system import running, users_and_inventory
from skuflow.bench.raw import catalog, common, users
from skuflow.platform.outbox import TABLE

STOCK = "/v1/stock"


async def _no_backlog() -> int | None:
    return None


@dataclass(frozen=True)
class Target:
    url: str  # POST /v1/stock's
    token: str  # a warehouse's bearer token, fetched once
    roles: dict[str, list[int]]  # "inventory" (and "users") -> the roots of its processes
    versions: dict[str, str]  # rabbitmq, postgresql: what it runs on
    backlog: Callable[[], Awaitable[int | None]] = _no_backlog  # events recorded, not yet published; None: unknown


Starter = Callable[[Path, StackChoice, int | None], contextlib.AbstractAsyncContextManager[Target]]


@contextlib.asynccontextmanager
async def skuflow_inventory(scratch: Path, choice: StackChoice, workers: int | None) -> AsyncIterator[Target]:
    """`skuflow serve inventory` (`--workers N`) and, for the warehouse's token, `skuflow serve users`, whose
    answer inventory's verifier then keeps (SKUFLOW_AUTH_CACHE_SECONDS). Each on a scratch stack of its own: users
    takes none of inventory's events, so nothing but the load asks inventory anything. Inventory consumes its own
    `sku_processed` (the availability recalculation), part of its work; catalog's and users' queues, which it
    declares, fill unconsumed."""
    async with users_and_inventory(scratch, choice, workers) as served:
        token = await served.client.token("warehouse")
        roles = {"inventory": [served.inventory.pid], "users": [served.users.pid]}
        database = served.stack.database_urls["inventory"].replace("postgresql+asyncpg://", "postgresql://")
        backlog = functools.partial(_outbox_backlog, database)
        url = f"{served.settings.inventory_url}{STOCK}"
        yield Target(url, token, roles, served.stack.versions, backlog)


@contextlib.asynccontextmanager
async def embedded_system(scratch: Path, choice: StackChoice, workers: int | None) -> AsyncIterator[Target]:
    """`skuflow up` on the in-process broker and SQLite, as `bench e2e --embedded` runs it: the three services in
    one process, so catalog's and users' work on each event (each asks inventory) is in inventory's figures."""
    async with scratch_stack(choice) as stack, running("choreography", scratch, stack) as system:
        token = await system.client.token("warehouse")
        roles = {"inventory": [system.process.pid]}
        yield Target(f"{system.settings.inventory_url}{STOCK}", token, roles, stack.versions)


@contextlib.asynccontextmanager
async def raw_inventory(scratch: Path, choice: StackChoice, workers: int | None) -> AsyncIterator[Target]:
    """The raw building blocks' inventory (`python -m skuflow.bench.raw inventory`), `workers` processes (one by
    default) sharing one listening socket, as skuflow's workers do, on a scratch stack."""
    async with (
        scratch_stack(choice, ("inventory",)) as stack,
        raw_services(scratch, stack, "raw", ["inventory"], {}, instances=workers or 1) as started,
    ):
        await _unconsumed_queues(stack.broker_url)
        pids = [process.pid for process in started.processes]
        yield Target(f"{started.urls['inventory']}{STOCK}", TOKEN, {"inventory": pids}, stack.versions)


async def _unconsumed_queues(amqp_url: str) -> None:
    """Catalog's and users' queues bound to the raw exchange, unconsumed, as skuflow's inventory declares them on
    its side: the broker keeps each event as often on either side."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(common.EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        for name in (catalog.QUEUE, users.QUEUE):
            queue = await channel.declare_queue(name, durable=True)
            await queue.bind(exchange)
    finally:
        await connection.close()


async def _outbox_backlog(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {TABLE} WHERE published_at IS NULL"))
    finally:
        await connection.close()
