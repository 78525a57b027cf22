from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import hypothesis
import pytest

from skuflow.messaging import SKUFLOW, Broker, BrokerOptions, create_broker, new_id
from skuflow.platform.serving import bind
from skuflow.platform.settings import Settings
from tests.support.postgres import PostgreSQL
from tests.support.rabbitmq import RabbitMQ

T = TypeVar("T")

# Property tests explore new examples on a developer's machine (where a new failure is a find) and replay the
# same ones in CI (where it would be a flaky run); a test that sets `derandomize` itself keeps its choice.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if IN_CI:
    hypothesis.settings.load_profile("ci")

# Short retry delays keep the retry tests quick; the mechanism is the same as with the defaults.
TEST_OPTIONS = BrokerOptions(retry_delays=(0.2, 0.4), prefetch=8, publish_timeout=20, shutdown_grace=5)


@pytest.fixture(scope="session")
def rabbitmq() -> RabbitMQ:
    """The real broker. Missing: a skip on a developer's machine, a failure in CI (never a silent skip)."""
    broker = RabbitMQ.from_env()
    problem = broker.problem()
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs RabbitMQ: {problem}", pytrace=False)
        pytest.skip(problem)
    return broker


@pytest.fixture
def amqp_url(rabbitmq: RabbitMQ) -> Iterator[str]:
    """A fresh virtual host for one test, deleted afterwards."""
    vhost = rabbitmq.create_vhost()
    try:
        yield rabbitmq.url_for(vhost)
    finally:
        rabbitmq.delete_vhost(vhost)


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each conformance test runs against both brokers: the in-process one and a real RabbitMQ."""
    if request.param == "memory":
        return f"memory://test-{new_id()}"
    return str(request.getfixturevalue("amqp_url"))


BrokerFactory = Callable[..., Awaitable[Broker]]


@pytest.fixture
async def make_broker(broker_url: str) -> AsyncIterator[BrokerFactory]:
    """Open connected brokers (with the system topology declared) on the test's broker; close them all."""
    opened: list[Broker] = []

    async def open_broker(app_id: str = "test", options: BrokerOptions = TEST_OPTIONS) -> Broker:
        broker = create_broker(broker_url, app_id, options)
        await broker.connect()
        opened.append(broker)
        await broker.declare(SKUFLOW)
        return broker

    yield open_broker
    for broker in reversed(opened):
        await broker.close()


# -- Service stacks: the embedded one (memory broker, SQLite) and the production one (RabbitMQ, PostgreSQL) --

SERVICES = ("inventory", "catalog", "users")
WAREHOUSE_SECRET = "warehouse-secret-for-tests"
ADMIN_SECRET = "admin-secret-for-tests"


def _in_a_thread(coroutine: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code that may itself be inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgresql() -> PostgreSQL:
    """The real PostgreSQL. Missing: a skip on a developer's machine, a failure in CI."""
    database = PostgreSQL.from_env()
    problem = _in_a_thread(database.problem())
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs PostgreSQL: {problem}", pytrace=False)
        pytest.skip(problem)
    return database


@pytest.fixture(scope="session")
def postgres_databases(postgresql: PostgreSQL) -> Iterator[dict[str, str]]:
    """One database per service for the whole session, emptied before each test (creating a database
    costs ~0.3 s; emptying one, milliseconds)."""
    urls = {service: _in_a_thread(postgresql.create_database()) for service in SERVICES}
    try:
        yield urls
    finally:
        for url in urls.values():
            _in_a_thread(postgresql.drop_database(url))


def free_port() -> int:
    sock = bind("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def free_port_below_ephemeral() -> int:
    """A free port the kernel never hands out for a `bind(..., 0)`, for a server that binds it later, while
    other servers of the test take theirs from the kernel: one picked from the ephemeral range and released
    could be given again to a socket bound in the meantime, and the later bind would fail."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        lowest = int(ports.read().split()[0])
    for _ in range(100):
        port = random.randrange(10_000, lowest)
        try:
            bind("127.0.0.1", port).close()
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port found from 10000 to {lowest}")


@dataclass
class Stack:
    """Where one test's services keep their messages and data."""

    name: str
    broker_url: str
    database_urls: dict[str, str]
    data_dir: str
    overrides: dict[str, object] = field(default_factory=dict)
    # Users' gRPC port: one per stack (each test's users listens on its own), whichever settings() asks.
    users_grpc: str = field(default_factory=lambda: f"127.0.0.1:{free_port_below_ephemeral()}")

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "broker_url": self.broker_url,
            "data_dir": self.data_dir,
            "warehouse_secret": WAREHOUSE_SECRET,
            "admin_secret": ADMIN_SECRET,
            "retry_delays": TEST_OPTIONS.retry_delays,
            "shutdown_grace_seconds": TEST_OPTIONS.shutdown_grace,
            "users_grpc": self.users_grpc,
            **{f"{service}_database_url": url for service, url in self.database_urls.items()},
            **self.overrides,
            **overrides,
        }
        return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["embedded", pytest.param("production", marks=pytest.mark.amqp)])
async def stack(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Stack]:
    """Each service test runs on the embedded stack (memory broker, SQLite) and on the production one
    (RabbitMQ in a fresh vhost, an emptied PostgreSQL database per service)."""
    if request.param == "embedded":
        urls = {service: f"sqlite+aiosqlite:///{tmp_path / service}.db" for service in SERVICES}
        yield Stack("embedded", f"memory://test-{new_id()}", urls, str(tmp_path))
        return
    amqp = request.getfixturevalue("amqp_url")
    postgres: PostgreSQL = request.getfixturevalue("postgresql")
    urls: dict[str, str] = request.getfixturevalue("postgres_databases")
    for url in urls.values():
        await postgres.empty_database(url)
    yield Stack("production", amqp, urls, str(tmp_path))


@pytest.fixture
def rabbitmqctl(rabbitmq: RabbitMQ):
    """`rabbitmqctl` for the broker under test, which must be this machine's."""
    path = shutil.which("rabbitmqctl")
    if not (rabbitmq.is_local and path):
        reason = "restarting the broker needs a local RabbitMQ and rabbitmqctl"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)

    def run(*args: str) -> None:
        subprocess.run([path, *args], check=True, capture_output=True, timeout=120)

    return run


@pytest.fixture
def restart_postgresql(postgresql: PostgreSQL):
    """Restart this machine's PostgreSQL cluster (the one the tests use)."""
    clusters = sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").is_dir() else []
    command = shutil.which("pg_ctlcluster")
    if not (clusters and command):
        reason = "restarting PostgreSQL needs a local cluster and pg_ctlcluster"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    version = clusters[-1].parent.name

    def restart() -> None:
        subprocess.run(
            [command, "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    return restart
