"""The users service's accounts and tokens end to end: a real HTTP server on both stacks (CONTRACT sections 3, 7)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from fastapi import FastAPI
from multidict import CIMultiDictProxy
from sqlalchemy import func, select

from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.settings import Settings, SettingsError
from skuflow.users.access_tokens import AccessTokens
from skuflow.users.db import tokens
from skuflow.users.db import users as users_table
from skuflow.users.service import build_app
from skuflow.users.signing_keys import SigningKeys
from tests.conftest import ADMIN_SECRET, WAREHOUSE_SECRET, Stack
from tests.support.servers import RunningServer, serve
from tests.support.waiting import wait_until

PASSWORD = "correct horse battery"
ALL_SCOPES = {"stock:write", "catalog:write", "wishlist", "admin"}


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class Users:
    """One running users service and a client for it."""

    url: str
    http: aiohttp.ClientSession
    app: FastAPI

    @property
    def runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.app.state.runtime
        return runtime

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        async with self.http.request(method, f"{self.url}{path}", **kwargs) as response:
            body = await response.json(content_type=None) if response.content_length != 0 else None
            return Answer(response.status, body, response.headers)

    async def sign_up(self, email: str, name: str = "Ada", password: str = PASSWORD, **extra: Any) -> Answer:
        return await self.request(
            "POST", "/v1/users", json={"email": email, "name": name, "password": password, **extra}
        )

    async def token(self, form: dict[str, str] | bytes, **kwargs: Any) -> Answer:
        """A token request; a dict is sent form-encoded, bytes as they are (set the Content-Type yourself)."""
        return await self.request("POST", "/v1/auth/token", data=form, **kwargs)

    async def password_token(self, username: str, password: str = PASSWORD, **form: str) -> Answer:
        return await self.token({"grant_type": "password", "username": username, "password": password, **form})

    async def client_token(self, client_id: str, secret: str, **form: str) -> Answer:
        fields = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, **form}
        return await self.token(fields)

    async def verify(self, token: str) -> dict[str, Any]:
        answer = await self.request("POST", "/v1/auth/verify", json={"token": token})
        assert answer.status == 200, answer.body
        assert answer.headers["Cache-Control"] == "no-store"
        return dict(answer.body)


def basic(client_id: str, secret: str) -> dict[str, str]:
    """HTTP Basic client authentication as RFC 6749 section 2.3.1 has it: form-encoded, then base64."""
    credentials = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}


def assert_oauth_error(answer: Answer, status: int, error: str) -> None:
    assert answer.status == status, answer.body
    assert answer.body["error"] == error
    assert set(answer.body) == {"error", "error_description"}, "RFC 6749 errors are top-level, not {'detail'}"
    assert answer.headers["Cache-Control"] == "no-store"


StartUsers = Callable[..., Awaitable[Users]]


@pytest.fixture
async def start_users(stack: Stack) -> AsyncIterator[StartUsers]:
    """Start the users service on the test's stack, with optional settings overrides; stop it afterwards."""
    servers: list[RunningServer] = []
    async with aiohttp.ClientSession() as http:

        async def start(**overrides: object) -> Users:
            server = await serve(build_app(stack.settings(**overrides)))
            servers.append(server)
            return Users(server.url, http, server.app)

        try:
            yield start
        finally:
            for server in servers:
                await server.stop()


@pytest.fixture
async def users(start_users: StartUsers) -> Users:
    return await start_users()


@pytest.fixture
async def ada(users: Users) -> dict[str, str]:
    """A signed-up user: {"id", "email", "name"}."""
    answer = await users.sign_up("ada@example.com")
    assert answer.status == 201, answer.body
    return dict(answer.body)


# -- Sign-up --


async def test_sign_up_answers_201_with_the_account_and_stores_only_an_argon2_hash_of_the_password(users: Users):
    answer = await users.sign_up("  Grace.Hopper@Example.COM ", name=" Grace ")

    assert answer.status == 201, answer.body
    assert set(answer.body) == {"id", "email", "name"}
    assert answer.body["email"] == "grace.hopper@example.com"
    assert answer.body["name"] == "Grace"
    assert uuid.UUID(hex=answer.body["id"]).hex == answer.body["id"]
    async with users.runtime.db.reading() as session:
        stored = await session.scalar(select(users_table.c.password_hash).where(users_table.c.id == answer.body["id"]))
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_an_email_already_taken_is_409_whatever_its_case(users: Users, ada: dict[str, str]):
    answer = await users.sign_up("ADA@example.com", name="Another Ada")

    assert answer.status == 409
    assert "detail" in answer.body


