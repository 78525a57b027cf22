"""The verifier in front of every transport, with a stand-in for users' answer (the transports themselves are
tested against real servers in tests/services/test_grpc_auth.py): its cache bounds, the negative cache, one
call for concurrent look-ups of one token, and failing closed."""

from __future__ import annotations

import asyncio

import pytest

from skuflow.platform.auth import NEGATIVE_SECONDS, Principal, TokenVerifier
from skuflow.platform.http import ServiceUnavailable

NOW = 1_000_000.0
WAREHOUSE = Principal("warehouse", frozenset({"stock:write"}), exp=int(NOW) + 3600)


class Users:
    """Answers as users would: `valid` tokens are the warehouse's; `down` raises as an unreachable users does;
    `gate`, when set, holds every answer until it opens."""

    def __init__(self, valid: set[str]) -> None:
        self.valid = valid
        self.asked: list[str] = []
        self.down = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, token: str) -> Principal | None:
        self.asked.append(token)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ServiceUnavailable("users does not answer")
        return WAREHOUSE if token in self.valid else None


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def verifier(users: Users, clock: Clock, cache_seconds: float = 30, max_entries: int = 100) -> TokenVerifier:
    return TokenVerifier(users, cache_seconds, max_entries=max_entries, clock=clock)


async def test_a_valid_answer_is_kept_for_the_cache_seconds_then_asked_again():
    users, clock = Users({"good"}), Clock()
    check = verifier(users, clock)
    assert await check.verify("good") == WAREHOUSE
    clock.now += 29
    assert await check.verify("good") == WAREHOUSE
    assert users.asked == ["good"]
    clock.now += 2
    assert await check.verify("good") == WAREHOUSE
    assert users.asked == ["good", "good"]


async def test_a_valid_answer_is_never_kept_past_the_tokens_expiry():
    users, clock = Users({"good"}), Clock()
    check = verifier(users, clock, cache_seconds=10_000)
    await check.verify("good")
    clock.now = WAREHOUSE.exp - 1
    await check.verify("good")
    assert len(users.asked) == 1
    clock.now = WAREHOUSE.exp
    await check.verify("good")
    assert len(users.asked) == 2


async def test_an_invalid_answer_is_kept_briefly_and_never_longer_than_the_cache():
    users, clock = Users(set()), Clock()
    check = verifier(users, clock)
    assert [await check.verify("bogus") for _ in range(3)] == [None, None, None]
    assert users.asked == ["bogus"]
    clock.now += NEGATIVE_SECONDS
    assert await check.verify("bogus") is None
    assert users.asked == ["bogus", "bogus"]

    short = verifier(users, clock, cache_seconds=1)
    await short.verify("other")
    clock.now += 1
    await short.verify("other")
    assert users.asked.count("other") == 2, "the negative answer is held no longer than SKUFLOW_AUTH_CACHE_SECONDS"


async def test_no_cache_at_all_asks_every_time():
    users, clock = Users({"good"}), Clock()
    check = verifier(users, clock, cache_seconds=0)
    for _ in range(3):
        await check.verify("good")
        await check.verify("bogus")
    assert len(users.asked) == 6


async def test_a_flood_of_bogus_tokens_does_not_push_the_valid_ones_out():
    users, clock = Users({"good"}), Clock()
    check = verifier(users, clock, max_entries=10)
    await check.verify("good")
    for n in range(50):
        await check.verify(f"bogus-{n}")
    await check.verify("good")
    assert users.asked.count("good") == 1
    for n in range(40, 50):  # the newest ten bogus ones are still remembered; the older are not
        await check.verify(f"bogus-{n}")
    await check.verify("bogus-0")
    assert users.asked.count("bogus-0") == 2
    assert users.asked.count("bogus-45") == 1


async def test_concurrent_lookups_of_one_token_make_one_call_and_all_get_its_answer():
    users, clock = Users({"good"}), Clock()
    users.gate = asyncio.Event()
    check = verifier(users, clock)
    waiting = [asyncio.create_task(check.verify("good")) for _ in range(20)]
    await asyncio.sleep(0)
    users.gate.set()
    assert await asyncio.gather(*waiting) == [WAREHOUSE] * 20
    assert users.asked == ["good"]
    assert check.calls == 1


async def test_one_caller_giving_up_does_not_cancel_the_answer_the_others_await():
    users, clock = Users({"good"}), Clock()
    users.gate = asyncio.Event()
    check = verifier(users, clock)
    impatient, patient = asyncio.create_task(check.verify("good")), asyncio.create_task(check.verify("good"))
    await asyncio.sleep(0)
    impatient.cancel()
    users.gate.set()
    assert await patient == WAREHOUSE
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert users.asked == ["good"]


async def test_users_down_fails_every_waiter_closed_and_nothing_is_remembered():
    users, clock = Users({"good"}), Clock()
    users.gate, users.down = asyncio.Event(), True
    check = verifier(users, clock)
    waiting = [asyncio.create_task(check.verify("good")) for _ in range(5)]
    await asyncio.sleep(0)
    users.gate.set()
    answers = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(answer, ServiceUnavailable) for answer in answers)

    users.down = False
    assert await check.verify("good") == WAREHOUSE, "a failure is not cached: the next request asks again"
    assert len(users.asked) == 2
