"""`skuflow serve inventory --workers 2` on RabbitMQ and PostgreSQL: a killed worker comes back, SIGHUP
replaces the workers one by one while the service keeps answering, SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import aio_pika
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.cli.test_feed_crash import Service, pid_in
from tests.cli.test_system_commands import wait_ready
from tests.support.postgres import PostgreSQL

pytestmark = pytest.mark.amqp


def consumers(amqp_url: str, queue: str) -> int:
    async def count() -> int:
        connection = await aio_pika.connect(amqp_url)
        async with connection, connection.channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.consumer_count)

    return asyncio.run(count())


def wait_for(condition, what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_workers_are_supervised(
    environment: dict[str, str],
    amqp_url: str,
    postgresql: PostgreSQL,
    postgres_databases: dict[str, str],
):
    asyncio.run(postgresql.empty_database(postgres_databases["inventory"]))
    environment |= {
        "SKUFLOW_BROKER_URL": amqp_url,
        "SKUFLOW_INVENTORY_DATABASE_URL": postgres_databases["inventory"],
        "SKUFLOW_SHUTDOWN_GRACE_SECONDS": "5",
    }
    inventory = environment["SKUFLOW_INVENTORY_URL"]
    service = Service(environment, "--workers", "2")
    try:
        first = pid_in(service.wait_for_log("worker 1 started"))
        service.wait_for_log("worker 2 started")
        wait_ready(service.process, inventory)
        wait_for(lambda: consumers(amqp_url, "inventory.sku_processed") == 2, "two competing consumers")

        # A worker killed mid-way is started again (after a delay), and consumes again.
        signal_kill(first)
        service.wait_for_log("worker 1 (pid")
        restarted = pid_in(service.wait_for_log("worker 1 started"))
        assert restarted != first
        wait_for(lambda: consumers(amqp_url, "inventory.sku_processed") == 2, "the restarted worker consuming")

        # SIGHUP: one by one, each new worker ready before its old one goes. Consumption never stops (the
        # queue always has a consumer), and HTTP answers all along: a GET that a stopping worker had just
        # accepted may be closed unanswered, and is sent again, as HTTP clients do with idempotent requests.
        failures: list[str] = []
        fewest_consumers = [2]
        rolling = threading.Event()

        def get_health() -> None:
            with urllib.request.urlopen(f"{inventory}/healthz", timeout=10) as response:
                assert response.status == 200

        def keep_asking() -> None:
            while not rolling.is_set():
                try:
                    try:
                        get_health()
                    except (ConnectionError, http.client.RemoteDisconnected, TimeoutError, urllib.error.URLError):
                        get_health()  # once more, as HTTP clients do for an idempotent request
                except Exception as error:
                    failures.append(repr(error))
                fewest_consumers[0] = min(fewest_consumers[0], consumers(amqp_url, "inventory.sku_processed"))
                time.sleep(0.02)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        service.process.send_signal(signal.SIGHUP)
        service.wait_for_log("worker 1 replaced")
        service.wait_for_log("worker 2 replaced")
        rolling.set()
        asker.join()
        assert failures == []
        assert fewest_consumers[0] >= 1, "the queue was never without a consumer"
        wait_for(lambda: consumers(amqp_url, "inventory.sku_processed") == 2, "both new workers consuming")
    finally:
        code = service.terminate()
    assert code == 0, service.log()
    assert "all inventory workers stopped" in service.log()


def signal_kill(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


def test_a_failed_rolling_restart_keeps_the_old_worker_and_a_stop_during_a_roll_ends_them_all(
    environment: dict[str, str], amqp_url: str, postgresql: PostgreSQL
):
    database = asyncio.run(postgresql.create_database())
    environment |= {
        "SKUFLOW_BROKER_URL": amqp_url,
        "SKUFLOW_INVENTORY_DATABASE_URL": database,
        "SKUFLOW_SHUTDOWN_GRACE_SECONDS": "5",
    }
    inventory = environment["SKUFLOW_INVENTORY_URL"]
    service = Service(environment, "--workers", "1")
    workers: list[int] = []
    try:
        workers.append(pid_in(service.wait_for_log("worker 1 started")))
        wait_ready(service.process, inventory)

        # A new worker cannot reach the database (the old one keeps the connections it has): it goes, the
        # old one stays and answers.
        asyncio.run(allow_connections(postgresql, database, False))
        service.process.send_signal(signal.SIGHUP)
        workers.append(pid_in(service.wait_for_log("worker 1 started")))
        service.wait_for_log("worker 1: the new one did not become ready; the old one stays")
        assert alive(workers[0]), "the old worker stays"
        assert not alive(workers[1]), "the new one went"
        with urllib.request.urlopen(f"{inventory}/healthz", timeout=10) as response:
            assert response.status == 200

        # Fixed, a roll goes through; a stop in the middle of the next one ends the old and the new worker.
        asyncio.run(allow_connections(postgresql, database, True))
        service.process.send_signal(signal.SIGHUP)
        workers.append(pid_in(service.wait_for_log("worker 1 started")))
        service.wait_for_log("worker 1 replaced")
        service.process.send_signal(signal.SIGHUP)
        workers.append(pid_in(service.wait_for_log("worker 1 started")))
    finally:
        code = service.terminate()
        asyncio.run(allow_connections(postgresql, database, True))
        asyncio.run(postgresql.drop_database(database))
    assert code == 0, service.log()
    assert "all inventory workers stopped" in service.log()
    assert not any(alive(pid) for pid in workers), "no worker outlives the supervisor"


async def allow_connections(postgresql: PostgreSQL, url: str, allowed: bool) -> None:
    connection = await asyncpg.connect(postgresql.maintenance_dsn())
    try:
        name = make_url(url).database
        await connection.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
    finally:
        await connection.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a child the supervisor has not reaped yet is a zombie: not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_that_cannot_start_stop_the_supervisor_naming_the_cause(environment: dict[str, str], amqp_url: str):
    environment |= {
        "SKUFLOW_BROKER_URL": amqp_url,
        "SKUFLOW_INVENTORY_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/skuflow_no_such_database",
    }
    service = Service(environment, "--workers", "2")
    try:
        code = service.process.wait(timeout=60)
    finally:
        service.terminate()
    log = service.log()
    assert code == 1, log
    assert "inventory cannot start: its database (SKUFLOW_INVENTORY_DATABASE_URL=" in log
    assert 'database \\"skuflow_no_such_database\\" does not exist' in log
    assert "could not start" in log
    assert "restarting in" not in log, "a start-up that cannot work is not retried for ever"