async def test_concurrent_sign_ups_with_one_email_make_one_account(users: Users):
    answers = await asyncio.gather(users.sign_up("twin@example.com"), users.sign_up("Twin@Example.com"))

    assert sorted(answer.status for answer in answers) == [201, 409]


async def test_an_invalid_sign_up_is_422_naming_the_field_and_creates_nothing(users: Users):
    valid = {"email": "linus@example.com", "name": "Linus", "password": PASSWORD}
    invalid = [
        ("email", {"email": "not-an-address"}),
        ("email", {"email": "linus@localhost"}),
        ("email", {"email": "a@[x.y"}),  # assigned to a To header, it broke the mailer for everyone
        ("email", {"email": "postmaster,me@example.com"}),  # two recipients in one address
        ("email", {"email": "Linus <linus@example.com>"}),
        ("email", {"email": "linus@[127.0.0.1]"}),
        ("email", {"email": '"linus torvalds"@example.com'}),
        ("email", {"email": "linus@example.com\nBcc: everyone@example.com"}),
        ("name", {"name": ""}),
        ("name", {"name": "Linus\nBcc: everyone@example.com"}),
        ("name", {"name": "Linus\u2028Torvalds"}),
        ("name", {"name": "   "}),
        ("name", {"name": "x" * 101}),
        ("password", {"password": "seven77"}),
        ("password", {"password": "p" * 129}),
        ("password", {"password": "password\ud800"}),  # no UTF-8 encoder, argon2's included, takes it
        ("role", {"role": "admin"}),  # extra fields are refused
    ]
    for field, change in invalid:
        answer = await users.request("POST", "/v1/users", json=valid | change)
        assert answer.status == 422, (change, answer.body)
        assert field in {error["loc"][-1] for error in answer.body["detail"]}, (change, answer.body)
    missing = await users.request("POST", "/v1/users", json={"email": "linus@example.com", "name": "Linus"})
    assert missing.status == 422
    assert missing.body["detail"][0]["loc"] == ["body", "password"]

    assert (await users.request("POST", "/v1/users", json=valid)).status == 201  # the address was still free


# -- The token endpoint: grants --


async def test_the_password_grant_gives_the_user_a_wishlist_token(users: Users, ada: dict[str, str]):
    answer = await users.password_token("Ada@Example.com")

    assert answer.status == 200, answer.body
    assert answer.body["token_type"] == "bearer"
    assert answer.body["scope"] == "wishlist"
    assert answer.body["expires_in"] == users.runtime.settings.token_ttl_seconds
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Pragma"] == "no-cache"
    verified = await users.verify(answer.body["access_token"])
    assert verified["active"] is True
    assert (verified["sub"], verified["scope"]) == (ada["id"], "wishlist")
    now = datetime.now(UTC).timestamp()
    assert now < verified["exp"] <= now + users.runtime.settings.token_ttl_seconds


async def test_a_wrong_password_and_an_unknown_user_are_both_invalid_grant(users: Users, ada: dict[str, str]):
    wrong_password = await users.password_token(ada["email"], "not the password")
    unknown_user = await users.password_token("nobody@example.com")

    assert_oauth_error(wrong_password, 400, "invalid_grant")
    assert_oauth_error(unknown_user, 400, "invalid_grant")
    assert wrong_password.body == unknown_user.body, "the answer does not tell which addresses have accounts"


async def test_a_client_authenticates_in_the_form_or_with_http_basic(users: Users):
    in_form = await users.client_token("warehouse", WAREHOUSE_SECRET)
    with_basic = await users.token({"grant_type": "client_credentials"}, headers=basic("warehouse", WAREHOUSE_SECRET))

    for answer in (in_form, with_basic):
        assert answer.status == 200, answer.body
        assert answer.body["scope"] == "stock:write"
        verified = await users.verify(answer.body["access_token"])
        assert (verified["active"], verified["sub"], verified["scope"]) == (True, "warehouse", "stock:write")
    assert in_form.body["access_token"] != with_basic.body["access_token"]


async def test_a_wrong_client_secret_is_401_invalid_client(users: Users):
    in_form = await users.client_token("warehouse", "not the secret")
    with_basic = await users.token({"grant_type": "client_credentials"}, headers=basic("warehouse", "not the secret"))
    unknown = await users.client_token("stranger", WAREHOUSE_SECRET)
    malformed = await users.token({"grant_type": "client_credentials"}, headers={"Authorization": "Basic !!!"})

    for answer in (in_form, with_basic, unknown, malformed):
        assert_oauth_error(answer, 401, "invalid_client")
    assert with_basic.headers["WWW-Authenticate"].startswith("Basic")
    assert malformed.headers["WWW-Authenticate"].startswith("Basic")


