"""Every protected endpoint of every service refuses every kind of bad token, over every way of verifying one
(SKUFLOW_AUTH_TRANSPORT rest, grpc, local) and with either format users issues (SKUFLOW_TOKEN_FORMAT opaque,
jwt); and what only the `local` transport has: no call per token, revocations pulled, fail closed when the
pull is stale, keys rotated. Real servers on free ports; the protected endpoints are read from each service's
OpenAPI document (an operation that may answer 401), so that a new one is covered without being listed."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import hypothesis
import pytest
from hypothesis import strategies as st
from sqlalchemy import delete

from skuflow.auth import signed_tokens
from skuflow.catalog.service import build_app as catalog_app
from skuflow.inventory.service import build_app as inventory_app
from skuflow.platform.auth import TokenVerifier
from skuflow.platform.http import ServiceUnavailable
from skuflow.platform.token_transports import LocalAsk, RestAsk
from skuflow.users.db import revoked_tokens, signing_keys
from skuflow.users.service import build_app as users_app
from tests.conftest import ADMIN_SECRET, WAREHOUSE_SECRET, Stack, free_port_below_ephemeral
from tests.support.servers import RunningServer, serve
from tests.support.waiting import wait_until

CACHE_SECONDS = 1.0
NOT_BEARER = {("POST", "/v1/auth/token")}  # its 401 is a failed client authentication (RFC 6749)


@dataclass
class Shop:
    users: RunningServer  # the users inventory and catalog ask
    short_lived: RunningServer  # another users process on the same database, issuing 1-second tokens
    inventory: RunningServer
    catalog: RunningServer
    http: aiohttp.ClientSession
    token_format: str

    async def token(self, client_id: str = "warehouse", secret: str = WAREHOUSE_SECRET, *, by: str = "") -> str:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        async with self.http.post(f"{by or self.users.url}/v1/auth/token", data=form) as response:
            assert response.status == 200, await response.text()
            return str((await response.json())["access_token"])

    async def user(self) -> tuple[str, str]:
        """A new user's id and token (scope `wishlist`)."""
        user = {"email": f"u{secrets.token_hex(4)}@example.com", "name": "U", "password": "a long enough password"}
        async with self.http.post(f"{self.users.url}/v1/users", json=user) as response:
            assert response.status == 201, await response.text()
            user_id = str((await response.json())["id"])
        form = {"grant_type": "password", "username": user["email"], "password": user["password"]}
        async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
            return user_id, str((await response.json())["access_token"])

    async def active(self, token: str) -> bool:
        async with self.http.post(f"{self.users.url}/v1/auth/verify", json={"token": token}) as response:
            return bool((await response.json())["active"])

    async def report(self, token: str) -> int:
        body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-1", "on_hand": 1}]}
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(f"{self.inventory.url}/v1/stock", json=body, headers=headers) as response:
            return response.status

    async def protected(self, user_id: str) -> list[tuple[str, str, str]]:
        """(service URL, method, path) of every operation that takes a bearer token, path parameters filled."""
        found = []
        for server in (self.inventory, self.catalog, self.users):
            async with self.http.get(f"{server.url}/openapi.json") as response:
                document = await response.json()
            for path, operations in document["paths"].items():
                for method, operation in operations.items():
                    if "401" in operation["responses"] and (method.upper(), path) not in NOT_BEARER:
                        filled = path.format(sku="SKU-1", user_id=user_id, correlation_id="c-1", queue="catalog.x")
                        found.append((server.url, method.upper(), filled))
        assert len(found) >= 20, found
        return found

    async def answers(self, token: str, endpoints: list[tuple[str, str, str]]) -> dict[str, int]:
        statuses = {}
        for url, method, path in endpoints:
            headers = {"Authorization": f"Bearer {token}"}
            body: dict[str, Any] = {"data": {"token": "x"}} if path == "/v1/auth/revoke" else {"json": {}}
            async with self.http.request(method, f"{url}{path}", headers=headers, **body) as response:
                statuses[f"{method} {path}"] = response.status
        return statuses


