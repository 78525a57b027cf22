"""The services' message handlers on their own: each over its own SQLite database, with simple fakes for
what it asks (inventory's availability) and what it sends (replies), and a fixed clock. The end-to-end
suites (tests/services) run the same handlers behind both brokers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from skuflow.catalog.consumers import CatalogConsumers
from skuflow.catalog.db import products
from skuflow.catalog.messages import SkuProcessed as CatalogSkuProcessed
from skuflow.catalog.messages import UpdateSkuAvailability
from skuflow.catalog.service import MIGRATIONS as CATALOG_MIGRATIONS
from skuflow.inventory.consumers import InventoryConsumers
from skuflow.inventory.db import flows, outbox, skus, stock_levels
from skuflow.inventory.messages import RecalculateSku
from skuflow.inventory.messages import SkuProcessed as InventorySkuProcessed
from skuflow.inventory.orchestration import Orchestrator
from skuflow.inventory.recording import Announcer
from skuflow.inventory.service import MIGRATIONS as INVENTORY_MIGRATIONS
from skuflow.messaging import Envelope, Message, Outgoing, Reject, flow_scope
from skuflow.platform.availability import Availability
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies
from skuflow.platform.http import ServiceUnavailable
from skuflow.platform.outbox import Outbox
from skuflow.users.consumers import UsersConsumers
from skuflow.users.db import notifications, sku_availability, users, wishlist_items
from skuflow.users.messages import SkuProcessed as UsersSkuProcessed
from skuflow.users.messages import UpdateWishlistsForSku
from skuflow.users.service import MIGRATIONS as USERS_MIGRATIONS

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FLOW = "0190c7f3a2b4c5d6e7f8a9b0c1d2e3f4"


class Inventory:
    """A fake of inventory's availability endpoint: what it knows, or down."""

    def __init__(self, **known: Availability) -> None:
        self.known = dict(known)
        self.down = False
        self.asked: list[list[str]] = []

    async def availability(self, sku: str) -> Availability | None:
        return (await self.availabilities([sku])).get(sku)

    async def availabilities(self, skus: Sequence[str]) -> dict[str, Availability]:
        self.asked.append(sorted(skus))
        if self.down:
            raise ServiceUnavailable("inventory is down")
        return {sku: self.known[sku] for sku in skus if sku in self.known}


