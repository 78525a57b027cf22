"""Catalog's part of the flow: marking a SKU available or not when inventory says it changed.

The consumer of `catalog.sku_processed` asks inventory's REST API for the SKU's current availability and
stores it with inventory's `revision`, only if that revision is newer than the one stored: duplicates and
deliveries in any order leave the newest answer in place. Inventory not knowing the SKU is not an error
(nothing to mark); inventory unreachable or failing is, and the messaging layer retries it with a delay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from skuflow.catalog import domain
from skuflow.catalog.db import products
from skuflow.catalog.messages import SkuProcessed, UpdateSkuAvailability
from skuflow.messaging import Message
from skuflow.platform.availability import Availability, AvailabilitySource, newest
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
        """`catalog.sku_processed` (choreography): ask inventory (one call for the batch), store what is newer
        (one statement)."""
        skus = {message.body.sku for message in messages}
        answers = await self.inventory.availabilities(list(skus))  # unreachable or failing: retried later
        for sku in skus - answers.keys():
            log.info("inventory does not know SKU %s: no availability to mark", sku)
        # Duplicates and late deliveries end at this read, without taking the write lock.
        stored = await stored_revisions(self.db, answers)
        newer = {
            sku: answer
            for sku, answer in answers.items()
            if sku not in stored or domain.is_newer(answer.revision, stored[sku])
        }
        await self._store(newer)

    async def update_availability(self, messages: Sequence[Message[UpdateSkuAvailability]]) -> None:
        """`catalog.update_sku_availability` (orchestration): the command carries the availability and its
        revision; stored only if newer, so a stale or repeated command changes nothing. Then the replies."""
        news = newest(
            (message.body.sku, Availability(message.body.available_for_sale > 0, message.body.revision))
            for message in messages
        )
        await self._store(news)
        await self.replies.finish_each(messages, "update_sku_availability")

    async def _store(self, news: dict[str, Availability]) -> None:
        if not news:
            return
        stored = await store_availabilities(self.db, news, self.clock())
        log.debug("availability of %d SKUs stored (%d newer than catalog's)", len(news), stored)


async def stored_revisions(db: Database, skus: Iterable[str]) -> dict[str, int]:
    """The inventory revision catalog holds for each of `skus` that has a row."""
    query = select(products.c.sku, products.c.availability_revision).where(products.c.sku.in_(set(skus)))
    async with db.reading() as session:
        return {row.sku: row.availability_revision for row in await session.execute(query)}


async def store_availabilities(db: Database, news: Mapping[str, Availability], now: datetime) -> int:
    """Store inventory's answers, each unless a newer (or the same) revision is stored; answers how many were.

    One statement, so that two answers racing each other cannot both win: an insert for a SKU catalog has
    not heard of (a row without a name: not a product yet), else an update conditional on the revision.
    """
    rows = [
        {
            "sku": sku,
            "available": answer.available,
            "availability_revision": answer.revision,
            "availability_checked_at": now,
            "updated_at": now,
        }
        for sku, answer in sorted(news.items())  # in key order: concurrent writers lock rows in the same order
    ]
    statement = db.insert(products).values(rows)
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
    return int(result.rowcount)


async def store_availability(
    db: Database, sku: str, *, available: bool, revision: int, checked_at: datetime | None = None
) -> bool:
    """`store_availabilities` for one SKU; True if stored."""
    return bool(await store_availabilities(db, {sku: Availability(available, revision)}, checked_at or utc_now()))
