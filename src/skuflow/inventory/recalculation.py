"""The asynchronous half of recording: recalculating a SKU's availability for sale after it changed.

The availability endpoint already answers from the recorded totals (read your writes); the consumers of
`inventory.sku_processed` and `inventory.recalculate_sku` (consumers.py) recompute `on_hand` from the stock
levels themselves (repairing, loudly, any drift between the two), and store `available_for_sale` with the
revision it was computed for, the projection that the orchestrated flow sends on and that shows how far
recalculation lags. Idempotent: a duplicate or late delivery recomputes the same values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import bindparam, func, select

from skuflow.inventory import domain
from skuflow.inventory.db import skus, stock_levels
from skuflow.inventory.recording import Announcer
from skuflow.platform.db import Database

log = logging.getLogger("skuflow.inventory")


async def recalculate(db: Database, announcer: Announcer, names: Iterable[str], now: datetime) -> dict[str, int]:
    """Recalculate the SKUs' availability in one transaction; answers the revision each is now recalculated at
    (a SKU inventory does not know is left out)."""
    wanted = sorted(set(names))  # rows locked in key order, as every writer does
    async with db.transaction() as session:
        query = select(skus).where(skus.c.sku.in_(wanted))
        rows = (await session.execute(db.for_update(query.order_by(skus.c.sku)))).all()
        for sku in set(wanted) - {row.sku for row in rows}:
            log.warning("unknown SKU %s: nothing to recalculate", sku)
        if not rows:
            return {}
        summed = select(stock_levels.c.sku, func.sum(stock_levels.c.on_hand)).group_by(stock_levels.c.sku)
        sums = dict((await session.execute(summed.where(stock_levels.c.sku.in_(wanted)))).all())
        changes = []
        repaired = []
        for row in rows:
            on_hand = int(sums.get(row.sku) or 0)
            revision = row.revision
            if on_hand != row.on_hand:
                log.error(
                    "SKU %s: recorded on_hand %d but its stock levels sum to %d; repairing",
                    row.sku,
                    row.on_hand,
                    on_hand,
                )
                revision += 1
                repaired.append(row.sku)
            changes.append(
                {
                    "key": row.sku,
                    "on_hand": on_hand,
                    "revision": revision,
                    "updated_at": now if revision != row.revision else row.updated_at,
                    "available_for_sale": domain.available_for_sale(on_hand, row.safety_stock),
                    "recalculated_revision": revision,
                    "recalculated_at": now,
                }
            )
        await session.execute(skus.update().where(skus.c.sku == bindparam("key")), changes)
        if repaired:  # announced at their new revisions (a flow reads them)
            await announcer.changed(session, repaired)
    return {change["key"]: change["revision"] for change in changes}
