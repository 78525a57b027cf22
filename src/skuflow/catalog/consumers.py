"""Catalog's part of the flow: marking a SKU available or not when inventory says it changed.

The consumer of `catalog.sku_processed` asks inventory's REST API for the SKU's current availability and
stores it with inventory's `revision`, only if that revision is newer than the one stored: duplicates and
deliveries in any order leave the newest answer in place. Inventory not knowing the SKU is not an error
(nothing to mark); inventory unreachable or failing is, and the messaging layer retries it with a delay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from skuflow.catalog import domain
from skuflow.catalog.db import products
from skuflow.catalog.messages import SkuProcessed, UpdateSkuAvailability
from skuflow.messaging import Message
from skuflow.platform.availability import AvailabilitySource
from skuflow.platform.clock import Clock, utc_now
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies

log = logging.getLogger("skuflow.catalog")


class CatalogConsumers:
    """Catalog's message handlers, and what they use: its database, inventory's availability, the replies of
    the steps it owns, and a clock."""

    def __init__(
        self, db: Database, inventory: AvailabilitySource, replies: StepReplies, clock: Clock = utc_now
    ) -> None:
        self.db = db
        self.inventory = inventory
        self.replies = replies
        self.clock = clock

    async def mark_availability(self, messages: Sequence[Message[SkuProcessed]]) -> None:
        """`catalog.sku_processed` (choreography): ask inventory, store what is newer."""
        for message in messages:
            sku = message.body.sku
            answer = await self.inventory.availability(sku)  # unreachable or failing: retried later
            if answer is None:
                log.info("inventory does not know SKU %s: no availability to mark", sku)
                continue
            stored = await stored_revision(self.db, sku)
            if stored is not None and not domain.is_newer(answer.revision, stored):
                # A duplicate or a late delivery: answered without taking the write lock.
                log.debug("SKU %s: revision %d already known (stored %d)", sku, answer.revision, stored)
                continue
            await self._store(sku, answer.available, answer.revision)

    async def update_availability(self, messages: Sequence[Message[UpdateSkuAvailability]]) -> None:
        """`catalog.update_sku_availability` (orchestration): the command carries the availability and its
        revision; stored only if newer, so a stale or repeated command changes nothing. Then the reply."""
        for message in messages:
            command = message.body
            await self._store(command.sku, command.available_for_sale > 0, command.revision)
            await self.replies.finish(message, "update_sku_availability", command.sku, command.revision)

    async def _store(self, sku: str, available: bool, revision: int) -> None:
        if await store_availability(self.db, sku, available=available, revision=revision, checked_at=self.clock()):
            log.info("SKU %s is %savailable (revision %d)", sku, "" if available else "not ", revision)


async def stored_revision(db: Database, sku: str) -> int | None:
    """The inventory revision catalog holds for `sku` (None: no row yet)."""
    async with db.reading() as session:
        revision: int | None = await session.scalar(
            select(products.c.availability_revision).where(products.c.sku == sku)
        )
    return revision


async def store_availability(
    db: Database, sku: str, *, available: bool, revision: int, checked_at: datetime | None = None
) -> bool:
    """Store inventory's answer at `revision` unless a newer (or the same) one is stored; True if stored.

    One statement, so that two answers racing each other cannot both win: an insert for a SKU catalog has
    not heard of (a row without a name: not a product yet), else an update conditional on the revision.
    """
    now = checked_at or utc_now()
    statement = db.insert(products).values(
        sku=sku, available=available, availability_revision=revision, availability_checked_at=now, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[products.c.sku],
        set_={
            "available": statement.excluded.available,
            "availability_revision": statement.excluded.availability_revision,
            "availability_checked_at": statement.excluded.availability_checked_at,
            "updated_at": statement.excluded.updated_at,
        },
        where=products.c.availability_revision < statement.excluded.availability_revision,
    )
    async with db.transaction() as session:
        result: Any = await session.execute(statement)
    return bool(result.rowcount)
