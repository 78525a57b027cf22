"""/readyz tells anyone each check's state; only the admin client sees the details (issue 14, defect 7)."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.services.conftest import System

STATES = {"ok", "degraded", "down"}


async def test_anyone_sees_each_checks_state_and_nothing_more(system: System):
    for service in ("inventory", "catalog", "users"):
        status, body, _ = await system.call("GET", "/readyz", service=service)

        assert status == 200, body
        assert set(body) == {"status", "service", "checks"}, f"{service} shows more than the states: {body}"
        assert body["status"] == "ready"
        assert set(body["checks"].values()) <= STATES, body
        assert (body["checks"]["database"], body["checks"]["broker"]) == ("ok", "ok")
    _, users_body, _ = await system.call("GET", "/readyz", service="users")
    smtp = urlsplit(system.smtp.url)
    assert users_body["checks"]["email"] == "ok"
    assert f"{smtp.hostname}:{smtp.port}" not in str(users_body), "the SMTP server is named to anyone"


async def test_the_admin_client_sees_the_details_of_every_check(system: System):
    admin = await system.admin_token()
    for service in ("inventory", "catalog", "users"):
        status, body, _ = await system.call("GET", "/readyz", token=admin, service=service)

        assert status == 200, body
        assert set(body["details"]) == set(body["checks"]), body
    _, inventory, _ = await system.call("GET", "/readyz", token=admin)
    assert inventory["details"]["outbox"]["relay"] == "running"
    _, users, _ = await system.call("GET", "/readyz", token=admin, service="users")
    assert users["details"]["email"]["smtp"] == system.smtp.url


async def test_a_token_sent_must_be_the_admin_clients(system: System):
    status, body, headers = await system.call("GET", "/readyz", token="not-a-token")
    assert (status, body["detail"], headers["WWW-Authenticate"]) == (
        401,
        "invalid or expired token",
        'Bearer error="invalid_token"',
    )

    status, body, _ = await system.call("GET", "/readyz", token=await system.client_token())
    assert (status, body["detail"]) == (403, "this token lacks the scope 'admin'")
