"""What the system under test runs on: the in-process broker or a scratch virtual host on RabbitMQ, SQLite
in the scratch folder or scratch PostgreSQL databases; made before a run, removed after, and their versions.

A scratch vhost (through the management API) rather than purging queues: the RabbitMQ of the usual settings
may be a running system's, whose messages the benchmark must neither take nor count."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from skuflow.bench.e2e.figures import BenchError
from skuflow.platform.redaction import without_password

SERVICE_NAMES = ("users", "inventory", "catalog")  # users first: the others verify tokens with it


@dataclass(frozen=True)
class StackChoice:
    broker_url: str  # memory:// or amqp://...
    postgres_url: str | None = None  # a server to make scratch databases on; None: SQLite
    rabbitmq_api: str | None = None  # the management API; None: http://<the broker's host>:15672
    processes: bool = False  # `skuflow up --processes`: each service in a process of its own (RabbitMQ only)

    @property
    def broker(self) -> str:
        return "memory" if self.broker_url.startswith("memory") else "amqp"

    @property
    def system(self) -> str:
        return "skuflow up --processes" if self.processes else "skuflow up"

    @property
    def databases(self) -> str:
        return "postgresql" if self.postgres_url else "sqlite"


@dataclass
class Stack:
    broker_url: str  # the scratch vhost's URL, or a memory:// one
    database_urls: dict[str, str]  # service -> URL; empty for SQLite (the data folder's default)
    versions: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def scratch_stack(choice: StackChoice, services: Sequence[str] = SERVICE_NAMES) -> AsyncIterator[Stack]:
    """A scratch vhost (or the in-process broker) and, on PostgreSQL, a scratch database for each of `services`."""
    vhost, databases = _vhost(choice), _databases(choice.postgres_url, services)
    async with vhost as (broker_url, broker_version), databases as (urls, pg_version):
        versions = {name: value for name, value in (("rabbitmq", broker_version), ("postgresql", pg_version)) if value}
        yield Stack(broker_url, urls, versions)


@contextlib.asynccontextmanager
async def _vhost(choice: StackChoice) -> AsyncIterator[tuple[str, str]]:
    if choice.broker == "memory":
        yield "memory://", ""
        return
    parts = urlsplit(choice.broker_url)
    api = (choice.rabbitmq_api or f"http://{parts.hostname or '127.0.0.1'}:15672").rstrip("/")
    auth = aiohttp.BasicAuth(parts.username or "guest", parts.password or "guest")
    vhost = f"skuflow-bench-{uuid.uuid4().hex[:8]}"
    where = quote(vhost, safe="")
    async with aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(total=15)) as http:

        async def call(method: str, path: str, body: Any = None) -> Any:
            try:
                async with http.request(method, f"{api}{path}", json=body) as response:
                    if response.status >= 400:
                        raise BenchError(
                            f"RabbitMQ's management API at {api} refused {method} {path} ({response.status}): "
                            f"{(await response.text())[:200]}"
                        )
                    return await response.json(content_type=None) if response.status == 200 else None
            except aiohttp.ClientError as error:
                raise BenchError(
                    f"cannot reach RabbitMQ's management API at {api} (for a scratch vhost; --rabbitmq-api): {error}"
                ) from None

        version = str((await call("GET", "/api/overview") or {}).get("rabbitmq_version", ""))
        await call("PUT", f"/api/vhosts/{where}", {})
        try:
            user = parts.username or "guest"
            await call("PUT", f"/api/permissions/{where}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
            await _reachable(parts._replace(path="/" + where).geturl())
            yield parts._replace(path="/" + where).geturl(), version
        finally:
            await call("DELETE", f"/api/vhosts/{where}")


async def _reachable(amqp_url: str) -> None:
    """The AMQP port itself (the API may answer while it does not): an error naming it, before the system starts."""
    from skuflow.messaging.amqp import unreachable  # aio-pika, imported only when needed

    reason = await unreachable(amqp_url)
    if reason is not None:
        raise BenchError(f"cannot reach RabbitMQ at {without_password(amqp_url)}: {reason}")


@contextlib.asynccontextmanager
async def _databases(postgres_url: str | None, services: Sequence[str]) -> AsyncIterator[tuple[dict[str, str], str]]:
    """Nothing for SQLite (the data folder); else a scratch PostgreSQL database per service, dropped after."""
    if postgres_url is None:
        yield {}, ""
        return
    server = make_url(postgres_url)
    try:
        admin = await asyncpg.connect(_url(server.set(drivername="postgresql")), timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise BenchError(
            f"cannot reach PostgreSQL at {without_password(postgres_url)} (--postgres-url): {error}"
        ) from None
    names = {service: f"skuflow_bench_{service}_{uuid.uuid4().hex[:8]}" for service in services}
    try:
        version = str(await admin.fetchval("SHOW server_version"))
        for name in names.values():
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield {service: _url(server.set(database=name)) for service, name in names.items()}, version
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _url(url: Any) -> str:
    return str(url.render_as_string(hide_password=False))
