"""What `skuflow bench stock` loads, started for one run on scratch stacks (`bench e2e`'s) and stopped after it:
skuflow's inventory alone (or, embedded, `skuflow up`), or the raw building blocks' inventory."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from pydantic import SecretStr

from skuflow.bench.e2e.raw import TOKEN, raw_services
from skuflow.bench.e2e.stack import Stack, StackChoice, scratch_stack
from skuflow.bench.e2e.system import PASSWORD, free_port, running, skuflow_command, until_answering
from skuflow.bench.raw import catalog, common, users
from skuflow.platform.outbox import TABLE
from skuflow.platform.settings import Settings
from skuflow.service_client import connected

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
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in ("users", "inventory")}
    users_grpc = f"127.0.0.1:{free_port()}"

    def values(stack: Stack) -> dict[str, Any]:
        return {
            "broker_url": stack.broker_url,
            "data_dir": scratch / "data",
            "warehouse_secret": SecretStr(PASSWORD),
            "admin_secret": SecretStr(PASSWORD),  # users will not start without it
            **{f"{name}_url": url for name, url in urls.items()},
            "users_grpc": users_grpc,
            **{f"{name}_database_url": url for name, url in stack.database_urls.items()},
        }

    many = ["--workers", str(workers), "--end-with-parent"] if workers else []
    async with scratch_stack(choice, ("users",)) as users_stack, scratch_stack(choice, ("inventory",)) as stack:
        serve_users = skuflow_command(["serve", "users"], values(users_stack), scratch, "users.log")
        serve_inventory = skuflow_command(["serve", "inventory", *many], values(stack), scratch, "inventory.log")
        async with serve_users as users, serve_inventory as inventory:
            async with connected(Settings(**values(stack)), seconds=60, hint="") as client:
                ready = [f"{url}/readyz" for url in urls.values()]
                await until_answering([users, inventory], client.http, ready, "`skuflow serve`")
                token = await client.token("warehouse")
            roles = {"inventory": [inventory[0].pid], "users": [users[0].pid]}
            database = stack.database_urls["inventory"].replace("postgresql+asyncpg://", "postgresql://")
            backlog = functools.partial(_outbox_backlog, database)
            yield Target(f"{urls['inventory']}{STOCK}", token, roles, stack.versions, backlog)


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
