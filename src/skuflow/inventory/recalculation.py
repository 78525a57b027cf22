"""The asynchronous half of recording: recalculating a SKU's availability for sale after it changed.

The availability endpoint already answers from the recorded totals (read your writes); the consumers of
`inventory.sku_processed` and `inventory.recalculate_sku` (consumers.py) recompute `on_hand` from the stock
levels themselves (repairing, loudly, any drift between the two), and store `available_for_sale` with the
revision it was computed for, the projection that the orchestrated flow sends on and that shows how far
recalculation lags. Idempotent: a duplicate or late delivery recomputes the same values.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select

from skuflow.inventory import domain
from skuflow.inventory.db import skus, stock_levels
from skuflow.inventory.recording import Announcer
from skuflow.platform.db import Database

log = logging.getLogger("skuflow.inventory")


async def recalculate(db: Database, announcer: Announcer, sku: str, now: datetime) -> int | None:
    """Recalculate the SKU's availability; answers the revision it is now recalculated at (None: unknown)."""
    async with db.transaction() as session:
        row = (await session.execute(db.for_update(select(skus).where(skus.c.sku == sku)))).first()
        if row is None:
            log.warning("unknown SKU %s: nothing to recalculate", sku)
            return None
        on_hand = int(
            await session.scalar(
                select(func.coalesce(func.sum(stock_levels.c.on_hand), 0)).where(stock_levels.c.sku == sku)
            )
            or 0
        )
        values = {"revision": row.revision}
        if on_hand != row.on_hand:
            log.error(
                "SKU %s: recorded on_hand %d but its stock levels sum to %d; repairing", sku, row.on_hand, on_hand
            )
            values = {"on_hand": on_hand, "revision": row.revision + 1, "updated_at": now}
        await session.execute(
            skus.update()
            .where(skus.c.sku == sku)
            .values(
                **values,
                available_for_sale=domain.available_for_sale(on_hand, row.safety_stock),
                recalculated_revision=values["revision"],
                recalculated_at=now,
            )
        )
        if values["revision"] != row.revision:  # announced at its new revision (a flow reads it)
            await announcer.changed(session, [sku])
    return int(values["revision"])
