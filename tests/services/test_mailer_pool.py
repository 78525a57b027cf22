"""The mailer's pooled SMTP connection (users/smtp_pool.py) against the real SMTP sink, on the test's database
(SQLite, and PostgreSQL where mailers claim with SKIP LOCKED): the emails of a pass share one connection, a
server that closes it mid-batch costs no email, a refusal in the middle of a batch fails that email alone
and the rest go on the same connection, and the connection ends when idle and at stop. Last, with the running
system: catalog is asked each product's name once a pass, not once an email.

The mailer's passes are run here by hand (`send_due`), so that what one pass does is what is counted."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from skuflow.embedded.smtp import SmtpSink
from skuflow.platform.db import Database
from skuflow.platform.smtp import SmtpTarget
from skuflow.users import mailer as mailer_module
from skuflow.users.db import notifications
from skuflow.users.mailer import SENDER, Mailer
from skuflow.users.service import MIGRATIONS
from skuflow.users.smtp_pool import SmtpPool
from tests.conftest import Stack
from tests.services.conftest import System
from tests.support.waiting import wait_until

_users = itertools.count()


@pytest.fixture
async def users_db(stack: Stack) -> AsyncIterator[Database]:
    db = Database(stack.database_urls["users"], MIGRATIONS)
    await db.migrate()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    server = SmtpSink()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def mailer(users_db: Database, sink: SmtpSink) -> AsyncIterator[Mailer]:
    """A mailer whose passes the test runs (not started: no loop of its own); no catalog, so each name is
    the SKU."""
    sender = Mailer(users_db, sink.url, "http://127.0.0.1:9")
    try:
        yield sender
    finally:
        await sender.stop()


async def due(db: Database, *addresses: str, sku: str = "SKU-1") -> None:
    """Emails due now, one per address, in this order (the mailer sends the oldest first)."""
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": f"u{next(_users)}",
            "sku": sku,
            "revision": 1,
            "email": address,
            "created_at": now,
            "next_attempt_at": now,
        }
        for address in addresses
    ]
    async with db.transaction() as session:
        await session.execute(notifications.insert(), rows)


async def outcomes(db: Database) -> dict[str, Any]:
    async with db.reading() as session:
        return {row.email: row for row in (await session.execute(select(notifications))).all()}


def received(sink: SmtpSink) -> list[str]:
    return [recipient for mail in sink.mails for recipient in mail.recipients]


def people(count: int, start: int = 0) -> list[str]:
    return [f"user{n}@example.com" for n in range(start, start + count)]


async def test_the_emails_of_a_pass_share_one_connection_and_the_next_pass_keeps_it(
    users_db: Database, sink: SmtpSink, mailer: Mailer
):
    await due(users_db, *people(10))

    assert await mailer.send_due() == 10

    assert received(sink) == people(10)
    assert sink.connections == 1, "ten emails, one connection"
    assert len({mail.message_id for mail in sink.mails}) == 10, "each email its own Message-ID"
    rows = await outcomes(users_db)
    assert {(row.status, row.attempts) for row in rows.values()} == {("sent", 1)}

    await due(users_db, *people(3, start=10))  # more emails while the connection is still open
    assert await mailer.send_due() == 3
    assert received(sink) == people(13)
    assert sink.connections == 1, "kept across passes while emails keep coming"


async def test_a_server_closing_the_connection_mid_batch_costs_no_email_and_sends_none_twice(
    users_db: Database, sink: SmtpSink, mailer: Mailer
):
    sink.close_after = 3  # 421 to the fourth MAIL on a connection, then closed

    await due(users_db, *people(10))
    assert await mailer.send_due() == 10

    assert received(sink) == people(10), "every email once, in order"
    assert sink.connections == 4, "3 + 3 + 3 + 1: a fresh connection each time the server closed one"
    rows = await outcomes(users_db)
    assert {(row.status, row.attempts, row.last_error) for row in rows.values()} == {("sent", 1, None)}
    check = await mailer.check()
    assert (check.state, check.details["failed_attempts"]) == ("ok", 0), "a closed connection is no failure"


async def test_a_recipient_refused_for_good_mid_batch_fails_alone_and_the_rest_go_on_the_same_connection(
    users_db: Database, sink: SmtpSink, mailer: Mailer
):
    addresses = [*people(4), "gone@example.com", *people(4, start=4)]
    sink.refuse_recipients = {"gone@example.com"}
    await due(users_db, *addresses)

    assert await mailer.send_due() == 9

    assert received(sink) == people(8)
    assert sink.connections == 1, "a 550 to one recipient leaves the connection usable (RSET)"
    rows = await outcomes(users_db)
    gone = rows.pop("gone@example.com")
    assert (gone.status, gone.attempts, gone.permanent_failures) == ("pending", 1, 1)
    assert "550" in gone.last_error
    assert {(row.status, row.attempts) for row in rows.values()} == {("sent", 1)}
    assert (await mailer.check()).state == "ok", "a refusal of one recipient says nothing of the server"


async def test_a_temporary_refusal_of_one_email_keeps_the_connection_for_the_next(
    users_db: Database, sink: SmtpSink, mailer: Mailer
):
    sink.refuse_next = 1  # 451 to the first email's content
    await due(users_db, *people(4))

    assert await mailer.send_due() == 4

    assert received(sink) == people(4)[1:]
    assert sink.connections == 1
    first = (await outcomes(users_db))[people(1)[0]]
    assert (first.status, first.attempts, first.permanent_failures) == ("pending", 1, 0)
    assert "451" in first.last_error


async def test_a_server_restarted_between_passes_is_reconnected_to(users_db: Database, sink: SmtpSink, mailer: Mailer):
    await due(users_db, *people(2))
    assert await mailer.send_due() == 2
    port = sink.port
    await sink.stop()  # drops the open connection
    await sink.start(port=port)

    await due(users_db, *people(2, start=2))
    assert await mailer.send_due() == 2

    assert received(sink) == people(4)
    assert sink.connections == 2
    assert {(row.status, row.attempts) for row in (await outcomes(users_db)).values()} == {("sent", 1)}


async def test_the_connection_ends_at_stop(users_db: Database, sink: SmtpSink, mailer: Mailer):
    await due(users_db, *people(2))
    await mailer.send_due()
    assert sink.open_connections == 1

    await mailer.stop()

    await wait_until(lambda: sink.open_connections == 0, what="the connection closed at stop")


async def test_an_idle_connection_is_closed_and_the_next_email_opens_another(sink: SmtpSink):
    pool = SmtpPool(SmtpTarget.parse(sink.url), step_seconds=5.0, idle_seconds=0.0)
    content = b"Subject: hello\r\n\r\nhello\r\n"
    try:
        await pool.send(SENDER.addr_spec, "ada@example.com", content)
        assert sink.open_connections == 1

        await pool.close_if_idle()

        await wait_until(lambda: sink.open_connections == 0, what="the idle connection closed")
        await pool.send(SENDER.addr_spec, "bob@example.com", content)
        assert (received(sink), sink.connections, pool.opened) == (["ada@example.com", "bob@example.com"], 2, 2)
    finally:
        await pool.close()


async def test_one_connection_per_email_when_not_pooled(users_db: Database, sink: SmtpSink):
    """The benchmark's baseline: the mailer as it was, a connection opened and closed for each email."""
    mailer = Mailer(users_db, sink.url, "http://127.0.0.1:9", pooled=False)
    try:
        await due(users_db, *people(3))
        assert await mailer.send_due() == 3
    finally:
        await mailer.stop()
    assert (received(sink), sink.connections) == (people(3), 3)
    await wait_until(lambda: sink.open_connections == 0, what="each connection closed after its email")


