"""The fast path: users answers `skuflow.auth.v1.Auth/Verify` over gRPC, beside its HTTP API, and inventory
verifies the tokens it receives over it when SKUFLOW_AUTH_TRANSPORT=grpc. Real servers on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import hypothesis
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import strategies as st

from skuflow.auth.v1 import auth_pb2, auth_pb2_grpc
from skuflow.catalog.service import build_app as catalog_app
from skuflow.embedded.certificate import self_signed
from skuflow.inventory.service import build_app as inventory_app
from skuflow.platform.http import ServiceUnavailable
from skuflow.platform.token_transports import GrpcAsk, RestAsk
from skuflow.users.service import build_app as users_app
from tests.conftest import ADMIN_SECRET, WAREHOUSE_SECRET, Stack
from tests.support.servers import RunningServer, free_socket, serve, url_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # the broker plays no part here

REPORT = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-1", "on_hand": 1}]}


@dataclass
class Shop:
    users: RunningServer
    inventory: RunningServer
    catalog: RunningServer
    http: aiohttp.ClientSession
    grpc_address: str

    async def token(self, client_id: str = "warehouse", secret: str = WAREHOUSE_SECRET) -> str:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
            assert response.status == 200, await response.text()
            return str((await response.json())["access_token"])

    async def user_token(self) -> str:
        """A signed-up user's token: the `wishlist` scope only."""
        email = f"u{secrets.token_hex(4)}@example.com"
        user = {"email": email, "name": "U", "password": "a long enough password"}
        async with self.http.post(f"{self.users.url}/v1/users", json=user) as response:
            assert response.status == 201, await response.text()
        form = {"grant_type": "password", "username": email, "password": user["password"]}
        async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
            return str((await response.json())["access_token"])

    async def report(self, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(f"{self.inventory.url}/v1/stock", json=REPORT, headers=headers) as response:
            return response.status

    async def name_product(self, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        product = {"name": "Lamp", "price": "19.90"}
        async with self.http.put(f"{self.catalog.url}/v1/products/SKU-1", json=product, headers=headers) as response:
            return response.status

    @property
    def verifier(self):
        return self.inventory.app.state.runtime.verifier


@contextlib.asynccontextmanager
async def shop(stack: Stack, **settings: object) -> AsyncIterator[Shop]:
    """Users, inventory and catalog; inventory and catalog verify over gRPC alone: the users URL they are
    given answers nothing (bound, never listening), so a fall back to REST would fail."""
    unused = free_socket()
    configured = stack.settings(**{"auth_transport": "grpc", "token_ttl_seconds": 60, **settings})
    users = await serve(users_app(configured))
    configured = configured.model_copy(update={"users_url": url_of(unused)})
    inventory = await serve(inventory_app(configured))
    catalog = await serve(catalog_app(configured))
    async with aiohttp.ClientSession() as http:
        system = Shop(users, inventory, catalog, http, configured.users_grpc)
        try:
            yield system
        finally:
            await catalog.stop()
            await inventory.stop()
            await system.users.stop()  # the one running now: a test may have started it again
            unused.close()


async def test_inventory_verifies_over_grpc_and_refuses_every_bad_token(stack: Stack):
    async with shop(stack) as system:
        valid = await system.token()
        assert await system.report(valid) == 202
        tampered = valid[:-1] + ("A" if valid[-1] != "A" else "B")
        assert await system.report(tampered) == 401
        assert await system.report("not-a-token") == 401
        assert await system.report(secrets.token_urlsafe(32)) == 401  # the right shape, unknown to users
        assert await system.report(await system.user_token()) == 403  # valid, without stock:write
        assert await system.report(await system.token("admin", ADMIN_SECRET)) == 202
        assert system.verifier.calls >= 5, "each token was asked over the wire"

        # Catalog too: its own scope, the same verifier.
        assert await system.name_product(await system.token("admin", ADMIN_SECRET)) == 200
        assert await system.name_product(valid) == 403  # the warehouse may not write the catalog
        assert await system.name_product(tampered) == 401


async def test_an_expired_token_is_refused_over_grpc(stack: Stack):
    async with shop(stack, token_ttl_seconds=1, auth_cache_seconds=30) as system:
        token = await system.token()
        assert await system.report(token) == 202
        await asyncio.sleep(1.5)  # past the token's own expiry, which bounds the cache's 30 s
        assert await system.report(token) == 401


async def test_users_unreachable_over_grpc_fails_closed_and_is_asked_again_soon_after_it_is_back(stack: Stack):
    async with shop(stack, auth_cache_seconds=0) as system:
        token = await system.token()
        assert await system.report(token) == 202
        await system.users.stop()
        assert await system.report(token) == 503  # never let through
        assert await system.report(token) == 503

        system.users = await serve(users_app(stack.settings(auth_transport="grpc")))  # the same gRPC port
        started = time.monotonic()
        await wait_until(lambda: _answers(system, token, 202), timeout=10, what="verification over gRPC again")
        assert time.monotonic() - started < 5, "gRPC's reconnection backoff is bounded to a second"


async def test_many_concurrent_lookups_of_one_token_make_one_call_and_a_bogus_one_is_remembered(stack: Stack):
    async with shop(stack) as system:
        token = await system.token()
        answers = await asyncio.gather(*(system.report(token) for _ in range(20)))
        assert answers == [202] * 20
        assert system.verifier.calls == 1

        bogus = secrets.token_urlsafe(32)
        assert [await system.report(bogus) for _ in range(5)] == [401] * 5
        assert system.verifier.calls == 2, "a token found invalid is believed invalid for a while"


async def test_grpc_health_and_readiness_show_the_auth_service(stack: Stack):
    async with shop(stack) as system:
        async with grpc.aio.insecure_channel(system.grpc_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "skuflow.auth.v1.Auth"):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
        async with system.http.get(f"{system.users.url}/readyz") as response:
            readiness = await response.json()
        assert readiness["checks"]["grpc"] == "ok"


async def test_verify_answers_whatever_correlation_id_the_caller_sends(stack: Stack):
    """The metadata is the caller's to fill: an id breaking the rule is replaced, never an error."""
    async with shop(stack) as system:
        token = await system.token()
        async with grpc.aio.insecure_channel(system.grpc_address) as channel:
            verify = auth_pb2_grpc.AuthStub(channel).Verify
            for given in ("corr-1", "not an id!", "x" * 500, "\u00e9t\u00e9"):
                metadata = (
                    (("x-correlation-id", given),) if given.isascii() else (("x-correlation-id-bin", given.encode()),)
                )
                answer = await verify(auth_pb2.VerifyRequest(token=token), metadata=metadata, timeout=5)
                assert (answer.active, answer.sub) == (True, "warehouse")
            assert not (await verify(auth_pb2.VerifyRequest(token="nope"), timeout=5)).active


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, as on every Debian machine)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test's certificate", pytrace=False)
    return self_signed(tmp_path_factory.mktemp("grpc-tls"))


async def test_verification_over_grpc_with_tls(stack: Stack, certificate: tuple[Path, Path]):
    cert, key = certificate
    async with shop(stack, users_grpc_cert=cert, users_grpc_key=key, users_grpc_ca=cert) as system:
        token = await system.token()
        assert await system.report(token) == 202
        async with system.http.get(f"{system.users.url}/readyz") as response:
            assert (await response.json())["checks"]["grpc"] == "ok"

        # A client that does not trust the server's certificate, or that speaks plain HTTP/2 to it, gets no
        # answer: verification fails closed.
        other = GrpcAsk(system.grpc_address)
        with pytest.raises(ServiceUnavailable):
            await other(token)
        await other.close()


async def test_a_tls_client_of_a_plain_grpc_server_fails_closed(stack: Stack, certificate: tuple[Path, Path]):
    cert, _ = certificate
    async with shop(stack, users_grpc_ca=cert) as system:
        assert await system.report(await system.token()) == 503


async def test_grpc_and_rest_give_the_same_answer_for_any_token(stack: Stack):
    """A property over generated tokens: issued ones, each mutated, and arbitrary text."""
    async with shop(stack) as system:
        issued = [await system.token(), await system.token("admin", ADMIN_SECRET), await system.user_token()]
        over_rest = RestAsk(system.users.url, system.http)
        over_grpc = GrpcAsk(system.grpc_address)
        tokens = st.one_of(
            st.sampled_from(issued),
            st.tuples(st.sampled_from(issued), st.integers(0, 42), st.characters(codec="ascii")).map(
                lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
            ),
            st.text(max_size=60),
        )
        answers: list[tuple[object, object]] = []

        @hypothesis.settings(max_examples=60, deadline=None, database=None)
        @hypothesis.given(tokens)
        def compare(token: str) -> None:
            answers.append((token, None))

        compare()  # hypothesis drives a sync function: collect the examples, then ask both servers
        try:
            for token, _ in answers:
                assert await over_rest(token) == await over_grpc(token), repr(token)
        finally:
            await over_grpc.close()
        assert len(answers) >= 20


async def _answers(system: Shop, token: str, status: int) -> bool:
    return await system.report(token) == status
