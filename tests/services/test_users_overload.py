"""The users service under a flood of password work (issue 14, defect 5): argon2 hashes wait in a bounded
queue, and a request that finds no place in it is answered 503 at once, with `Retry-After`."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher

from skuflow.users import passwords
from skuflow.users.service import build_app
from tests.conftest import Stack
from tests.support.servers import RunningServer, serve

PASSWORD = "correct horse battery"
# ~25-50 ms a hash on this machine kind: dear enough that a flood queues, cheap enough for a test.
FLOOD_HASHER = PasswordHasher(time_cost=2, memory_cost=32 * 1024, parallelism=1)


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any
    seconds: float


async def post(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Answer:
    started = time.perf_counter()
    async with http.post(url, **kwargs) as response:
        body = await response.json(content_type=None)
        return Answer(response.status, body, response.headers, time.perf_counter() - started)


@contextlib.asynccontextmanager
async def client_at(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from `address` (any of 127/8 is this machine's loopback), with no
    cap on concurrent connections, so that a flood is a flood."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


@pytest.fixture
async def users(stack: Stack) -> AsyncIterator[RunningServer]:
    server = await serve(build_app(stack.settings(token_attempts_per_minute=1000, sign_ups_per_minute=1000)))
    try:
        yield server
    finally:
        await server.stop()


async def flood(url: str, address: str, requests: int) -> list[Answer]:
    """Token requests from `address`, all at once, each naming a username never seen before (which no
    per-username limit stops)."""
    async with client_at(address) as http:
        forms = [
            {"grant_type": "password", "username": f"{uuid.uuid4().hex}@example.com", "password": "a guess"}
            for _ in range(requests)
        ]
        return list(await asyncio.gather(*(post(http, f"{url}/v1/auth/token", data=form) for form in forms)))


async def login(url: str, address: str, *, tries: int = 5) -> tuple[Answer, float]:
    """Ada's login as a well-behaved client makes it: on 503, again after `Retry-After`. Returns the
    last answer and the seconds it all took."""
    started = time.perf_counter()
    form = {"grant_type": "password", "username": "ada@example.com", "password": PASSWORD}
    async with client_at(address) as http:
        for _ in range(tries):
            answer = await post(http, f"{url}/v1/auth/token", data=form)
            if answer.status != 503:
                break
            await asyncio.sleep(int(answer.headers["Retry-After"]))
    return answer, time.perf_counter() - started


async def sign_up_ada(url: str) -> None:
    async with client_at("127.0.0.3") as http:
        user = {"email": "ada@example.com", "name": "Ada", "password": PASSWORD}
        assert (await post(http, f"{url}/v1/users", json=user)).status == 201


@pytest.fixture
def dear_argon2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hashes that take a while, the unknown users' dummy one included: it is cached, so computed again
    with this hasher, and forgotten afterwards, so that later tests compute a cheap one again."""
    monkeypatch.setattr(passwords, "hasher", FLOOD_HASHER)
    passwords._dummy_hash.cache_clear()
    yield
    passwords._dummy_hash.cache_clear()


def assert_busy(answer: Answer) -> None:
    assert answer.status == 503, answer.body
    assert answer.body["error"] == "temporarily_unavailable"
    assert set(answer.body) == {"error", "error_description"}
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.usefixtures("dear_argon2")
async def test_a_flood_from_one_address_gets_prompt_503s_and_a_login_from_elsewhere_is_not_held_up(
    users: RunningServer,
):
    await sign_up_ada(users.url)

    flooding = asyncio.create_task(flood(users.url, "127.0.0.1", 200))
    await _until_busy()
    answer, seconds = await login(users.url, "127.0.0.2", tries=1)
    answers = await flooding

    assert answer.status == 200, answer.body
    busy = [one for one in answers if one.status == 503]
    assert len(busy) >= 100, "one address holds at most its share of the queue: the rest is refused"
    for one in busy[:5]:
        assert_busy(one)
    assert {one.status for one in answers} <= {400, 503}
    # Without the bound the login waited behind the flood's 200 hashes (~14 s here); with it, behind at most
    # one round of them (~0.4 s here). The bounds leave room for a loaded machine.
    assert seconds < 5.0, f"a login took {seconds:.2f} s during the flood"
    assert statistics.median(one.seconds for one in busy) < 2.0, "the 503s are answered at once, not queued"
    async with aiohttp.ClientSession() as http, http.get(f"{users.url}/metrics") as response:
        metrics = await response.text()
    [refused] = [line for line in metrics.splitlines() if line.startswith("skuflow_argon2_refused_total{")]
    assert float(refused.split()[-1]) >= len(busy), "counted (since the process started: the queue is per process)"