async def test_catalog_is_asked_each_products_name_once_a_pass(system: System):
    admin = await system.admin_token()
    product = {"name": "Blue mug", "price": "9.90"}
    status, _, _ = await system.call("PUT", "/v1/products/SKU-1", token=admin, service="catalog", json=product)
    assert status == 200
    wishers = people(6)
    for address in wishers:
        user_id, token = await system.sign_up(address)
        path = f"/v1/users/{user_id}/wishlist/SKU-1"
        assert (await system.call("PUT", path, token=token, service="users"))[0] == 201
    body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-1", "on_hand": 5}]}
    assert (await system.call("POST", "/v1/stock", token=await system.client_token(), json=body))[0] == 202

    await wait_until(lambda: len(system.smtp.mails) == len(wishers), what="the six emails")

    assert sorted(received(system.smtp)) == wishers
    assert {mail.subject for mail in system.smtp.mails} == {"Blue mug is available again"}
    # The six rows are written in one transaction, so one pass takes them all: one look-up, one connection.
    assert await catalog_asked(system) == {"/v1/products": 1}
    assert system.smtp.connections == 1


async def catalog_asked(system: System) -> dict[str, float]:
    """How often each of catalog's product routes was asked, by its metrics."""
    async with system.http.get(f"{system.catalog.url}/metrics") as response:
        metrics = await response.text()
    asked: dict[str, float] = {}
    for route in ("/v1/products", "/v1/products/{sku}"):
        line = f'skuflow_http_requests_total{{method="GET",route="{route}",service="catalog",status="200"}} '
        counts = [float(text.removeprefix(line)) for text in metrics.splitlines() if text.startswith(line)]
        if counts:
            asked[route] = counts[0]
    return asked


