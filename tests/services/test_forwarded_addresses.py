"""Which address the rate limits count (issue 14, defects 10 and 5): `X-Forwarded-For` is believed only
from the peers named in SKUFLOW_FORWARDED_ALLOW_IPS (none by default), and sign-ups count an IPv6 address
by its /64, as token requests do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from skuflow.platform.settings import Settings, SettingsError, load_settings
from skuflow.users.service import build_app
from tests.conftest import Stack
from tests.support.servers import RunningServer, serve

Answer = tuple[int, Any]
SignUp = Callable[[str, str], Awaitable[Answer]]


@pytest.fixture
async def start_users(stack: Stack) -> AsyncIterator[Callable[..., Awaitable[SignUp]]]:
    """Start users with settings overrides; returns a sign-up call that sends `X-Forwarded-For`."""
    servers: list[RunningServer] = []
    async with aiohttp.ClientSession() as http:

        async def start(**overrides: object) -> SignUp:
            server = await serve(build_app(stack.settings(**overrides)))
            servers.append(server)

            async def sign_up(email: str, forwarded_for: str) -> Answer:
                user = {"email": email, "name": "Ada", "password": "correct horse battery"}
                headers = {"X-Forwarded-For": forwarded_for}
                async with http.post(f"{server.url}/v1/users", json=user, headers=headers) as response:
                    return response.status, await response.json()

            return sign_up

        try:
            yield start
        finally:
            for server in servers:
                await server.stop()


async def test_x_forwarded_for_from_an_untrusted_peer_does_not_change_the_address_counted(start_users):
    sign_up = await start_users(sign_ups_per_minute=1)  # SKUFLOW_FORWARDED_ALLOW_IPS unset: no peer trusted

    first = await sign_up("ada@example.com", "198.51.100.7")
    second = await sign_up("grace@example.com", "198.51.100.8")  # "another address", says the client

    assert first[0] == 201, first
    assert second[0] == 429, "the client chose the address it was counted by"
    assert second[1]["detail"].startswith("too many sign-ups from 127.0.0.1;"), second


async def test_a_trusted_proxys_x_forwarded_for_is_the_address_and_ipv6_sign_ups_count_by_their_64(start_users):
    sign_up = await start_users(sign_ups_per_minute=1, forwarded_allow_ips="127.0.0.1")

    first = await sign_up("ada@example.com", "2001:db8:1:2::1")
    same_64 = await sign_up("grace@example.com", "2001:db8:1:2:ffff::9")
    other_64 = await sign_up("grace@example.com", "2001:db8:1:3::1")

    assert first[0] == 201, first
    assert same_64[0] == 429, "one host holds a whole /64: rotating within it must not reset the count"
    assert same_64[1]["detail"].startswith("too many sign-ups from 2001:db8:1:2::/64;"), same_64
    assert other_64[0] == 201, other_64


def test_forwarded_allow_ips_takes_addresses_and_networks_and_names_a_bad_one(monkeypatch: pytest.MonkeyPatch):
    assert Settings().forwarded_allow_ips == ()
    monkeypatch.setenv("SKUFLOW_FORWARDED_ALLOW_IPS", "10.0.0.5, 10.1.0.0/16,::1")
    assert load_settings().forwarded_allow_ips == ("10.0.0.5", "10.1.0.0/16", "::1")

    monkeypatch.setenv("SKUFLOW_FORWARDED_ALLOW_IPS", "10.0.0.5,proxy.example")
    with pytest.raises(SettingsError, match=r"SKUFLOW_FORWARDED_ALLOW_IPS: .*'proxy\.example' is not an IP address"):
        load_settings()
