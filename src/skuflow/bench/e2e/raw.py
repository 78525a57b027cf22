"""A baseline under test: the three services of the raw flow (`skuflow.bench.raw`) or of the FastStream flow
(`skuflow.bench.faststream_flow`: the same apps on FastStream's bus), a process each (as `skuflow up --processes`
runs one worker per service), on the same scratch stack and with the bench's SMTP sink. Its setup is written
straight into its databases (not measured); its measured phase is the same HTTP stock reports.

It has no /metrics: no message or call counts, and `settled` has nothing to wait for (nothing flows before the
phase; after it, convergence already waited for every write the figures read).

`raw_services` starts any of the services (`skuflow bench stock` starts the raw inventory alone)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from skuflow.bench.e2e.driver import Driver
from skuflow.bench.e2e.figures import Progress, Samples, Workload
from skuflow.bench.e2e.stack import SERVICE_NAMES, Stack
from skuflow.bench.e2e.system import SETUP_TIMEOUT, Mailbox, mail_sink, stop, until_answering
from skuflow.embedded.ftp import FtpServer
from skuflow.platform.settings import Settings
from skuflow.service_client import ServiceClient, connected

TOKEN = "bench-raw-token"  # the raw inventory's one bearer token (it has no OAuth)
BASELINES = {"raw": "skuflow.bench.raw", "faststream": "skuflow.bench.faststream_flow"}  # flow -> its module


class FixedToken(ServiceClient):
    async def token(self, client_id: str) -> str:
        return TOKEN


@dataclass
class RawSystem:
    client: ServiceClient
    mailbox: Mailbox
    processes: list[asyncio.subprocess.Process]
    databases: dict[str, str]  # service -> asyncpg URL
    catalog: asyncpg.Connection  # the bench's own look at catalog's progress
    mode: str = "choreography"
    ftp: FtpServer | None = None
    pids: list[int] = field(default_factory=list)

    async def settled(self, every: float, within: float = SETUP_TIMEOUT) -> dict[str, Samples]:
        return {}

    async def catalog_acked(self) -> float:
        return float(await self.catalog.fetchval("SELECT count(*) FROM products WHERE available"))

    async def flows_finished(self) -> bool:
        return True


@contextlib.asynccontextmanager
async def running_raw(scratch: Path, stack: Stack, flow: str = "raw") -> AsyncIterator[RawSystem]:
    """The three services of `flow` (a key of BASELINES) with the bench's SMTP sink, stopped after the block."""
    async with mail_sink() as (mailbox, sink):
        smtp = {"RAW_SMTP_HOST": "127.0.0.1", "RAW_SMTP_PORT": str(sink.port)}
        async with raw_services(scratch, stack, flow, SERVICE_NAMES, smtp) as started:
            urls = started.urls
            settings = Settings(inventory_url=urls["inventory"], catalog_url=urls["catalog"], users_url=urls["users"])
            async with connected(settings, seconds=60, hint="") as plain:
                client = FixedToken(plain.http, settings, hint="")
                catalog = await asyncpg.connect(started.databases["catalog"])
                try:
                    pids = [process.pid for process in started.processes]
                    yield RawSystem(client, mailbox, started.processes, started.databases, catalog, pids=pids)
                finally:
                    await catalog.close()


@dataclass
class RawServices:
    urls: dict[str, str]  # service -> its address
    processes: list[asyncio.subprocess.Process]
    databases: dict[str, str]  # service -> asyncpg URL


