"""The chaos suite's faults that need real processes: each service runs as `skuflow serve` (catalog with
two supervised workers) on RabbitMQ and PostgreSQL, under the steady load of `test_chaos`, while a catalog
worker is killed (`kill -9`) mid-message, catalog's workers are replaced one by one (SIGHUP) and inventory is
stopped (SIGTERM: it drains and exits 0) and started again. Afterwards nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from skuflow.embedded.smtp import SmtpSink
from skuflow.platform.db import Database
from tests.cli.test_feed_crash import Service, pid_in
from tests.cli.test_system_commands import wait_ready
from tests.conftest import ADMIN_SECRET, WAREHOUSE_SECRET
from tests.services.conftest import MODES
from tests.services.test_chaos import LOAD_SECONDS, Load, Target, check_nothing_lost_or_doubled, wishers
from tests.support.postgres import PostgreSQL

pytestmark = pytest.mark.amqp

SERVICE_NAMES = ("users", "inventory", "catalog")


@pytest.mark.parametrize("mode", MODES)
async def test_workers_killed_rolled_and_drained_under_load(
    environment: dict[str, str],
    amqp_url: str,
    postgresql: PostgreSQL,
    postgres_databases: dict[str, str],
    mode: str,
):
    for url in postgres_databases.values():
        await postgresql.empty_database(url)
    smtp = SmtpSink()
    await smtp.start()
    environment |= {
        "SKUFLOW_MODE": mode,
        "SKUFLOW_BROKER_URL": amqp_url,
        "SKUFLOW_SMTP_URL": smtp.url,
        "SKUFLOW_WAREHOUSE_SECRET": WAREHOUSE_SECRET,
        "SKUFLOW_ADMIN_SECRET": ADMIN_SECRET,
        "SKUFLOW_RETRY_DELAYS": "0.5,1,2,4,8",
        "SKUFLOW_SHUTDOWN_GRACE_SECONDS": "5",
        **{f"SKUFLOW_{name.upper()}_DATABASE_URL": url for name, url in postgres_databases.items()},
    }
    urls = {name: environment[f"SKUFLOW_{name.upper()}_URL"] for name in SERVICE_NAMES}
    services = {
        "users": Service(environment, service="users"),
        "inventory": Service(environment, service="inventory"),
        "catalog": Service(environment, "--workers", "2", service="catalog"),
    }
    databases = {name: Database(url, Path("unused")) for name, url in postgres_databases.items()}
    http = aiohttp.ClientSession()
    codes = {}
    try:
        for name, service in services.items():
            await asyncio.to_thread(wait_ready, service.process, urls[name])
        catalog_worker = pid_in(await asyncio.to_thread(services["catalog"].wait_for_log, "worker 1 started"))
        target = Target(f"processes {mode}", http, urls, databases, lambda: smtp.mails)
        wishes = await wishers(target)
        load = Load(target, seed=23)
        faults_over = asyncio.Event()  # the load goes on until the last fault is behind it, however slow
        async with load.running(LOAD_SECONDS, until=faults_over):
            await asyncio.sleep(1)
            os.kill(catalog_worker, signal.SIGKILL)  # mid-message, most likely: the load is steady
            await asyncio.to_thread(services["catalog"].wait_for_log, "worker 1 started")
            services["catalog"].process.send_signal(signal.SIGHUP)
            await asyncio.to_thread(services["catalog"].wait_for_log, "worker 2 replaced")
            codes["inventory, drained"] = await asyncio.to_thread(services["inventory"].terminate)
            services["inventory"] = Service(environment, service="inventory")
            await asyncio.to_thread(wait_ready, services["inventory"].process, urls["inventory"])
            await asyncio.sleep(1)  # load on the restarted inventory too
            faults_over.set()
        assert load.resent > 0, "inventory's restart was felt"
        await check_nothing_lost_or_doubled(target, load, wishes)
    finally:
        await http.close()
        for name, service in services.items():
            codes[name] = await asyncio.to_thread(service.terminate)
        for database in databases.values():
            await database.close()
        await smtp.stop()
    assert set(codes.values()) == {0}, {name: services[name.split(",")[0]].log()[-2000:] for name in codes}