class Sent:
    """A fake broker's publish: what was sent."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []

    async def __call__(self, messages: Sequence[Outgoing]) -> None:
        self.messages.extend(messages)

    def bodies(self) -> list[Any]:
        return [message.envelope.json() for message in self.messages]


def delivered(body: Any, flow_id: str | None = None) -> Message[Any]:
    headers = {"flow_id": flow_id} if flow_id else {}
    envelope = Envelope.new(type(body).__name__, body, app_id="inventory", correlation_id="c-1", headers=headers)
    return Message(body, envelope, attempt=1)


async def database(path: Path, migrations: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}", migrations)
    await db.migrate()
    return db


# -- catalog ------------------------------------------------------------------------------------------------


@pytest.fixture
async def catalog_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await database(tmp_path / "catalog.db", CATALOG_MIGRATIONS)
    yield db
    await db.close()


async def product(db: Database, sku: str) -> Any:
    async with db.reading() as session:
        return (await session.execute(select(products).where(products.c.sku == sku))).first()


async def test_catalog_marks_what_inventory_answers_and_keeps_the_newest_revision(catalog_db: Database):
    inventory = Inventory(**{"SKU-1": Availability(True, 3)})
    consumers = CatalogConsumers(catalog_db, inventory, StepReplies("catalog", Sent()), clock=lambda: NOW)

    await consumers.mark_availability([delivered(CatalogSkuProcessed(sku="SKU-1"))])
    inventory.known["SKU-1"] = Availability(False, 2)  # a late answer, from before
    await consumers.mark_availability([delivered(CatalogSkuProcessed(sku="SKU-1"))])

    row = await product(catalog_db, "SKU-1")
    assert (row.available, row.availability_revision, row.availability_checked_at) == (
        True,
        3,
        NOW.replace(tzinfo=None),
    )
    assert inventory.asked == [["SKU-1"], ["SKU-1"]]


async def test_catalog_marks_nothing_for_a_sku_inventory_does_not_know_and_fails_while_inventory_is_down(
    catalog_db: Database,
):
    inventory = Inventory()
    consumers = CatalogConsumers(catalog_db, inventory, StepReplies("catalog", Sent()))
    await consumers.mark_availability([delivered(CatalogSkuProcessed(sku="GHOST-1"))])
    assert await product(catalog_db, "GHOST-1") is None

    inventory.down = True
    with pytest.raises(ServiceUnavailable):  # the messaging layer retries it later
        await consumers.mark_availability([delivered(CatalogSkuProcessed(sku="SKU-1"))])


async def test_catalog_stores_a_commands_availability_and_replies_to_its_flow(catalog_db: Database):
    sent = Sent()
    consumers = CatalogConsumers(catalog_db, Inventory(), StepReplies("catalog", sent))
    command = UpdateSkuAvailability(sku="SKU-1", available_for_sale=4, revision=2)

    with flow_scope("c-1"):  # as the messaging layer runs a handler: in the message's flow
        await consumers.update_availability([delivered(command, flow_id=FLOW)])

    assert (await product(catalog_db, "SKU-1")).available is True
    assert sent.bodies() == [
        {"flow_id": FLOW, "sku": "SKU-1", "step": "update_sku_availability", "revision": 2, "ok": True, "error": None}
    ]
    [reply] = sent.messages
    assert (reply.envelope.app_id, reply.envelope.correlation_id, reply.routing_key) == (
        "catalog",
        "c-1",
        "inventory.flow_replies",
    )


async def test_a_command_whose_flow_id_cannot_be_one_is_done_and_rejected_without_a_reply(catalog_db: Database):
    sent = Sent()
    consumers = CatalogConsumers(catalog_db, Inventory(), StepReplies("catalog", sent))
    command = UpdateSkuAvailability(sku="SKU-1", available_for_sale=0, revision=2)

    with pytest.raises(Reject, match="is not a flow id"):
        await consumers.update_availability([delivered(command, flow_id="../etc")])

    assert (await product(catalog_db, "SKU-1")).available is False, "the command itself is done"
    assert sent.messages == []


# -- users --------------------------------------------------------------------------------------------------


@pytest.fixture
async def users_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await database(tmp_path / "users.db", USERS_MIGRATIONS)
    async with db.transaction() as session:
        for user in ("u1", "u2"):
            await session.execute(
                users.insert().values(
                    id=user, email=f"{user}@example.com", name=user, password_hash="x", created_at=NOW
                )
            )
            await session.execute(wishlist_items.insert().values(user_id=user, sku="SKU-1", added_at=NOW))
    yield db
    await db.close()


async def due_emails(db: Database) -> list[tuple[str, str, int]]:
    async with db.reading() as session:
        query = select(notifications.c.user_id, notifications.c.sku, notifications.c.revision)
        return sorted(tuple(row) for row in await session.execute(query))


async def test_users_makes_one_email_due_per_wisher_when_a_sku_becomes_available(users_db: Database):
    wakes: list[str] = []
    inventory = Inventory(**{"SKU-1": Availability(False, 1)})
    consumers = UsersConsumers(
        users_db, inventory, StepReplies("users", Sent()), emails_due=lambda: wakes.append("wake")
    )

    await consumers.learn_availability([delivered(UsersSkuProcessed(sku="SKU-1"))])
    assert await due_emails(users_db) == []
    inventory.known["SKU-1"] = Availability(True, 2)
    await consumers.learn_availability([delivered(UsersSkuProcessed(sku="SKU-1"))])
    await consumers.learn_availability([delivered(UsersSkuProcessed(sku="SKU-1"))])  # a duplicate

    assert await due_emails(users_db) == [("u1", "SKU-1", 2), ("u2", "SKU-1", 2)]
    assert wakes == ["wake"], "the mailer is woken once, for the one transition"


async def test_users_records_a_commands_availability_and_replies(users_db: Database):
    sent = Sent()
    consumers = UsersConsumers(users_db, Inventory(), StepReplies("users", sent), emails_due=lambda: None)
    command = UpdateWishlistsForSku(sku="SKU-1", available_for_sale=1, revision=5)

    await consumers.update_wishlists([delivered(command, flow_id=FLOW)])

    assert await due_emails(users_db) == [("u1", "SKU-1", 5), ("u2", "SKU-1", 5)]
    async with users_db.reading() as session:
        assert (await session.execute(select(sku_availability.c.available, sku_availability.c.revision))).all() == [
            (True, 5)
        ]
    assert [body["step"] for body in sent.bodies()] == ["update_wishlists_for_sku"]


# -- inventory ----------------------------------------------------------------------------------------------


@pytest.fixture
async def inventory_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await database(tmp_path / "inventory.db", INVENTORY_MIGRATIONS)
    async with db.transaction() as session:
        await session.execute(skus.insert().values(sku="SKU-1", on_hand=5, safety_stock=2, revision=1, updated_at=NOW))
        await session.execute(
            stock_levels.insert().values(warehouse_id="W1", sku="SKU-1", on_hand=5, as_of=NOW, updated_at=NOW)
        )
    yield db
    await db.close()


def inventory_consumers(db: Database, mode: str, sent: Sent) -> InventoryConsumers:
    box = Outbox(db, outbox)
    orchestrator = Orchestrator(db, box, clock=lambda: NOW)
    announcer = Announcer(mode, box, orchestrator)  # type: ignore[arg-type]
    return InventoryConsumers(db, announcer, orchestrator, StepReplies("inventory", sent), clock=lambda: NOW)


async def test_inventory_recalculates_and_replies_with_the_revision_or_the_unknown_sku(inventory_db: Database):
    sent = Sent()
    consumers = inventory_consumers(inventory_db, "orchestration", sent)

    await consumers.recalculate_for_flow([delivered(RecalculateSku(sku="SKU-1"), flow_id=FLOW)])
    await consumers.recalculate_for_flow([delivered(RecalculateSku(sku="GHOST-1"), flow_id=FLOW)])

    async with inventory_db.reading() as session:
        row = (await session.execute(select(skus).where(skus.c.sku == "SKU-1"))).one()
    assert (row.available_for_sale, row.recalculated_revision) == (3, 1)
    assert [(body["sku"], body["ok"], body["revision"], body["error"]) for body in sent.bodies()] == [
        ("SKU-1", True, 1, None),
        ("GHOST-1", False, 0, "unknown SKU 'GHOST-1'"),
    ]


@pytest.mark.parametrize("mode", ["choreography", "orchestration"])
async def test_a_repaired_drift_is_announced_in_the_mode_of_the_system(inventory_db: Database, mode: str):
    async with inventory_db.transaction() as session:
        await session.execute(stock_levels.update().values(on_hand=1))  # the totals now disagree
    consumers = inventory_consumers(inventory_db, mode, Sent())

    await consumers.recalculate_availability([delivered(InventorySkuProcessed(sku="SKU-1"))])

    async with inventory_db.reading() as session:
        row = (await session.execute(select(skus).where(skus.c.sku == "SKU-1"))).one()
        announced = (await session.execute(select(outbox.c.type))).scalars().all()
        started = (await session.execute(select(flows.c.sku, flows.c.revision))).all()
    assert (row.on_hand, row.revision, row.available_for_sale) == (1, 2, 0)
    if mode == "choreography":
        assert (announced, started) == (["sku_processed"], [])
    else:
        assert (announced, started) == (["recalculate_sku"], [("SKU-1", 2)])


# -- batches ------------------------------------------------------------------------------------------------


async def test_catalog_asks_inventory_once_for_a_batch_and_stores_each_answer(catalog_db: Database):
    inventory = Inventory(**{"SKU-1": Availability(True, 3), "SKU-2": Availability(False, 4)})
    consumers = CatalogConsumers(catalog_db, inventory, StepReplies("catalog", Sent()), clock=lambda: NOW)
    batch = [delivered(CatalogSkuProcessed(sku=sku)) for sku in ("SKU-2", "SKU-1", "GHOST-1", "SKU-1")]

    await consumers.mark_availability(batch)

    assert inventory.asked == [["GHOST-1", "SKU-1", "SKU-2"]], "one look-up, each SKU once"
    assert ((await product(catalog_db, "SKU-1")).available, (await product(catalog_db, "SKU-2")).available) == (
        True,
        False,
    )
    assert await product(catalog_db, "GHOST-1") is None


async def test_commands_of_a_batch_for_one_sku_leave_the_newest_and_each_gets_its_reply(catalog_db: Database):
    sent = Sent()
    consumers = CatalogConsumers(catalog_db, Inventory(), StepReplies("catalog", sent))
    commands = [
        UpdateSkuAvailability(sku="SKU-1", available_for_sale=4, revision=3),
        UpdateSkuAvailability(sku="SKU-1", available_for_sale=0, revision=2),
    ]

    await consumers.update_availability([delivered(command, flow_id=FLOW) for command in commands])

    row = await product(catalog_db, "SKU-1")
    assert (row.available, row.availability_revision) == (True, 3)
    assert [body["revision"] for body in sent.bodies()] == [3, 2]


async def test_users_records_a_batch_in_one_go_and_emails_each_wisher_of_each_sku_once(users_db: Database):
    async with users_db.transaction() as session:
        await session.execute(wishlist_items.insert().values(user_id="u1", sku="SKU-2", added_at=NOW))
    wakes: list[str] = []
    inventory = Inventory(**{"SKU-1": Availability(True, 2), "SKU-2": Availability(True, 7)})
    consumers = UsersConsumers(users_db, inventory, StepReplies("users", Sent()), emails_due=lambda: wakes.append("w"))

    await consumers.learn_availability([delivered(UsersSkuProcessed(sku=sku)) for sku in ("SKU-1", "SKU-2", "SKU-1")])

    assert await due_emails(users_db) == [("u1", "SKU-1", 2), ("u1", "SKU-2", 7), ("u2", "SKU-1", 2)]
    assert wakes == ["w"]


async def test_inventory_recalculates_a_batch_in_one_transaction(inventory_db: Database):
    async with inventory_db.transaction() as session:
        await session.execute(skus.insert().values(sku="SKU-2", on_hand=0, safety_stock=0, revision=4, updated_at=NOW))
    sent = Sent()
    consumers = inventory_consumers(inventory_db, "orchestration", sent)

    await consumers.recalculate_for_flow(
        [delivered(RecalculateSku(sku=sku), flow_id=FLOW) for sku in ("SKU-2", "SKU-1", "GHOST-1")]
    )

    assert [(body["sku"], body["revision"], body["ok"]) for body in sent.bodies()] == [
        ("SKU-2", 4, True),
        ("SKU-1", 1, True),
        ("GHOST-1", 0, False),
    ]
