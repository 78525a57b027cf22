"""Inventory checks the tokens it receives by asking users, caches the answer within bounds, fails closed."""

from __future__ import annotations

import time

import aiohttp
import pytest

from skuflow.inventory.service import build_app as inventory_app
from skuflow.platform.serving import bind
from skuflow.users.service import build_app as users_app
from tests.conftest import WAREHOUSE_SECRET, Stack
from tests.support.servers import free_socket, serve, url_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # the broker plays no part here

REPORT = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-1", "on_hand": 1}]}


async def test_a_verified_token_is_cached_expires_with_the_token_and_users_down_means_503(stack: Stack):
    users_socket = free_socket()
    users_port = users_socket.getsockname()[1]
    settings = stack.settings(users_url=url_of(users_socket), token_ttl_seconds=8, auth_cache_seconds=30)
    users = await serve(users_app(settings), users_socket)
    inventory = await serve(inventory_app(settings))
    verifier = inventory.app.state.runtime.verifier
    async with aiohttp.ClientSession() as http:

        async def token() -> str:
            form = {"grant_type": "client_credentials", "client_id": "warehouse", "client_secret": WAREHOUSE_SECRET}
            async with http.post(f"{users.url}/v1/auth/token", data=form) as response:
                return str((await response.json())["access_token"])

        async def report(with_token: str) -> int:
            headers = {"Authorization": f"Bearer {with_token}"}
            async with http.post(f"{inventory.url}/v1/stock", json=REPORT, headers=headers) as response:
                return response.status

        try:
            first, second = await token(), await token()
            issued = time.monotonic()
            assert await report(first) == 202
            assert await report(first) == 202
            assert verifier.calls == 1, "the second request was answered from the cache"

            await users.stop()
            assert await report(first) == 202, "a cached answer needs no users service"
            assert await report(second) == 503, "an unknown token cannot be let through: fail closed"
            users = await serve(users_app(settings), bind("127.0.0.1", users_port))  # the same URL again

            # The cache holds an answer for 30 s, but never past the token's own expiry (8 s).
            await wait_until(lambda: _expired(report, first), timeout=20, what="the token to expire")
            assert time.monotonic() - issued < 20
        finally:
            await inventory.stop()
            await users.stop()


async def _expired(report, token: str) -> bool:
    return await report(token) == 401