@contextlib.asynccontextmanager
async def shop(stack: Stack, transport: str, token_format: str, **settings: object) -> AsyncIterator[Shop]:
    configured = stack.settings(
        auth_transport=transport, token_format=token_format, auth_cache_seconds=CACHE_SECONDS, **settings
    )
    users = await serve(users_app(configured))
    other_port = f"127.0.0.1:{free_port_below_ephemeral()}"
    short_lived = await serve(
        users_app(configured.model_copy(update={"token_ttl_seconds": 1, "users_grpc": other_port}))
    )
    services = configured.model_copy(update={"users_url": users.url})
    inventory = await serve(inventory_app(services))
    catalog = await serve(catalog_app(services))
    try:
        async with aiohttp.ClientSession() as http:
            yield Shop(users, short_lived, inventory, catalog, http, token_format)
    finally:
        for server in (catalog, inventory, short_lived, users):
            await server.stop()


TRANSPORTS = [("rest", "opaque"), ("grpc", "opaque"), ("local", "jwt"), ("grpc", "jwt")]


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
@pytest.mark.parametrize(("transport", "token_format"), TRANSPORTS)
async def test_every_protected_endpoint_refuses_every_bad_token(stack: Stack, transport: str, token_format: str):
    async with shop(stack, transport, token_format) as system:
        expired = await system.token(by=system.short_lived.url)  # issued first: it expires while the rest run
        user_id, user_token = await system.user()
        other_id, other_user_token = await system.user()
        endpoints = await system.protected(user_id)
        warehouse = await system.token()
        assert await system.report(warehouse) == 202
        shape = "jwt" if signed_tokens.looks_like_jwt(warehouse) else "opaque"
        assert shape == token_format

        # Valid, but not allowed there: 403, never 401 (the token is good) nor 2xx.
        users_own = [e for e in endpoints if e[2].startswith(f"/v1/users/{user_id}")]
        admin_only = [e for e in endpoints if "/admin/" in e[2]]
        for token, where in ((user_token, admin_only), (other_user_token, users_own), (warehouse, users_own)):
            statuses = await system.answers(token, where)
            assert set(statuses.values()) == {403}, statuses
        inventory_and_catalog = [e for e in endpoints if e[0] != system.users.url and e[2] != "/readyz"]
        statuses = await system.answers(user_token, inventory_and_catalog)
        assert set(statuses.values()) == {403}, statuses

        revoked = await system.token()
        assert await system.report(revoked) == 202  # cached by inventory
        async with system.http.post(
            f"{system.users.url}/v1/auth/revoke",
            data={"token": revoked},
            headers={"Authorization": f"Bearer {revoked}"},
        ) as response:
            assert response.status == 200
        await wait_until(lambda: _refused(system, revoked), timeout=CACHE_SECONDS * 3 + 5, what="the revocation")
        await wait_until(lambda: _inactive(system, expired), timeout=10, what="the 1-second token to expire")

        bad = {
            "expired": expired,
            "revoked": revoked,
            "tampered": _tampered(warehouse),
            "unknown to users": secrets.token_urlsafe(32) if token_format == "opaque" else _foreign_jwt(),
            "not a token": "not-a-token",
        }
        if token_format == "jwt":
            bad["signed by another key, under users' key id"] = _foreign_jwt(kid=_kid(warehouse))
            bad["alg none"] = _unsigned(warehouse)
        for kind, token in bad.items():
            statuses = await system.answers(token, endpoints)
            assert set(statuses.values()) == {401}, (kind, statuses)
        assert other_id != user_id


@pytest.mark.parametrize("stack", ["embedded", pytest.param("production", marks=pytest.mark.amqp)], indirect=True)
async def test_local_verification_makes_no_call_and_fails_closed_once_revocations_are_stale(stack: Stack):
    async with shop(stack, "local", "jwt") as system:
        token = await system.token()
        ask: LocalAsk = system.inventory.app.state.runtime._ask
        assert isinstance(ask, LocalAsk)
        fetched = ask.key_fetches
        for _ in range(3):
            assert await ask(token) is not None  # no cache in front: each verified in process
        assert ask.key_fetches == fetched, "the key set is fetched once, not per token"

        # A token users never signed (a key it does not have) costs at most one read of the key set a second:
        # the first is answered invalid; those within the second after, "not now" (its key may be newer still).
        assert await ask(_foreign_jwt()) is None
        for _ in range(4):
            with pytest.raises(ServiceUnavailable, match="try again"):
                await ask(_foreign_jwt())
        assert ask.key_fetches == fetched + 1

        await system.users.stop()
        assert await system.report(token) == 202, "users down: still verified, while the revocations are fresh"
        await wait_until(lambda: _status(system, token, 503), timeout=CACHE_SECONDS + 5, what="fail closed")
        assert await system.report(token) == 503, "a cached answer is not let through either"


