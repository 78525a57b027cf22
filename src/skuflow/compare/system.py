"""The system `skuflow compare` measures: for one mode, the three services in this process on free ports of
127.0.0.1, an SMTP sink and an FTP server, on the given broker (its queues emptied first) and on scratch
databases (SQLite in the scratch folder, or PostgreSQL databases dropped after); and when it has come to rest."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from skuflow.compare.figures import NotConverged, Samples, all_settled
from skuflow.embedded.ftp import FtpServer
from skuflow.embedded.smtp import SmtpSink
from skuflow.messaging import SKUFLOW, Broker, BrokerOptions, create_broker, wait_queue
from skuflow.platform.serving import bind
from skuflow.platform.settings import Settings
from skuflow.service_client import ServiceClient, connected, until
from skuflow.system import SERVICES, serving

PASSWORD = "compare-password"
SETUP_TIMEOUT = 120.0  # seconds for the setup to settle (not measured; `Workload.timeout` bounds the burst)


@dataclass
class System:
    settings: Settings
    client: ServiceClient
    smtp: SmtpSink
    ftp: FtpServer

    async def settled(self, within: float = SETUP_TIMEOUT) -> dict[str, Samples]:
        """The services' metrics once nothing moves: every queue empty (their retry queues too), every
        delivery settled, and the deliveries the same in two looks in a row (converged is not yet quiet: a
        reply that changes nothing anyone waits for may still be on its way)."""
        queues = [
            name
            for queue in SKUFLOW.queues
            for name in (queue.name, *(wait_queue(queue.name, delay) for delay in self.settings.retry_delays))
        ]
        looks: list[dict[str, Samples]] = []

        async def at_rest(broker: Broker) -> bool:
            looks[:] = [*looks[-1:], await self.scrape()]  # the last two
            empty = all([await broker.depth(name) == 0 for name in queues])
            now, *before = [_deliveries(look) for look in reversed(looks)]
            return empty and before == [now] and all_settled(now)

        async with create_broker(self.settings.broker_url, "compare-observer", BrokerOptions()) as broker:
            try:
                await until(lambda: at_rest(broker), "rest", within, every=0.1, error=NotConverged)
            except NotConverged:
                raise NotConverged(f"the system did not come to rest within {within:g} s") from None
        return looks[-1]

    async def scrape(self) -> dict[str, Samples]:
        """Each service's `/metrics`, read as (metric, labels) -> value."""
        scraped = {}
        for name in SERVICES:
            async with self.client.http.get(f"{getattr(self.settings, f'{name}_url')}/metrics") as response:
                text = await response.text()
            scraped[name] = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        return scraped


def _deliveries(scraped: dict[str, Samples]) -> dict[Any, float]:
    return {
        (service, labels): value
        for service, samples in scraped.items()
        for (name, labels), value in samples.items()
        if name == "skuflow_queue_messages_total"
    }


@contextlib.asynccontextmanager
async def running(mode: str, scratch: Path, broker_url: str, postgres_url: str | None) -> AsyncIterator[System]:
    smtp = SmtpSink()
    await smtp.start()
    ftp = FtpServer(scratch / "ftp", "warehouse", uuid.uuid4().hex)
    ftp.start()
    sockets = {name: bind("127.0.0.1", 0) for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{sock.getsockname()[1]}" for name, sock in sockets.items()}
    broker = f"memory://compare-{uuid.uuid4().hex}" if broker_url.startswith("memory") else broker_url
    async with _databases(postgres_url) as database_urls:
        values: dict[str, Any] = {
            "mode": mode,
            "broker_url": broker,
            "data_dir": scratch,
            "smtp_url": smtp.url,
            "warehouse_ftp_url": ftp.url("/outbox/snapshot.csv"),
            "warehouse_ftp_poll_seconds": 0.2,
            "warehouse_secret": SecretStr(PASSWORD),
            "admin_secret": SecretStr(PASSWORD),
            "token_attempts_per_minute": 10_000,
            "sign_ups_per_minute": 10_000,
            **{f"{name}_url": url for name, url in urls.items()},
            **{f"{name}_database_url": url for name, url in database_urls.items()},
        }
        settings = Settings(**values)
        if not broker.startswith("memory"):
            await _purge(broker)
        try:
            async with (
                serving(list(SERVICES.values()), settings, [sockets[name] for name in SERVICES]),
                connected(settings, seconds=30, hint="") as client,
            ):
                yield System(settings, client, smtp, ftp)
        finally:
            for sock in sockets.values():  # closed already, unless the services never started
                sock.close()
            ftp.stop()
            await smtp.stop()


@contextlib.asynccontextmanager
async def _databases(postgres_url: str | None) -> AsyncIterator[dict[str, str]]:
    """Nothing for SQLite (the data directory); else a scratch PostgreSQL database per service, dropped after."""
    if postgres_url is None:
        yield {}
        return
    server = make_url(postgres_url)
    admin = await asyncpg.connect(_url(server.set(drivername="postgresql")))
    names = {service: f"skuflow_compare_{service}_{uuid.uuid4().hex[:8]}" for service in SERVICES}
    try:
        for name in names.values():
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield {service: _url(server.set(database=name)) for service, name in names.items()}
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _url(url: Any) -> str:
    return str(url.render_as_string(hide_password=False))


async def _purge(broker_url: str) -> None:
    """Leftovers of earlier runs would be counted and would disturb convergence: empty the system's queues."""
    async with create_broker(broker_url, "compare", BrokerOptions()) as broker:
        await broker.declare(SKUFLOW)  # so that every queue exists (a first run on this broker)
        for queue in SKUFLOW.queues:
            await broker.purge(queue.name)