async def test_the_names_of_a_pass_come_from_catalog_in_one_call(system: System):
    admin = await system.admin_token()
    for sku, name in (("SKU-1", "Blue mug"), ("SKU-2", "Red mug")):
        product = {"name": name, "price": "9.90"}
        status, _, _ = await system.call("PUT", f"/v1/products/{sku}", token=admin, service="catalog", json=product)
        assert status == 200
    skus = ["SKU-1", "SKU-2", "SKU-3"]  # SKU-3 is no product: its email names the SKU
    for n, address in enumerate(people(3)):
        user_id, token = await system.sign_up(address)
        path = f"/v1/users/{user_id}/wishlist/{skus[n]}"
        assert (await system.call("PUT", path, token=token, service="users"))[0] == 201
    items = [{"sku": sku, "on_hand": 5} for sku in skus]
    body = {"warehouse_id": "WH-1", "items": items}
    assert (await system.call("POST", "/v1/stock", token=await system.client_token(), json=body))[0] == 202

    await wait_until(lambda: len(system.smtp.mails) == 3, what="the three emails")

    subjects = {mail.recipients[0]: mail.subject for mail in system.smtp.mails}
    assert subjects == {
        "user0@example.com": "Blue mug is available again",
        "user1@example.com": "Red mug is available again",
        "user2@example.com": "SKU-3 is available again",
    }
    asked = await catalog_asked(system)
    assert "/v1/products/{sku}" not in asked, "no look-up of one product at a time"
    assert 1 <= asked["/v1/products"] <= 3, "one call a pass (the three changes may come in up to three passes)"


# -- Several connections at once (SKUFLOW_SMTP_CONNECTIONS) --


@pytest.fixture
async def mailer4(users_db: Database, sink: SmtpSink) -> AsyncIterator[Mailer]:
    sender = Mailer(users_db, sink.url, "http://127.0.0.1:9", connections=4)
    try:
        yield sender
    finally:
        await sender.stop()


def each_once(sink: SmtpSink) -> Counter[str]:
    """How often each recipient was sent to: 1 each, whatever the order the connections took."""
    return Counter(received(sink))


async def test_a_pass_sends_on_four_connections_at_once_each_email_once(
    users_db: Database, sink: SmtpSink, mailer4: Mailer
):
    sink.delay_seconds = 0.1  # each email takes that long: one connection would take 50 x 0.1 = 5 s
    await due(users_db, *people(50))

    started = time.monotonic()
    assert await mailer4.send_due() == 50
    elapsed = time.monotonic() - started

    assert each_once(sink) == Counter(people(50))
    assert len({mail.message_id for mail in sink.mails}) == 50
    assert (sink.connections, sink.open_connections) == (4, 4), "four connections, kept open"
    assert elapsed < 2.5, f"50 emails of 0.1 s each in {elapsed:.1f} s: not sent side by side"
    rows = await outcomes(users_db)
    assert {(row.status, row.attempts) for row in rows.values()} == {("sent", 1)}
    # The outcomes that came in while one was written went together in the next transaction.
    assert mailer4._records.gathering.largest > 1