@pytest.mark.parametrize("stack", ["embedded", pytest.param("production", marks=pytest.mark.amqp)], indirect=True)
async def test_a_rotated_key_signs_new_tokens_and_the_old_ones_stay_valid_until_they_expire(stack: Stack):
    async with shop(stack, "local", "jwt") as system:
        old = await system.token()
        admin = await system.token("admin", ADMIN_SECRET)
        async with system.http.post(
            f"{system.users.url}/v1/admin/signing-keys/rotate", headers={"Authorization": f"Bearer {admin}"}
        ) as response:
            assert response.status == 200, await response.text()
            rotation = await response.json()
        assert rotation["retired"] == [_kid(old)]
        new = await system.token()
        assert _kid(new) == rotation["kid"] != _kid(old)
        async with system.http.get(f"{system.users.url}/.well-known/jwks.json") as response:
            published = {key["kid"] for key in (await response.json())["keys"]}
        assert published == {_kid(old), _kid(new)}

        # Inventory learns the new key on its first token; the old key's tokens still verify.
        ask: LocalAsk = system.inventory.app.state.runtime._ask
        before = ask.key_fetches
        await wait_until(lambda: _status(system, new, 202), timeout=5, what="the new key's token verified")
        assert ask.key_fetches == before + 1
        assert await system.report(old) == 202
        assert await system.active(old)
        assert await system.active(new)
        # The other users process signs with the new key too (after its refresh), and verifies both.
        assert await _active_at(system, system.short_lived.url, old)


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_rest_and_local_give_the_same_answer_for_any_jwt(stack: Stack):
    """A property over generated tokens: issued JWTs, each with one character changed, and arbitrary text."""
    async with shop(stack, "local", "jwt") as system:
        issued = [await system.token(), await system.token("admin", ADMIN_SECRET), (await system.user())[1]]
        over_rest = RestAsk(system.users.url, system.http)
        local: LocalAsk = system.inventory.app.state.runtime._ask
        tokens = st.one_of(
            st.sampled_from(issued),
            st.tuples(st.sampled_from(issued), st.integers(0, 700), st.characters(codec="ascii")).map(
                lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
            ),
            st.text(max_size=60),
        )
        examples: list[str] = []

        @hypothesis.settings(max_examples=80, deadline=None, database=None)
        @hypothesis.given(tokens)
        def collect(token: str) -> None:
            examples.append(token)

        collect()
        for token in examples:
            rest, in_process = await over_rest(token), await local(token)
            assert (rest is None) == (in_process is None), repr(token)
            if rest is not None and in_process is not None:
                assert (rest.sub, rest.scopes, rest.exp) == (in_process.sub, in_process.scopes, in_process.exp)
        assert len(examples) >= 20


