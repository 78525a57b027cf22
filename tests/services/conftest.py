"""Running services for the end-to-end tests: real HTTP servers on free ports, on the test's stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from skuflow.messaging import Broker, Envelope, create_broker
from skuflow.platform.runtime import ServiceRuntime
from tests.conftest import ADMIN_SECRET, TEST_OPTIONS, WAREHOUSE_SECRET, Stack
from tests.support.servers import RunningServer, serve
from tests.support.waiting import wait_until


@dataclass
class System:
    stack: Stack
    http: aiohttp.ClientSession
    users: RunningServer
    inventory: RunningServer
    observer: Broker  # a separate connection to the stack's broker, to look at what was published

    @property
    def inventory_runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.inventory.app.state.runtime
        return runtime

    async def client_token(self, client_id: str = "warehouse", secret: str = WAREHOUSE_SECRET) -> str:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
            assert response.status == 200, await response.text()
            return str((await response.json())["access_token"])

    async def admin_token(self) -> str:
        return await self.client_token("admin", ADMIN_SECRET)

    async def user_token(self, email: str = "ada@example.com", password: str = "correct horse battery") -> str:
        user = {"email": email, "name": "Ada", "password": password}
        async with self.http.post(f"{self.users.url}/v1/users", json=user) as response:
            assert response.status in (201, 409), await response.text()
        form = {"grant_type": "password", "username": email, "password": password}
        async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
            assert response.status == 200, await response.text()
            return str((await response.json())["access_token"])

    async def call(
        self, method: str, path: str, *, token: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        """A request to inventory; returns the status, the decoded JSON body and the headers."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, f"{self.inventory.url}{path}", headers=all_headers, **kwargs) as response:
            body = await response.json(content_type=None) if response.content_length != 0 else None
            return response.status, body, response.headers

    async def published(self, queue: str = "catalog.sku_processed") -> list[Envelope]:
        """Everything inventory published so far (once its outbox is empty), taken off a queue no one consumes."""
        outbox = self.inventory_runtime.outbox
        assert outbox is not None
        # Marked sent only after the broker confirmed: the queue holds them all once the outbox is empty.
        await wait_until(lambda: _is_zero(outbox.pending()), what="inventory's outbox relayed")
        return await self.observer.take(queue, 10_000)


async def _is_zero(count: Any) -> bool:
    return await count == 0


@pytest.fixture
async def system(stack: Stack) -> AsyncIterator[System]:
    from skuflow.inventory.service import build_app as inventory_app
    from skuflow.users.service import build_app as users_app

    users = await serve(users_app(stack.settings()))
    inventory = await serve(inventory_app(stack.settings(users_url=users.url)))
    observer = create_broker(stack.broker_url, "test-observer", TEST_OPTIONS)
    await observer.connect()
    http = aiohttp.ClientSession()
    try:
        yield System(stack, http, users, inventory, observer)
    finally:
        await http.close()
        await observer.close()
        await inventory.stop()
        await users.stop()