@pytest.mark.usefixtures("dear_argon2")
async def test_a_flood_from_many_addresses_fills_the_queue_and_a_patient_login_still_completes(
    users: RunningServer,
):
    await sign_up_ada(users.url)
    addresses = [f"127.0.1.{n}" for n in range(1, 13)]  # more networks than the queue has shares for

    flooding = asyncio.gather(*(flood(users.url, address, 25) for address in addresses))
    await _until_busy()
    answer, seconds = await login(users.url, "127.0.0.2")
    answers = [one for per_address in await flooding for one in per_address]

    assert answer.status == 200, answer.body
    busy = [one for one in answers if one.status == 503]
    served = len(answers) - len(busy)
    assert busy, "the queue was full: the excess is refused"
    assert served <= len(answers) // 2, f"{served} of {len(answers)} flood requests were hashed"
    # The queue holds at most 8 rounds of hashes: a login that waits out Retry-After gets in soon after.
    assert seconds < 12.0, f"a login took {seconds:.2f} s during the flood (31 s without the bound, 2 s with it here)"
    assert statistics.median(one.seconds for one in busy) < 2.0


async def test_without_a_place_in_the_queue_sign_up_and_tokens_answer_503_in_their_own_shapes(
    users: RunningServer,
):
    async with aiohttp.ClientSession() as http:
        with _queue_full():
            user = {"email": "grace@example.com", "name": "Grace", "password": PASSWORD}
            signed = await post(http, f"{users.url}/v1/users", json=user)
            form = {"grant_type": "client_credentials", "client_id": "warehouse", "client_secret": "x"}
            token = await post(http, f"{users.url}/v1/auth/token", data=form)
        after = await post(http, f"{users.url}/v1/users", json=user)
        async with http.get(f"{users.url}/openapi.json") as response:
            paths = (await response.json())["paths"]

    assert signed.status == 503, signed.body
    assert set(signed.body) == {"detail"}
    assert "busy" in signed.body["detail"]
    assert 1 <= int(signed.headers["Retry-After"]) <= 60
    assert_busy(token)
    assert after.status == 201, "the refused sign-up created nothing and counted nothing"
    assert "503" in paths["/v1/users"]["post"]["responses"]
    documented = paths["/v1/auth/token"]["post"]["responses"]["503"]
    assert "Retry-After" in documented["headers"]
    assert documented["content"]["application/json"]["schema"]["$ref"].endswith("/OAuthErrorOut")


@contextlib.contextmanager
def _queue_full() -> Iterator[None]:
    """Every place of the hash queue held, by as many networks (none of them the test client's)."""
    with contextlib.ExitStack() as held:
        for n in range(passwords.queue.capacity):
            held.enter_context(passwords.queue.place(f"192.0.2.{n}"))
        yield


async def _until_busy(within: float = 10.0) -> None:
    """Until the pool has hashes waiting or running: the flood has reached it."""
    deadline = time.monotonic() + within
    while _nothing_held() and _pool_idle():
        assert time.monotonic() < deadline, "the flood never reached the hash pool"
        await asyncio.sleep(0.005)


def _nothing_held() -> bool:
    queue = getattr(passwords, "queue", None)
    return queue is None or queue.held == 0


def _pool_idle() -> bool:
    """Before the bound existed nothing held places; the pool's own queue shows the flood then."""
    return passwords._threads._work_queue.empty()
