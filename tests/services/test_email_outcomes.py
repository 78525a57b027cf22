"""What becomes of each wishlist email (CONTRACT section 8): sent; refused for good (SMTP 5xx, or it cannot
be built) and `failed` after three tries; refused for now (4xx, the server away) and retried until sent.
Whatever one row holds, the rows after it are sent. On both stacks, against a real SMTP server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select, update

from skuflow.platform.runtime import ServiceRuntime
from skuflow.users import mailer
from skuflow.users.db import notifications, users, wishlist_items
from tests.conftest import Stack
from tests.services.conftest import System
from tests.support.waiting import wait_until


def users_runtime(system: System) -> ServiceRuntime:
    runtime: ServiceRuntime = system.users.app.state.runtime
    return runtime


async def report(system: System, sku: str, on_hand: int) -> None:
    body = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": on_hand}]}
    status, answer, _ = await system.call("POST", "/v1/stock", token=await system.client_token(), json=body)
    assert status == 202, answer


async def wish(system: System, email: str, sku: str) -> str:
    user_id, token = await system.sign_up(email)
    status, body, _ = await system.call("PUT", f"/v1/users/{user_id}/wishlist/{sku}", token=token, service="users")
    assert status == 201, body
    return user_id


async def stored_before_the_rules(system: System, email: str, sku: str) -> str:
    """A user whose address today's sign-up would refuse, written as an older version could have."""
    user_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    async with users_runtime(system).db.transaction() as session:
        await session.execute(
            users.insert().values(id=user_id, email=email, name="Old", password_hash="x", created_at=now)
        )
        await session.execute(wishlist_items.insert().values(user_id=user_id, sku=sku, added_at=now))
    return user_id


async def emails(system: System) -> dict[str, Any]:
    """Each notification row, by address."""
    async with users_runtime(system).db.reading() as session:
        rows = (await session.execute(select(notifications))).all()
    return {row.email: row for row in rows}


async def without_waiting(system: System) -> None:
    """The emails waiting for their next try are due now: the backoff is the mailer's policy, not under test.
    (With several mailers this would also end their claims: only for tests of one.)"""
    async with users_runtime(system).db.transaction() as session:
        pending = notifications.c.status == "pending"
        await session.execute(update(notifications).where(pending).values(next_attempt_at=datetime.now(UTC)))


async def settles(system: System, expected: dict[str, str]) -> bool:
    await without_waiting(system)
    return {email: row.status for email, row in (await emails(system)).items()} == expected


async def test_addresses_stored_before_the_rules_fail_alone_and_the_emails_after_them_go(system: System):
    for bad in ("a@[x.y", "postmaster,me@example.com"):  # the first broke the mailer for good; the second
        await stored_before_the_rules(system, bad, "SKU-1")  # would have mailed two people
    await wish(system, "ada@example.com", "SKU-1")

    await report(system, "SKU-1", 5)

    await wait_until(lambda: system.smtp.mails, what="Ada's email, after the broken rows")
    expected = {"a@[x.y": "failed", "postmaster,me@example.com": "failed", "ada@example.com": "sent"}
    await wait_until(lambda: settles(system, expected), what="the broken rows to fail after three tries")
    rows = await emails(system)
    for bad in ("a@[x.y", "postmaster,me@example.com"):
        assert (rows[bad].attempts, rows[bad].permanent_failures) == (3, 3)
        assert "is not one mailbox" in rows[bad].last_error
    assert [mail.recipients for mail in system.smtp.mails] == [("ada@example.com",)]


async def test_a_recipient_refused_for_good_is_failed_after_three_tries_and_shown_so(system: System):
    system.smtp.refuse_recipients = {"gone@example.com"}
    gone = await wish(system, "gone@example.com", "SKU-1")
    await wish(system, "ada@example.com", "SKU-1")

    await report(system, "SKU-1", 5)

    expected = {"gone@example.com": "failed", "ada@example.com": "sent"}
    await wait_until(lambda: settles(system, expected), what="the refused email to fail, Ada's to go")
    row = (await emails(system))["gone@example.com"]
    assert (row.attempts, row.permanent_failures, row.sent_at) == (3, 3, None)
    assert "550" in row.last_error
    status, body, _ = await system.call(
        "GET", f"/v1/users/{gone}/notifications", token=await system.admin_token(), service="users"
    )
    assert status == 200
    assert [(item["sku"], item["status"], item["sent_at"]) for item in body["items"]] == [("SKU-1", "failed", None)]
    _, readiness, _ = await system.call("GET", "/readyz", token=await system.admin_token(), service="users")
    assert readiness["details"]["email"]["failed_emails"] == 1
    assert readiness["checks"]["email"] == "ok", "a refusal for one recipient says nothing of the server"