async def test_a_few_emails_go_on_one_connection_of_four(users_db: Database, sink: SmtpSink, mailer4: Mailer):
    await due(users_db, *people(16))  # no more than EMAILS_PER_CONNECTION: not worth a second connection

    assert await mailer4.send_due() == 16

    assert (received(sink), sink.connections) == (people(16), 1)


async def test_one_connection_dropped_mid_batch_loses_nothing_and_doubles_nothing(
    users_db: Database, sink: SmtpSink, mailer4: Mailer
):
    sink.drop_at_mail = 10  # one of the four connections dies without a word, emails into the batch
    await due(users_db, *people(50))

    assert await mailer4.send_due() == 50

    assert each_once(sink) == Counter(people(50))
    assert sink.connections == 5, "the four, and one fresh in place of the one dropped"
    rows = await outcomes(users_db)
    assert {(row.status, row.attempts, row.last_error) for row in rows.values()} == {("sent", 1, None)}
    check = await mailer4.check()
    assert (check.state, check.details["failed_attempts"]) == ("ok", 0), "a connection lost is no failure"


async def test_a_server_closing_every_connection_mid_batch_costs_no_email_and_sends_none_twice(
    users_db: Database, sink: SmtpSink, mailer4: Mailer
):
    sink.close_after = 3  # 421 to the fourth MAIL on each connection, then closed
    await due(users_db, *people(50))

    assert await mailer4.send_due() == 50

    assert each_once(sink) == Counter(people(50))
    assert sink.connections >= 50 // 3
    rows = await outcomes(users_db)
    assert {(row.status, row.attempts, row.last_error) for row in rows.values()} == {("sent", 1, None)}


async def test_refusals_on_several_connections_fail_their_own_emails_alone(
    users_db: Database, sink: SmtpSink, mailer4: Mailer
):
    gone = ["gone1@example.com", "gone2@example.com"]
    addresses = [*people(16), gone[0], *people(16, start=16), gone[1], *people(16, start=32)]
    sink.refuse_recipients = set(gone)
    await due(users_db, *addresses)

    assert await mailer4.send_due() == 50

    assert each_once(sink) == Counter(people(48))
    assert sink.connections == 4, "a 550 to one recipient leaves its connection usable"
    rows = await outcomes(users_db)
    for address in gone:
        refused = rows.pop(address)
        assert (refused.status, refused.attempts, refused.permanent_failures) == ("pending", 1, 1)
        assert "550" in refused.last_error
    assert {(row.status, row.attempts) for row in rows.values()} == {("sent", 1)}


async def test_two_mailers_on_four_connections_each_and_a_slow_server_send_each_email_once(
    users_db: Database, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
):
    """On PostgreSQL the two share the rows (SKIP LOCKED); on SQLite one works at a time. The claim's clock is
    made small, so that batches are cut at START_WITHIN and released while sends are slow (each send's deadline
    is left at 2 s: one cut while the server accepts would send that email again, whatever the connections)."""
    monkeypatch.setattr(mailer_module, "CLAIM_SECONDS", 6.0)
    monkeypatch.setattr(mailer_module, "SEND_SECONDS", 2.0)
    monkeypatch.setattr(mailer_module, "START_WITHIN", 2.0)
    sink.delay_seconds = 0.3
    mailers = [  # 40 emails a pass: 3 connections each, 40 x 0.3 / 3 = 4 s, cut at 2 s
        Mailer(users_db, sink.url, "http://127.0.0.1:9", poll_seconds=0.2, connections=4, batch_size=40)
        for _ in range(2)
    ]
    wishers = people(100)
    await due(users_db, *wishers)
    for mailer in mailers:
        await mailer.start()
    try:

        async def all_sent() -> bool:
            return {row.status for row in (await outcomes(users_db)).values()} == {"sent"}

        await wait_until(all_sent, what="every email sent", timeout=40)
    finally:
        for mailer in mailers:
            await mailer.stop()

    assert each_once(sink) == Counter(wishers)
    assert sum(mailer.sent for mailer in mailers) == len(wishers)
    rows = await outcomes(users_db)
    assert {row.attempts for row in rows.values()} == {1}
