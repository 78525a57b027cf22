"""`skuflow up --processes`: the same system, each service in processes of its own, on RabbitMQ and
PostgreSQL. Real processes, real ports; Ctrl-C must leave none of them behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from skuflow.bench.processes import tree
from skuflow.platform.serving import bind
from tests.cli.test_cli import skuflow
from tests.cli.test_system_commands import stop, wait_ready, walk_through
from tests.support.postgres import PostgreSQL

# `skuflow up` listens on the fixed FTP and SMTP ports (2121, 2525): one such test at a time, across workers.
pytestmark = [pytest.mark.amqp, pytest.mark.usefixtures("fixed_ports")]
SERVICES = ("USERS", "INVENTORY", "CATALOG")


@pytest.fixture
def new_databases(environment: dict[str, str]) -> Iterator[list[str]]:
    """Database URLs for the three services, on the test server, that do not exist yet (dropped after)."""
    server = PostgreSQL.from_env()
    names = [f"skuflow_test_up_{uuid.uuid4().hex[:10]}" for _ in SERVICES]
    base = server.url.rsplit("/", 1)[0]
    for service, name in zip(SERVICES, names, strict=True):
        environment[f"SKUFLOW_{service}_DATABASE_URL"] = f"{base}/{name}"
    yield names

    async def drop() -> None:
        connection = await asyncpg.connect(server.maintenance_dsn())
        try:
            for name in names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


async def _existing(names: list[str]) -> list[str]:
    connection = await asyncpg.connect(PostgreSQL.from_env().maintenance_dsn())
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names)
    finally:
        await connection.close()
    return sorted(row["datname"] for row in rows)


def _flow(environment: dict[str, str], correlation_id: str) -> dict:
    listed = skuflow("flows", "--correlation-id", correlation_id, "--json", env=environment)
    assert listed.returncode == 0, listed.stderr
    [flow] = json.loads(listed.stdout)
    return dict(flow)


def _alive(pid: int) -> bool:
    """Running (a zombie, ended and not yet reaped by its parent, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(("mode", "loop"), [("choreography", "asyncio"), ("orchestration", "uvloop")])
def test_up_processes_runs_the_walk_through_and_ctrl_c_stops_every_process(
    environment: dict[str, str], amqp_url: str, new_databases: list[str], mode: str, loop: str
):
    environment |= {
        "SKUFLOW_BROKER_URL": amqp_url,
        "SKUFLOW_MODE": mode,
        "SKUFLOW_EVENT_LOOP": loop,  # each process's, this one's too
        "SKUFLOW_WAREHOUSE_FTP_POLL_SECONDS": "0.2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "skuflow", "up", "--processes", "--instances", "2"],
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(process, *(environment[f"SKUFLOW_{name}_URL"] for name in SERVICES), within=120)
        started = tree(process.pid)
        # This process, then per service a supervisor and its two workers.
        assert len(started) == 1 + 3 * 3, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in started]
        assert asyncio.run(_existing(new_databases)) == sorted(new_databases), "the missing databases are created"

        correlation_id = walk_through(environment)
        if mode == "orchestration":
            deadline = time.monotonic() + 30
            while (flow := _flow(environment, correlation_id))["status"] != "completed":
                assert time.monotonic() < deadline, f"the flow did not complete within 30 s: {flow}"
                time.sleep(0.2)
    finally:
        code, out, err = stop(process)

    assert code == 0, err
    assert "email to ada@example.com: SKU-1 is available again" in out, out + err
    assert "2 worker(s) per service" in out
    deadline = time.monotonic() + 10  # workers end a moment after their supervisor has reaped them
    while any(_alive(pid) for pid in started):
        assert time.monotonic() < deadline, [pid for pid in started if _alive(pid)]
        time.sleep(0.1)
    for name in SERVICES:
        bind("127.0.0.1", int(environment[f"SKUFLOW_{name}_URL"].rsplit(":", 1)[1])).close()  # free again
    for port in (2121, 2525):
        bind("127.0.0.1", port).close()


def test_up_processes_refuses_the_in_process_broker_and_sqlite(environment: dict[str, str]):
    in_process = skuflow("up", "--processes", env=environment)
    assert in_process.returncode == 2
    assert "SKUFLOW_BROKER_URL" in in_process.stderr
    assert "memory://" in in_process.stderr

    on_sqlite = skuflow("up", "--processes", env=environment | {"SKUFLOW_BROKER_URL": "amqp://guest:guest@127.0.0.1/"})
    assert on_sqlite.returncode == 2
    assert "SKUFLOW_INVENTORY_DATABASE_URL" in on_sqlite.stderr
    assert "PostgreSQL" in on_sqlite.stderr

    amqp = {"SKUFLOW_BROKER_URL": "amqp://guest:guest@127.0.0.1/"}
    databases = {f"SKUFLOW_{name}_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/" for name in SERVICES}
    unnamed = skuflow("up", "--processes", env=environment | amqp | databases)
    assert (unnamed.returncode, "SKUFLOW_USERS_DATABASE_URL" in unnamed.stderr) == (2, True)
    assert "name the database" in unnamed.stderr

    alone = skuflow("up", "--instances", "2", env=environment)
    assert (alone.returncode, "--instances needs --processes" in alone.stderr) == (2, True)
    assert not os.path.exists(environment["SKUFLOW_DATA_DIR"]), "nothing was started, not even a secret made"

    with bind("127.0.0.1", 0) as closed:  # bound but not listening: every connection is refused
        port = closed.getsockname()[1]
        nowhere = {"SKUFLOW_BROKER_URL": f"amqp://guest:hidden@127.0.0.1:{port}/"}
        named = {key: f"{url}never_created" for key, url in databases.items()}
        unreachable = skuflow("up", "--processes", env=environment | nowhere | named)
    assert unreachable.returncode == 1
    assert f"cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:{port}/" in unreachable.stderr
    assert "hidden" not in unreachable.stderr
