"""Users' reconciliation (see `skuflow.platform.reconcile`): the availability users holds of each SKU, and
each wishlisted SKU it never heard of, compared with inventory's answer. A repair at a newer revision goes
the usual way (`record_availability`), so an email missed with a lost message goes out then, by the rules."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from skuflow.platform.availability import Availability, AvailabilitySource
from skuflow.platform.db import Database
from skuflow.platform.reconcile import Held, Reconciliation
from skuflow.users.db import sku_availability, wishlist_items
from skuflow.users.wishlists import record_availability

log = logging.getLogger("skuflow.users")


def reconciliation(
    db: Database, every: timedelta, inventory: AvailabilitySource, emails_due: Callable[[], None]
) -> Reconciliation:
    known = sku_availability.c

    async def older(cutoff: datetime, after: str, limit: int) -> list[Held]:
        stale = select(known.sku, known.available, known.revision).where(known.sku > after, known.checked_at < cutoff)
        never = (
            select(wishlist_items.c.sku)
            .distinct()
            .where(wishlist_items.c.sku > after)
            .where(~wishlist_items.c.sku.in_(select(known.sku)))
        )
        async with db.reading() as session:
            rows = await session.execute(stale.order_by(known.sku).limit(limit))
            held = [Held(row.sku, row.available, row.revision) for row in rows]
            unknown = await session.scalars(never.order_by(wishlist_items.c.sku).limit(limit))
            held += [Held(sku, False, 0) for sku in unknown.all()]
        return sorted(held, key=lambda item: item.sku)[:limit]

    async def repair(held: Held, available: bool, revision: int) -> None:
        if revision > held.revision:
            await record_availability(db, held.sku, Availability(available, revision), emails_due)
            return
        # The same revision held with another value (or an older revision at inventory): only a restored
        # backup does that. Inventory is right; no email for a transition that cannot be placed in order.
        async with db.transaction() as session:
            await session.execute(
                sku_availability.update()
                .where(known.sku == held.sku)
                .values(available=available, revision=revision, checked_at=datetime.now(UTC))
            )

    async def checked(skus: list[str], now: datetime) -> None:
        async with db.transaction() as session:
            await session.execute(sku_availability.update().where(known.sku.in_(skus)).values(checked_at=now))

    return Reconciliation("users", every, inventory, older, repair, checked)