async def test_the_verifier_asks_a_local_transport_about_revocation_at_every_cache_hit():
    """A cached answer ends as soon as the transport knows the token revoked, and fails closed when it cannot
    know; a transport that asks users each time (rest, grpc) is trusted until the cache's bound."""
    revoked: set[str] = set()
    stale = False

    async def ask(token: str):
        from skuflow.platform.auth import Principal

        return Principal(sub="s", scopes=frozenset({"stock:write"}), exp=int(time.time()) + 60, token_id=token)

    def is_revoked(principal) -> bool:
        if stale:
            raise ServiceUnavailable("stale")
        return principal.token_id in revoked

    verifier = TokenVerifier(ask, cache_seconds=30, revoked=is_revoked)
    assert await verifier.verify("t1") is not None
    assert await verifier.verify("t1") is not None
    assert verifier.calls == 1
    revoked.add("t1")
    assert await verifier.verify("t1") is None
    stale = True
    with pytest.raises(ServiceUnavailable):
        await verifier.verify("t1")


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_the_revocations_feed_validates_since_and_pages_by_it(stack: Stack):
    async with shop(stack, "local", "jwt") as system:
        url = f"{system.users.url}/v1/auth/revocations"
        for since in ("5", "2026-12-05T10:00:00", "0001-01-01T00:00:00+14:00", "yesterday"):
            async with system.http.get(url, params={"since": since}) as response:
                assert response.status == 422, since
                assert "since" in json.dumps(await response.json()), since
        token = await system.token()
        async with system.http.post(
            f"{system.users.url}/v1/auth/revoke", data={"token": token}, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 200
        async with system.http.get(url) as response:
            page = await response.json()
        jti = _claims(token)["jti"]
        assert [one["jti"] for one in page["revocations"]] == [jti]
        assert page["more"] is False
        async with system.http.get(url, params={"since": page["next"]}) as response:
            again = await response.json()
        assert [one["jti"] for one in again["revocations"]] == [jti], "the next page starts a little back"


async def _refused(system: Shop, token: str) -> bool:
    return await system.report(token) == 401


async def _status(system: Shop, token: str, status: int) -> bool:
    return await system.report(token) == status


async def _inactive(system: Shop, token: str) -> bool:
    return not await system.active(token)


async def _active_at(system: Shop, users_url: str, token: str) -> bool:
    async with system.http.post(f"{users_url}/v1/auth/verify", json={"token": token}) as response:
        return bool((await response.json())["active"])


def _tampered(token: str) -> str:
    """One character of the middle changed (the payload of a JWT: a sub or scope forged)."""
    at = len(token) // 2
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


def _kid(token: str) -> str:
    return str(_part(token, 0)["kid"])


def _claims(token: str) -> dict[str, Any]:
    return _part(token, 1)


def _part(token: str, index: int) -> dict[str, Any]:
    text = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))))


def _foreign_jwt(kid: str | None = None) -> str:
    """A well-formed token of our shape, signed by a key users does not have."""
    key = signed_tokens.new_signing_key()
    private = key.private_key()
    return signed_tokens.sign(kid or key.kid, private, sub="admin", scope="admin", ttl_seconds=60, now=time.time())


def _unsigned(token: str) -> str:
    """The same claims under `"alg": "none"` and no signature."""
    header = {**_part(token, 0), "alg": "none"}
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{token.split('.')[1]}."


@pytest.mark.parametrize("stack", ["embedded", pytest.param("production", marks=pytest.mark.amqp)], indirect=True)
async def test_a_key_users_no_longer_publishes_is_not_trusted_after_the_next_pull(stack: Stack):
    async with shop(stack, "local", "jwt") as system:
        old = await system.token()
        assert await system.report(old) == 202
        admin = await system.token("admin", ADMIN_SECRET)
        async with system.http.post(
            f"{system.users.url}/v1/admin/signing-keys/rotate", headers={"Authorization": f"Bearer {admin}"}
        ) as response:
            assert response.status == 200
        # Its tokens' time is up (as after the token lifetime): users publishes it no more.
        db = system.users.app.state.runtime.db
        async with db.transaction() as session:
            await session.execute(delete(signing_keys).where(signing_keys.c.kid == _kid(old)))
        await wait_until(lambda: _status(system, old, 401), timeout=10, what="the retired key no longer trusted")


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
async def test_a_revocation_stamped_before_the_cursor_is_still_learned_by_a_full_pull(stack: Stack):
    """A users process whose clock is behind (or a slow commit) stamps a revocation before the verifiers'
    cursor: every tenth pull asks for them all again."""
    async with shop(stack, "local", "jwt") as system:
        token = await system.token()
        assert await system.report(token) == 202
        claims = _claims(token)
        db = system.users.app.state.runtime.db
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        async with db.transaction() as session:
            await session.execute(
                revoked_tokens.insert().values(
                    jti=claims["jti"],
                    sub=claims["sub"],
                    expires_at=datetime.fromtimestamp(claims["exp"], UTC),
                    revoked_at=long_ago,
                )
            )
        await wait_until(lambda: _status(system, token, 401), timeout=15, what="the revocation learned")