async def test_the_admin_client_has_every_scope(users: Users):
    answer = await users.token({"grant_type": "client_credentials"}, headers=basic("admin", ADMIN_SECRET))

    assert answer.status == 200, answer.body
    assert set(answer.body["scope"].split()) == ALL_SCOPES
    verified = await users.verify(answer.body["access_token"])
    assert verified["sub"] == "admin"
    assert set(verified["scope"].split()) == ALL_SCOPES


async def test_a_requested_scope_narrows_the_token_and_one_beyond_the_grant_is_invalid_scope(users: Users):
    narrowed = await users.client_token("admin", ADMIN_SECRET, scope="wishlist stock:write")
    beyond = await users.client_token("warehouse", WAREHOUSE_SECRET, scope="stock:write admin")
    unknown = await users.client_token("warehouse", WAREHOUSE_SECRET, scope="root")

    assert narrowed.status == 200, narrowed.body
    assert set(narrowed.body["scope"].split()) == {"wishlist", "stock:write"}
    assert (await users.verify(narrowed.body["access_token"]))["scope"] == narrowed.body["scope"]
    assert_oauth_error(beyond, 400, "invalid_scope")
    assert_oauth_error(unknown, 400, "invalid_scope")


async def test_an_unknown_grant_type_is_unsupported_grant_type(users: Users):
    answer = await users.token({"grant_type": "authorization_code", "code": "abc"})

    assert_oauth_error(answer, 400, "unsupported_grant_type")


async def test_a_malformed_token_request_is_invalid_request(users: Users):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    requests: list[tuple[dict[str, str] | bytes, dict[str, str]]] = [
        ({"username": "ada@example.com", "password": PASSWORD}, {}),  # no grant_type
        ({"grant_type": "password", "password": PASSWORD}, {}),  # no username
        ({"grant_type": "password", "username": "ada@example.com", "password": ""}, {}),  # empty counts as missing
        ({"grant_type": "client_credentials", "client_id": "warehouse"}, {}),  # no client_secret
        (b"grant_type=password&grant_type=client_credentials", form),  # a repeated parameter
        (b"grant_type=password&username=%FF%FE&password=x", form),  # not UTF-8
        (b'{"grant_type": "client_credentials"}', {"Content-Type": "application/json"}),
    ]
    for body, headers in requests:
        answer = await users.token(body, headers=headers)
        assert_oauth_error(answer, 400, "invalid_request")
    both_ways = await users.token(
        {"grant_type": "client_credentials", "client_id": "warehouse", "client_secret": WAREHOUSE_SECRET},
        headers=basic("warehouse", WAREHOUSE_SECRET),
    )
    assert_oauth_error(both_ways, 400, "invalid_request")


async def test_a_client_credentials_request_without_any_client_authentication_is_invalid_client(users: Users):
    answer = await users.token({"grant_type": "client_credentials"})

    assert_oauth_error(answer, 401, "invalid_client")


async def test_every_answer_of_the_token_endpoint_says_no_store(users: Users):
    answers = [
        await users.client_token("warehouse", WAREHOUSE_SECRET),
        await users.client_token("warehouse", "wrong"),
        await users.token({"grant_type": "magic"}),
        await users.request("GET", "/v1/auth/token"),  # 405 from the router
        await users.request(  # 413 from the shared body limit
            "POST", "/v1/auth/token", data=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "text/plain"}
        ),
    ]
    assert [answer.status for answer in answers] == [200, 401, 400, 405, 413]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store", answer.status
        assert answer.headers["Pragma"] == "no-cache", answer.status


# -- Verification --


async def test_verify_answers_only_inactive_for_an_unknown_a_malformed_or_a_tampered_token(users: Users):
    issued = (await users.client_token("warehouse", WAREHOUSE_SECRET)).body["access_token"]
    tampered = issued[:10] + ("A" if issued[10] != "A" else "B") + issued[11:]

    for token in ("", "not a token", "x" * 43, "é" * 5000, tampered):
        assert await users.verify(token) == {"active": False}, token[:20]
    assert (await users.verify(issued))["active"] is True


async def test_verify_without_a_token_is_422(users: Users):
    answer = await users.request("POST", "/v1/auth/verify", json={"jwt": "abc"})

    assert answer.status == 422
    assert answer.body["detail"][0]["loc"] == ["body", "token"]


async def test_a_token_is_inactive_once_its_lifetime_has_passed(start_users: StartUsers):
    users = await start_users(token_ttl_seconds=3)
    answer = await users.client_token("warehouse", WAREHOUSE_SECRET)
    assert answer.body["expires_in"] == 3
    token = answer.body["access_token"]
    assert (await users.verify(token))["active"] is True

    async def expired() -> bool:
        return (await users.verify(token)) == {"active": False}

    await wait_until(expired, timeout=10, what="the token to expire")


