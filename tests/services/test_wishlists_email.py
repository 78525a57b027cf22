"""The flow end to end: stock in at inventory, catalog and users follow, emails go out; in both coordination
styles (choreography: one `sku_processed` event; orchestration: inventory's commands), the same outcome.

Real HTTP servers, a real SMTP server receiving the mail, on both stacks (memory + SQLite, RabbitMQ +
PostgreSQL). CONTRACT sections 3 and 7: one email per not-available -> available transition users observes.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from skuflow.platform.runtime import ServiceRuntime
from skuflow.users.db import notifications, sku_availability
from tests.services.conftest import MODES, System, settled
from tests.support.waiting import wait_until

pytestmark = pytest.mark.parametrize("mode", MODES)


def runtime_of(system: System, service: str) -> ServiceRuntime:
    runtime: ServiceRuntime = getattr(system, service).app.state.runtime
    return runtime


async def report(system: System, sku: str, on_hand: int, warehouse: str = "WH-1") -> None:
    token = await system.client_token()
    body = {"warehouse_id": warehouse, "items": [{"sku": sku, "on_hand": on_hand}]}
    status, answer, _ = await system.call("POST", "/v1/stock", token=token, json=body)
    assert status == 202, answer


async def users_learned(system: System, sku: str, revision: int) -> None:
    db = runtime_of(system, "users").db

    async def learned() -> bool:
        async with db.reading() as session:
            known = await session.scalar(select(sku_availability.c.revision).where(sku_availability.c.sku == sku))
        return known is not None and known >= revision

    await wait_until(learned, what=f"users to learn revision {revision} of {sku}")


async def emails_due(system: System, sku: str) -> int:
    async with runtime_of(system, "users").db.reading() as session:
        return int(await session.scalar(select(func.count()).where(notifications.c.sku == sku)) or 0)


async def wish(system: System, user_id: str, token: str, sku: str) -> tuple[int, Any]:
    status, body, _ = await system.call("PUT", f"/v1/users/{user_id}/wishlist/{sku}", token=token, service="users")
    return status, body


async def test_a_wishlisted_item_coming_in_stock_sends_one_email_naming_the_product(system: System):
    admin = await system.admin_token()
    status, _, _ = await system.call(
        "PUT", "/v1/products/SKU-1", token=admin, service="catalog", json={"name": "Blue mug", "price": "9.90"}
    )
    assert status == 200
    ada, token = await system.sign_up("ada@example.com")
    status, item = await wish(system, ada, token, "SKU-1")
    assert (status, item["sku"], item["available"]) == (201, "SKU-1", False)

    await report(system, "SKU-1", 5)

    await wait_until(lambda: system.smtp.mails, what="the email")
    [mail] = system.smtp.mails
    assert mail.recipients == ("ada@example.com",)
    assert "Blue mug" in mail.subject
    assert "Blue mug" in mail.body
    # Catalog follows the same event on its own queue: the email may arrive first.
    await wait_until(lambda: system.catalog_knows("SKU-1", 1), what="catalog to learn revision 1")
    _, product, _ = await system.call("GET", "/v1/products/SKU-1", service="catalog")
    assert (product["available"], product["availability_revision"]) == (True, 1)
    _, wishlist, _ = await system.call("GET", f"/v1/users/{ada}/wishlist", token=token, service="users")
    assert [(i["sku"], i["available"]) for i in wishlist["items"]] == [("SKU-1", True)]
    await wait_until(lambda: _sent_listed(system, ada, token), what="the notification listed")


async def _sent_listed(system: System, user_id: str, token: str) -> bool:
    _, body, _ = await system.call("GET", f"/v1/users/{user_id}/notifications", token=token, service="users")
    return [(n["sku"], n["revision"]) for n in body["items"]] == [("SKU-1", 1)]


async def test_duplicate_deliveries_send_no_second_email(system: System):
    ada, token = await system.sign_up("ada@example.com")
    await wish(system, ada, token, "SKU-1")
    await report(system, "SKU-1", 5)
    await wait_until(lambda: system.smtp.mails, what="the first email")

    users_broker = runtime_of(system, "users").broker
    await wait_until(lambda: settled(users_broker.stats), what="users to settle the first delivery")
    handled = users_broker.stats.acked
    for _ in range(3):  # the same event again, as a broker redelivering would
        await system.observer.publish(system.observer.envelope("sku_processed", {"sku": "SKU-1"}), "sku_processed")
    await wait_until(lambda: users_broker.stats.acked >= handled + 3, what="users to handle the duplicates")

    assert await emails_due(system, "SKU-1") == 1
    assert len(system.smtp.mails) == 1


async def test_each_new_transition_to_available_sends_one_more_email(system: System):
    ada, token = await system.sign_up("ada@example.com")
    await wish(system, ada, token, "SKU-1")
    await report(system, "SKU-1", 5)  # revision 1: available -> email
    await users_learned(system, "SKU-1", 1)
    await report(system, "SKU-1", 0)  # revision 2: not available
    await users_learned(system, "SKU-1", 2)
    await report(system, "SKU-1", 3)  # revision 3: available again -> email
    await users_learned(system, "SKU-1", 3)
    await report(system, "SKU-1", 4)  # revision 4: still available -> nothing
    await users_learned(system, "SKU-1", 4)

    await wait_until(lambda: len(system.smtp.mails) == 2, what="two emails")
    assert await emails_due(system, "SKU-1") == 2


async def test_an_item_added_while_available_sends_no_email(system: System):
    await report(system, "SKU-2", 5)
    await users_learned(system, "SKU-2", 1)
    ada, token = await system.sign_up("ada@example.com")
    status, item = await wish(system, ada, token, "SKU-2")
    assert (status, item["available"]) == (201, True)
    await report(system, "SKU-2", 6)
    await users_learned(system, "SKU-2", 2)
    assert await emails_due(system, "SKU-2") == 0


async def test_an_email_the_smtp_server_refuses_at_first_still_arrives_exactly_once(system: System):
    system.smtp.refuse_next = 1
    ada, token = await system.sign_up("ada@example.com")
    await wish(system, ada, token, "SKU-1")
    await report(system, "SKU-1", 5)

    async def recorded_as_sent() -> bool:
        async with runtime_of(system, "users").db.reading() as session:
            row = (await session.execute(select(notifications.c.attempts, notifications.c.sent_at))).first()
        return row is not None and row.sent_at is not None and row.attempts == 2

    await wait_until(recorded_as_sent, timeout=20, what="the email sent at the second attempt")
    assert system.smtp.refused == 1
    assert len(system.smtp.mails) == 1


async def test_only_the_owner_changes_a_wishlist_and_the_admin_may_read_it(system: System):
    ada, ada_token = await system.sign_up("ada@example.com")
    _, bob_token = await system.sign_up("bob@example.com")
    admin = await system.admin_token()
    await wish(system, ada, ada_token, "SKU-1")

    assert (await wish(system, ada, bob_token, "SKU-9"))[0] == 403
    assert (await wish(system, ada, admin, "SKU-9"))[0] == 403
    for path in (f"/v1/users/{ada}/wishlist", f"/v1/users/{ada}/notifications"):
        status, _, _ = await system.call("GET", path, token=bob_token, service="users")
        assert status == 403
        status, body, _ = await system.call("GET", path, token=admin, service="users")
        assert status == 200
        status, _, _ = await system.call("GET", path, service="users")
        assert status == 401
    _, body, _ = await system.call("GET", f"/v1/users/{ada}/wishlist", token=admin, service="users")
    assert [item["sku"] for item in body["items"]] == ["SKU-1"]
    status, _, _ = await system.call("GET", f"/v1/users/{'0' * 32}/wishlist", token=admin, service="users")
    assert status == 404
    assert (await wish(system, ada, ada_token, "SKU-1"))[0] == 200, "already there"
    status, _, _ = await system.call("DELETE", f"/v1/users/{ada}/wishlist/SKU-1", token=ada_token, service="users")
    assert status == 204
    status, _, _ = await system.call("DELETE", f"/v1/users/{ada}/wishlist/SKU-1", token=ada_token, service="users")
    assert status == 404


async def test_a_malformed_event_ends_in_each_dlq_and_the_flow_goes_on(system: System):
    await system.observer.publish(system.observer.envelope("sku_processed", {"wrong": 1}), "sku_processed")
    for queue in ("users.sku_processed.dlq", "catalog.sku_processed.dlq", "inventory.sku_processed.dlq"):
        await wait_until(lambda q=queue: _positive(system.observer.depth(q)), what=f"a dead letter in {queue}")
    ada, token = await system.sign_up("ada@example.com")
    await wish(system, ada, token, "SKU-1")
    await report(system, "SKU-1", 5)
    await wait_until(lambda: system.smtp.mails, what="the email after the poison message")


async def _positive(depth: Any) -> bool:
    return await depth > 0


async def test_dead_letters_are_listed_and_replayed_through_the_admin_endpoints(system: System):
    await system.observer.publish(system.observer.envelope("sku_processed", {"wrong": 1}), "sku_processed")
    admin = await system.admin_token()

    async def listed() -> dict:
        status, body, _ = await system.call("GET", "/v1/admin/dead-letters", token=admin, service="catalog")
        assert status == 200, body
        return body["queues"]

    await wait_until(lambda: _all_dead(listed), what="the poison in each DLQ")
    queues = await listed()
    [letter] = queues["catalog.sku_processed"]["letters"]
    assert letter["reason"].startswith("invalid sku_processed body")
    assert queues["catalog.update_sku_availability"] == {"count": 0, "letters": []}

    replay = f"/v1/admin/dead-letters/catalog.sku_processed/replay?message_id={letter['message_id']}"
    status, body, _ = await system.call("POST", replay, token=admin, service="catalog")
    assert (status, body) == (200, {"queue": "catalog.sku_processed", "replayed": 1})
    await wait_until(lambda: _dead_in(listed, "catalog.sku_processed", 1), what="the poison back in the DLQ")
    status, _, _ = await system.call("POST", replay.replace(letter["message_id"], "nope"), token=admin)
    assert status == 404
    status, body, _ = await system.call("GET", "/v1/admin/dead-letters?queue=nowhere", token=admin)
    assert status == 422
    assert "choose one of" in body["detail"][0]["msg"]
    status, _, _ = await system.call("GET", "/v1/admin/dead-letters", token=await system.client_token())
    assert status == 403


async def _all_dead(listed) -> bool:
    queues = await listed()
    return all(queues[f"{service}.sku_processed"]["count"] == 1 for service in ("inventory", "catalog", "users"))


async def _dead_in(listed, queue: str, count: int) -> bool:
    return (await listed())[queue]["count"] == count


async def test_drift_is_repaired_by_reconciliation_and_said_so(system: System, caplog):
    from skuflow.catalog.db import products

    user, token = await system.sign_up("drift@example.com")
    status, _, _ = await system.call("PUT", f"/v1/users/{user}/wishlist/SKU-R", token=token, service="users")
    assert status == 201
    await report(system, "SKU-R", 3)
    await wait_until(lambda: len(system.smtp.mails) == 1, what="the email")
    await users_learned(system, "SKU-R", 1)
    await wait_until(lambda: system.catalog_knows("SKU-R", 1), what="catalog to follow")  # no late update

    # What a lost message would leave: catalog never heard, users forgot it.
    async with runtime_of(system, "catalog").db.transaction() as session:
        await session.execute(
            products.update().where(products.c.sku == "SKU-R").values(available=False, availability_revision=0)
        )
    async with runtime_of(system, "users").db.transaction() as session:
        await session.execute(sku_availability.delete().where(sku_availability.c.sku == "SKU-R"))

    admin = await system.admin_token()
    reports = {}
    for service in ("catalog", "users"):
        path = "/v1/admin/reconcile?older_than_seconds=0"
        status, reports[service], _ = await system.call("POST", path, token=admin, service=service)
        assert status == 200, reports[service]
    assert (reports["catalog"]["repaired"], reports["users"]["repaired"]) == (1, 1)
    assert "drift on SKU SKU-R" in caplog.text
    async with runtime_of(system, "catalog").db.reading() as session:
        row = (await session.execute(select(products).where(products.c.sku == "SKU-R"))).one()
    assert (row.available, row.availability_revision) == (True, 1)
    await users_learned(system, "SKU-R", 1)
    assert len(system.smtp.mails) == 1  # the email already sent is not sent again
    status, again, _ = await system.call("POST", path, token=admin, service="users")
    assert again["repaired"] == 0
    status, _, _ = await system.call("POST", path, token=admin, service="inventory")
    assert status == 404