async def test_a_temporary_refusal_is_retried_past_three_tries_until_sent(system: System):
    system.smtp.refuse_next = 4
    user_id = await wish(system, "ada@example.com", "SKU-1")

    await report(system, "SKU-1", 5)

    await wait_until(lambda: settles(system, {"ada@example.com": "sent"}), what="the email, after four 451s")
    row = (await emails(system))["ada@example.com"]
    assert (row.attempts, row.permanent_failures) == (5, 0)
    assert [mail.recipients for mail in system.smtp.mails] == [("ada@example.com",)]
    _, body, _ = await system.call(
        "GET", f"/v1/users/{user_id}/notifications", token=await system.admin_token(), service="users"
    )
    [item] = body["items"]
    assert item["status"] == "sent"
    assert item["subject"] == "SKU-1 is available again"


@pytest.fixture
def small_wishlists(stack: Stack) -> None:
    stack.overrides |= {"wishlist_max_items": 2}


async def test_a_full_wishlist_refuses_one_more_item_with_a_422_naming_the_limit(small_wishlists, system: System):
    user_id, token = await system.sign_up("ada@example.com")
    path = f"/v1/users/{user_id}/wishlist"
    for sku in ("SKU-1", "SKU-2"):
        assert (await system.call("PUT", f"{path}/{sku}", token=token, service="users"))[0] == 201

    status, body, _ = await system.call("PUT", f"{path}/SKU-3", token=token, service="users")

    assert status == 422
    [problem] = body["detail"]
    assert problem["loc"] == ["path", "sku"]
    assert "already holds 2 items" in problem["msg"]
    assert (await system.call("PUT", f"{path}/SKU-2", token=token, service="users"))[0] == 200, "one it holds"
    assert (await system.call("DELETE", f"{path}/SKU-1", token=token, service="users"))[0] == 204
    assert (await system.call("PUT", f"{path}/SKU-3", token=token, service="users"))[0] == 201, "room again"
    _, wishlist, _ = await system.call("GET", path, token=token, service="users")
    assert [item["sku"] for item in wishlist["items"]] == ["SKU-2", "SKU-3"]


async def test_the_sink_refuses_a_recipient_that_is_not_one_mailbox_for_good(system: System):
    message = EmailMessage()
    message["From"], message["Subject"] = "a@example.com", "hello"
    message.set_content("hello")

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(
            message, sender="a@example.com", recipients=["a@[x.y"], hostname="127.0.0.1", port=system.smtp.port
        )

    [refusal] = refused.value.recipients
    assert refusal.code == 553
    assert mailer._refused_for_good(refused.value)


@pytest.mark.amqp
@pytest.mark.parametrize("stack", ["production"], indirect=True)  # several mailers share work on PostgreSQL
async def test_two_mailers_and_a_slow_server_send_each_email_once(system: System, monkeypatch: pytest.MonkeyPatch):
    # The claim's clock made small, so that batches are cut at START_WITHIN and handed on while sends are slow.
    monkeypatch.setattr(mailer, "CLAIM_SECONDS", 4.0)
    monkeypatch.setattr(mailer, "SEND_SECONDS", 1.0)
    monkeypatch.setattr(mailer, "START_WITHIN", 2.0)
    system.smtp.delay_seconds = 0.3
    runtime = users_runtime(system)
    second = mailer.Mailer(
        runtime.db, system.smtp.url, runtime.settings.catalog_url, http=lambda: system.http, poll_seconds=0.2
    )
    await second.start()
    try:
        wishers = [f"user{n}@example.com" for n in range(12)]
        for email in wishers:
            await wish(system, email, "SKU-1")
        await report(system, "SKU-1", 5)

        async def all_sent() -> bool:  # read only: making claimed rows due (as `settles` does) breaks claims
            return {email: row.status for email, row in (await emails(system)).items()} == dict.fromkeys(
                wishers, "sent"
            )

        await wait_until(all_sent, what="every email sent", timeout=40)
    finally:
        await second.stop()

    assert sorted(recipient for mail in system.smtp.mails for recipient in mail.recipients) == sorted(wishers)
    assert second.sent > 0, "the second mailer took part"
