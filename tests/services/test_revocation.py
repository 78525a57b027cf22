"""Revoking a token (RFC 7009): `POST /v1/auth/revoke` on users, and every transport honouring it within
SKUFLOW_AUTH_CACHE_SECONDS. Real servers on free ports."""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
import pytest

from skuflow.inventory.service import build_app as inventory_app
from skuflow.users.service import build_app as users_app
from tests.conftest import ADMIN_SECRET, WAREHOUSE_SECRET, Stack
from tests.support.servers import RunningServer, serve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # the broker plays no part here

REPORT = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-1", "on_hand": 1}]}
CACHE_SECONDS = 1.0


class Users:
    def __init__(self, server: RunningServer, http: aiohttp.ClientSession) -> None:
        self.url = server.url
        self.http = http

    async def client_token(self, client_id: str = "warehouse", secret: str = WAREHOUSE_SECRET) -> str:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        async with self.http.post(f"{self.url}/v1/auth/token", data=form) as response:
            return str((await response.json())["access_token"])

    async def user_token(self) -> str:
        email = f"u{secrets.token_hex(4)}@example.com"
        user = {"email": email, "name": "U", "password": "a long enough password"}
        async with self.http.post(f"{self.url}/v1/users", json=user) as response:
            assert response.status == 201
        form = {"grant_type": "password", "username": email, "password": user["password"]}
        async with self.http.post(f"{self.url}/v1/auth/token", data=form) as response:
            return str((await response.json())["access_token"])

    async def revoke(self, token: str, *, caller: str | None, **form: str) -> tuple[int, dict | None]:
        headers = {"Authorization": f"Bearer {caller}"} if caller else {}
        async with self.http.post(f"{self.url}/v1/auth/revoke", data={"token": token, **form}, headers=headers) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else None)

    async def active(self, token: str) -> bool:
        async with self.http.post(f"{self.url}/v1/auth/verify", json={"token": token}) as response:
            return bool((await response.json())["active"])


@pytest.fixture
async def users(stack: Stack):
    server = await serve(users_app(stack.settings()))
    async with aiohttp.ClientSession() as http:
        yield Users(server, http)
    await server.stop()


async def test_a_user_revokes_their_own_token_and_it_is_dead_at_once(users: Users):
    token = await users.user_token()
    assert await users.active(token)
    assert await users.revoke(token, caller=token) == (200, None)  # one's own bearer token may revoke itself
    assert not await users.active(token)
    assert await users.revoke(token, caller=await users.user_token()) == (200, None)  # already revoked: still 200


async def test_anything_that_is_not_ones_own_live_token_is_200_and_revokes_nothing(users: Users):
    mine, theirs = await users.user_token(), await users.user_token()
    warehouse = await users.client_token()
    for token in (secrets.token_urlsafe(32), "not a token", "x" * 10_000, theirs, warehouse):
        assert await users.revoke(token, caller=mine) == (200, None), token[:40]
    assert await users.active(theirs), "another user's token is not revoked, nor is it said to exist"
    assert await users.active(warehouse)
    assert await users.revoke(theirs, caller=mine, token_type_hint="refresh_token") == (200, None)
    assert await users.active(theirs)


async def test_the_admin_may_revoke_any_token(users: Users):
    theirs, warehouse = await users.user_token(), await users.client_token()
    admin = await users.client_token("admin", ADMIN_SECRET)
    for token in (theirs, warehouse):
        assert await users.revoke(token, caller=admin) == (200, None)
        assert not await users.active(token)


async def test_a_revocation_needs_a_valid_bearer_token_and_a_form_with_the_token(users: Users):
    mine = await users.user_token()
    assert (await users.revoke(mine, caller=None))[0] == 401
    assert (await users.revoke(mine, caller="forged"))[0] == 401
    async with users.http.post(
        f"{users.url}/v1/auth/revoke",
        data={"token_type_hint": "access_token"},
        headers={"Authorization": f"Bearer {mine}"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"
    async with users.http.post(
        f"{users.url}/v1/auth/revoke", json={"token": mine}, headers={"Authorization": f"Bearer {mine}"}
    ) as response:
        assert response.status == 400, "RFC 7009 takes a form, not JSON"
    assert await users.active(mine), "a refused request revoked nothing"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_every_transport_refuses_a_revoked_token_within_the_cache_seconds(stack: Stack, transport: str):
    settings = stack.settings(auth_transport=transport, auth_cache_seconds=CACHE_SECONDS)
    users_server = await serve(users_app(settings))
    inventory = await serve(inventory_app(settings.model_copy(update={"users_url": users_server.url})))
    try:
        async with aiohttp.ClientSession() as http:
            users = Users(users_server, http)
            token = await users.client_token()

            async def report() -> int:
                headers = {"Authorization": f"Bearer {token}"}
                async with http.post(f"{inventory.url}/v1/stock", json=REPORT, headers=headers) as response:
                    return response.status

            assert await report() == 202  # verified, and now cached by inventory
            revoked_at = time.monotonic()
            assert await users.revoke(token, caller=token) == (200, None)
            await wait_until(lambda: _refused(report), timeout=10, what="inventory to refuse the revoked token")
            assert time.monotonic() - revoked_at <= CACHE_SECONDS + 1.0
    finally:
        await inventory.stop()
        await users_server.stop()


async def _refused(report) -> bool:
    status = await report()
    if status == 202:
        await asyncio.sleep(0.1)
    return status == 401