@contextlib.asynccontextmanager
async def raw_services(
    scratch: Path, stack: Stack, flow: str, names: Sequence[str], extra: Mapping[str, str], instances: int = 1
) -> AsyncIterator[RawServices]:
    """The services `names` of `flow`, `instances` processes each, answering /healthz; stopped (SIGINT) after the
    block. `extra`: RAW_ variables beyond those the bench gives each (port, database, broker, token, URLs).

    Each service listens on a socket the bench bound (to a free port) and hands down to each of its processes (the
    kernel spreads the connections among them): a port merely found free could be taken, before the service
    binds it, by an outgoing connection of a service started before it."""
    sockets = {name: _bound() for name in names}
    urls = {name: f"http://127.0.0.1:{sock.getsockname()[1]}" for name, sock in sockets.items()}
    databases = {
        name: url.replace("postgresql+asyncpg://", "postgresql://") for name, url in stack.database_urls.items()
    }
    shared = {
        "RAW_AMQP_URL": stack.broker_url,
        "RAW_TOKEN": TOKEN,
        **{f"RAW_{name.upper()}_URL": urls[name] for name in ("inventory", "catalog") if name in urls},
        "RAW_PREFETCH": os.environ.get("SKUFLOW_PREFETCH", "32"),  # the same prefetch as skuflow's
        **extra,
    }
    started: list[tuple[asyncio.subprocess.Process, Path]] = []
    try:
        async with aiohttp.ClientSession() as http:
            for name, url in urls.items():
                fd = sockets[name].fileno()
                settings = {
                    **shared,
                    "RAW_PORT": url.rsplit(":", 1)[1],
                    "RAW_LISTEN_FD": str(fd),
                    "RAW_DATABASE_URL": databases[name],
                }
                with sockets[name]:  # the bench's copy closed once handed down
                    for n in range(instances):
                        log_path = scratch / f"{flow}-{name}{f'-{n}' if n else ''}.log"
                        started.append((await _raw_process(flow, name, settings, log_path, fd), log_path))
                        if n == 0 and instances > 1:  # its tables made before the next start: no CREATE TABLE race
                            await until_answering(started[-1:], http, [f"{url}/healthz"], f"the {flow} {name}")
            # A later instance may still be starting: a benchmark's warm-up covers that.
            await until_answering(started, http, [f"{url}/healthz" for url in urls.values()], f"the {flow} services")
        yield RawServices(urls, [process for process, _ in started], databases)
    finally:
        for sock in sockets.values():
            sock.close()  # those not handed down, after an error
        await asyncio.gather(*(stop(process) for process, _ in started))


async def _raw_process(
    flow: str, name: str, settings: dict[str, str], log_path: Path, fd: int
) -> asyncio.subprocess.Process:
    """One process of the raw service `name`, with the RAW_ `settings`, listening on the inherited socket `fd`."""
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", BASELINES[flow], name),
            env={**os.environ, **settings},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(fd,),
        )


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class RawDriver(Driver):
    """The same workload, set up straight in the raw services' databases (their tables are made at start)."""

    def __init__(self, system: RawSystem, workload: Workload, progress: Progress) -> None:
        super().__init__(system, workload, progress)
        self.raw = system

    async def setup(self, skus: list[str], rng: random.Random) -> None:
        """Every SKU at 0 in inventory (revision 1) and a product in catalog knowing it; the users and wishes."""
        choices = self.choose_wishes(skus, rng)
        levels = [("WH-1", sku, 0) for sku in skus]
        await self._write(
            "inventory",
            ("INSERT INTO stock_levels VALUES ($1, $2, $3, now())", levels),
            (
                "INSERT INTO skus (sku, on_hand, available_for_sale, revision, updated_at) VALUES ($1, 0, 0, 1, now())",
                [(sku,) for sku in skus],
            ),
        )
        await self._write(
            "catalog",
            (
                "INSERT INTO products (sku, name, price, availability_revision, updated_at)"
                " VALUES ($1, $2, 1.00, 1, now())",
                [(sku, f"Item {sku}") for sku in skus],
            ),
        )
        users = [(f"user-{n}", f"user{n}@example.com", f"User {n}") for n in range(len(choices))]
        wishes = [(f"user-{n}", sku) for n, wished in enumerate(choices) for sku in wished]
        await self._write(
            "users",
            ("INSERT INTO users (id, email, name) VALUES ($1, $2, $3)", users),
            ("INSERT INTO wishlist_items (user_id, sku) VALUES ($1, $2)", wishes),
        )
        self.progress("setup", 1, 1)

    async def _write(self, service: str, *statements: tuple[str, Sequence[tuple[Any, ...]]]) -> None:
        connection = await asyncpg.connect(self.raw.databases[service])
        try:
            async with connection.transaction():
                for statement, rows in statements:
                    await connection.executemany(statement, rows)
        finally:
            await connection.close()
