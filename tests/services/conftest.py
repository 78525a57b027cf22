"""Running services for the end-to-end tests: real HTTP servers on free ports, on the test's stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from skuflow.catalog.db import products
from skuflow.embedded.smtp import SmtpSink
from skuflow.messaging import Broker, BrokerStats, Envelope, Queue, Topology, create_broker
from skuflow.messaging.routes import SKU_EVENTS
from skuflow.platform import telemetry
from skuflow.platform.runtime import ServiceRuntime
from skuflow.users import passwords
from tests.conftest import ADMIN_SECRET, TEST_OPTIONS, WAREHOUSE_SECRET, Stack
from tests.support.servers import RunningServer, free_socket, serve, url_of
from tests.support.waiting import wait_until


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same argon2id at a fraction of the cost: the defaults take ~250 ms a hash on a two-core machine
    (the command-line tests run the real thing)."""
    monkeypatch.setattr(passwords, "hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@dataclass
class System:
    stack: Stack
    http: aiohttp.ClientSession
    users: RunningServer
    inventory: RunningServer
    catalog: RunningServer
    smtp: SmtpSink  # a real SMTP server that keeps what it receives
    observer: Broker  # a separate connection to the stack's broker, to look at what was published
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def inventory_runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.inventory.app.state.runtime
        return runtime

    async def catalog_knows(self, sku: str, revision: int) -> bool:
        """Whether catalog holds the SKU's availability at `revision` or newer."""
        runtime: ServiceRuntime = self.catalog.app.state.runtime
        async with runtime.db.reading() as session:
            known = await session.scalar(select(products.c.availability_revision).where(products.c.sku == sku))
        return known is not None and known >= revision

    async def client_token(self, client_id: str = "warehouse", secret: str = WAREHOUSE_SECRET) -> str:
        """A token of a client, asked for once per test (the token endpoint is rate limited)."""
        if client_id not in self._tokens:
            form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
            async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
                assert response.status == 200, await response.text()
                self._tokens[client_id] = str((await response.json())["access_token"])
        return self._tokens[client_id]

    async def admin_token(self) -> str:
        return await self.client_token("admin", ADMIN_SECRET)

    async def user_token(self, email: str = "ada@example.com", password: str = "correct horse battery") -> str:
        return (await self.sign_up(email, password))[1]

    async def sign_up(self, email: str, password: str = "correct horse battery") -> tuple[str, str]:
        """A user (signed up now, or already) and a token of theirs: (id, token)."""
        user = {"email": email, "name": email.split("@")[0], "password": password}
        async with self.http.post(f"{self.users.url}/v1/users", json=user) as response:
            assert response.status in (201, 409), await response.text()
        form = {"grant_type": "password", "username": email, "password": password}
        async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
            assert response.status == 200, await response.text()
            token = str((await response.json())["access_token"])
        async with self.http.post(f"{self.users.url}/v1/auth/verify", json={"token": token}) as response:
            return str((await response.json())["sub"]), token

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        service: str = "inventory",
        **kwargs: Any,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        """A request to a service (inventory by default); returns the status, the decoded JSON body and the headers."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        base: RunningServer = getattr(self, service)
        async with self.http.request(method, f"{base.url}{path}", headers=all_headers, **kwargs) as response:
            body = await response.json(content_type=None) if response.content_length != 0 else None
            return response.status, body, response.headers

    async def published(self, queue: str = "test.observer.sku_processed") -> list[Envelope]:
        """Everything inventory published so far (once its outbox is empty), taken off the test's own queue."""
        outbox = self.inventory_runtime.outbox
        assert outbox is not None
        # Marked sent only after the broker confirmed: the queue holds them all once the outbox is empty.
        await wait_until(lambda: _is_zero(outbox.pending()), what="inventory's outbox relayed")
        return await self.observer.take(queue, 10_000)


def settled(stats: BrokerStats) -> bool:
    """No delivery is in flight: every one counted as delivered was acked, retried or dead-lettered."""
    return stats.delivered == stats.acked + stats.retried + stats.dead_lettered


async def _is_zero(count: Any) -> bool:
    return await count == 0


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every service built after this fixture traces into this exporter: ask for it before `system`."""
    exporter = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        telemetry.reset()


@pytest.fixture
def mode() -> str:
    """The coordination style; a test module runs in both with
    `pytestmark = pytest.mark.parametrize("mode", MODES)`."""
    return "choreography"


MODES = ["choreography", "orchestration"]


@pytest.fixture
def smtp_sink() -> SmtpSink:
    """The SMTP server the system sends to (not started yet); a test module may ask for one with AUTH or TLS."""
    return SmtpSink()


@pytest.fixture
async def system(stack: Stack, mode: str, smtp_sink: SmtpSink) -> AsyncIterator[System]:
    """Users, inventory and catalog on real ports of 127.0.0.1, on the test's stack, with an SMTP sink."""
    from skuflow.catalog.service import build_app as catalog_app
    from skuflow.inventory.service import build_app as inventory_app
    from skuflow.users.service import build_app as users_app

    smtp = smtp_sink
    await smtp.start()
    sockets = {name: free_socket() for name in ("users", "inventory", "catalog")}
    settings = stack.settings(
        smtp_url=smtp.url, mode=mode, **{f"{name}_url": url_of(sock) for name, sock in sockets.items()}
    )
    users = await serve(users_app(settings), sockets["users"])
    inventory = await serve(inventory_app(settings), sockets["inventory"])
    catalog = await serve(catalog_app(settings), sockets["catalog"])
    observer = create_broker(stack.broker_url, "test-observer", TEST_OPTIONS)
    await observer.connect()
    # A queue of the test's own on the fanout exchange, that no service consumes: it sees every event.
    await observer.declare(Topology((SKU_EVENTS,), (Queue("test.observer.sku_processed", SKU_EVENTS),)))
    http = aiohttp.ClientSession()
    try:
        system = System(stack, http, users, inventory, catalog, smtp, observer)
        yield system
    finally:
        await http.close()
        await observer.close()
        # The ones the test left running (a test may stop a service and start another in its place).
        for server in (system.catalog, system.inventory, system.users):
            await server.stop()
        await smtp.stop()


@pytest.fixture
def patient(stack: Stack) -> None:
    """Retries that outlast the outages: 0.5 + 1 + 2 + 4 + 8 s before a message is dead-lettered."""
    stack.overrides |= {"retry_delays": (0.5, 1.0, 2.0, 4.0, 8.0)}
