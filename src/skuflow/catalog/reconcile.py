"""Catalog's reconciliation (see `skuflow.platform.reconcile`): products whose availability was last checked
long ago, or never, are compared with inventory's answer and repaired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select

from skuflow.catalog.db import products
from skuflow.platform.availability import AvailabilitySource
from skuflow.platform.db import Database
from skuflow.platform.reconcile import Held, Reconciliation


def reconciliation(db: Database, every: timedelta, inventory: AvailabilitySource) -> Reconciliation:
    column = products.c

    async def older(cutoff: datetime, after: str, limit: int) -> list[Held]:
        query = (
            select(column.sku, column.available, column.availability_revision)
            .where(column.sku > after)
            .where(or_(column.availability_checked_at.is_(None), column.availability_checked_at < cutoff))
            .order_by(column.sku)
            .limit(limit)
        )
        async with db.reading() as session:
            return [Held(row.sku, row.available, row.availability_revision) for row in await session.execute(query)]

    async def repair(held: Held, available: bool, revision: int) -> None:
        now = datetime.now(UTC)
        async with db.transaction() as session:
            await session.execute(
                products.update()
                .where(column.sku == held.sku, column.availability_revision <= revision)
                .values(available=available, availability_revision=revision, availability_checked_at=now)
                .values(updated_at=now)
            )

    async def checked(skus: list[str], now: datetime) -> None:
        async with db.transaction() as session:
            await session.execute(products.update().where(column.sku.in_(skus)).values(availability_checked_at=now))

    return Reconciliation("catalog", every, inventory, older, repair, checked)