async def test_tokens_expired_long_ago_are_deleted_when_tokens_are_issued(users: Users):
    old = (await users.client_token("warehouse", WAREHOUSE_SECRET)).body["access_token"]
    db = users.runtime.db

    async def stored() -> int:
        async with db.reading() as session:
            return int(await session.scalar(select(func.count()).select_from(tokens)) or 0)

    assert await stored() == 1
    # Two hours later: the first token expired (an hour's lifetime) more than an hour ago.
    later = datetime.now(UTC) + timedelta(hours=2, seconds=1)
    issuing = AccessTokens(db, SigningKeys(db, 60, create=False), "opaque", ttl_seconds=60)
    await issuing.issue(sub="warehouse", scope="stock:write", kind="client", now=later)

    assert await stored() == 1
    assert await users.verify(old) == {"active": False}


# -- Rate limit --


async def test_token_requests_are_limited_per_username_and_other_usernames_are_unaffected(
    start_users: StartUsers,
):
    users = await start_users(token_attempts_per_minute=3)
    assert (await users.sign_up("ada@example.com")).status == 201

    attempts = [await users.password_token("ada@example.com", "wrong password") for _ in range(3)]
    refused = await users.password_token("ADA@example.com")  # the right password, and another spelling

    assert [answer.status for answer in attempts] == [400, 400, 400]
    assert refused.status == 429, refused.body
    assert refused.body["error"] == "invalid_request"
    assert "ada@example.com" in refused.body["error_description"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Cache-Control"] == "no-store"
    other = await users.password_token("grace@example.com")
    assert_oauth_error(other, 400, "invalid_grant")  # answered, not limited


async def test_token_requests_are_limited_per_client(start_users: StartUsers):
    users = await start_users(token_attempts_per_minute=3)

    attempts = [
        await users.client_token("warehouse", WAREHOUSE_SECRET),
        await users.client_token("warehouse", "wrong"),
        await users.token({"grant_type": "client_credentials"}, headers=basic("warehouse", "wrong")),
    ]
    refused = await users.token({"grant_type": "client_credentials"}, headers=basic("warehouse", WAREHOUSE_SECRET))

    assert [answer.status for answer in attempts] == [200, 401, 401]
    assert refused.status == 429, refused.body
    assert set(refused.body) == {"error", "error_description"}
    assert "warehouse" in refused.body["error_description"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await users.client_token("admin", ADMIN_SECRET)).status == 200  # another client is not limited


async def test_sign_ups_are_limited_per_address(start_users: StartUsers):
    users = await start_users(sign_ups_per_minute=2)
    for n in range(2):
        assert (await users.sign_up(f"user{n}@example.com")).status == 201
    refused = await users.sign_up("user2@example.com")
    assert refused.status == 429, refused.body
    assert refused.body["detail"].startswith("too many sign-ups from 127.0.0.1; retry in ")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as elsewhere:
        assert (await Users(users.url, elsewhere, users.app).sign_up("user2@example.com")).status == 201


async def test_a_client_limited_from_one_address_still_gets_tokens_from_another(start_users: StartUsers):
    users = await start_users(token_attempts_per_minute=2)
    for _ in range(2):  # someone who knows the client id, at 127.0.0.1
        assert (await users.client_token("warehouse", "a guess")).status == 401
    assert (await users.client_token("warehouse", "a guess")).status == 429

    # The warehouse, at another address (any of 127/8 is this machine's loopback).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as elsewhere:
        warehouse = Users(users.url, elsewhere, users.app)
        assert (await warehouse.client_token("warehouse", WAREHOUSE_SECRET)).status == 200


# -- Start-up and readiness --


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("warehouse_secret", "SKUFLOW_WAREHOUSE_SECRET"), ("admin_secret", "SKUFLOW_ADMIN_SECRET")],
)
def test_the_service_refuses_to_start_without_a_client_secret_naming_the_variable(
    missing: str, variable: str, tmp_path
):
    secrets: dict[str, object] = {"warehouse_secret": WAREHOUSE_SECRET, "admin_secret": ADMIN_SECRET, missing: None}
    settings = Settings(broker_url="memory://", data_dir=tmp_path, **secrets)  # type: ignore[arg-type]

    with pytest.raises(SettingsError, match=variable):
        build_app(settings)


async def test_the_service_is_ready_once_started(users: Users):
    answer = await users.request("GET", "/readyz")

    assert answer.status == 200, answer.body
    assert answer.body["checks"]["database"] == "ok"
