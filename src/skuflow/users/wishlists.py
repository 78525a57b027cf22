"""Wishlists, and what users learns of availability: the transitions that make emails due.

Users keeps, per SKU, the availability and revision it last learned from inventory (from events and
commands, see consumers.py, and when it reconciles); only a newer revision than the recorded one changes
anything (redeliveries and late messages are ignored). When the SKU goes from not available (or unknown) to
available, one notification per wishlisting user is written in the same transaction, unique
per user, SKU and revision: the mailer sends them afterwards (see mailer.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select

from skuflow.platform.availability import Availability
from skuflow.platform.db import Database, utc
from skuflow.platform.runtime import ServiceRuntime
from skuflow.users import emails
from skuflow.users.db import notifications, sku_availability, users, wishlist_items

log = logging.getLogger("skuflow.users")


async def record_availability(
    db: Database,
    sku: str,
    news: Availability,
    emails_due: Callable[[], None] = lambda: None,
    now: datetime | None = None,
) -> int:
    """Record a SKU's availability at a revision; returns how many emails became due (`emails_due` is called
    once they are committed)."""
    now = now or datetime.now(UTC)
    async with db.transaction() as session:
        known = (
            await session.execute(db.for_update(select(sku_availability).where(sku_availability.c.sku == sku)))
        ).first()
        if not emails.is_news(news.revision, known.revision if known else None):
            return 0
        row = {"sku": sku, "available": news.available, "revision": news.revision, "checked_at": now}
        if known is None:
            # A concurrent first record of the same SKU fails on the key; the message is retried and then
            # finds this row.
            await session.execute(sku_availability.insert().values(**row))
        else:
            await session.execute(sku_availability.update().where(sku_availability.c.sku == sku).values(**row))
        if not emails.email_due(known.available if known else None, news.available):
            return 0
        wishers = (
            await session.execute(
                select(users.c.id, users.c.email)
                .join(wishlist_items, wishlist_items.c.user_id == users.c.id)
                .where(wishlist_items.c.sku == sku)
            )
        ).all()
        if wishers:
            statement = db.insert(notifications).on_conflict_do_nothing(index_elements=["user_id", "sku", "revision"])
            await session.execute(
                statement,
                [
                    {
                        "user_id": user.id,
                        "sku": sku,
                        "revision": news.revision,
                        "email": user.email,
                        "created_at": now,
                        "next_attempt_at": now,
                        "attempts": 0,
                    }
                    for user in wishers
                ],
            )
            db.after_commit(session, emails_due)
        log.info("SKU %s is available again (revision %d): %d email(s) due", sku, news.revision, len(wishers))
        return len(wishers)


class WishlistFull(Exception):
    """The wishlist holds the most items a user may have (SKUFLOW_WISHLIST_MAX_ITEMS)."""


async def add_item(runtime: ServiceRuntime, user_id: str, sku: str) -> tuple[dict[str, Any], bool]:
    """Put a SKU on a user's wishlist; returns the item and whether it is new. Raises `WishlistFull`: the cap
    bounds how many emails one SKU's change can cause per account made."""
    db = runtime.db
    most = runtime.settings.wishlist_max_items
    async with db.transaction() as session:
        # The user's row locked: two concurrent additions cannot both pass the count (PostgreSQL; SQLite
        # writes one transaction at a time anyway).
        await session.execute(db.for_update(select(users.c.id).where(users.c.id == user_id)))
        there = select(wishlist_items.c.sku).where(wishlist_items.c.user_id == user_id)
        if await session.scalar(there.where(wishlist_items.c.sku == sku)) is None:
            held = await session.scalar(select(func.count()).select_from(there.subquery()))
            if (held or 0) >= most:
                raise WishlistFull(f"the wishlist already holds {most} items, the most it may (remove one first)")
        statement = db.insert(wishlist_items).on_conflict_do_nothing(index_elements=["user_id", "sku"])
        result = await session.execute(statement.values(user_id=user_id, sku=sku, added_at=datetime.now(UTC)))
        created = bool(getattr(result, "rowcount", 0))
    item = await get_items(runtime, user_id, skus=[sku])
    return item[0], created


async def remove_item(runtime: ServiceRuntime, user_id: str, sku: str) -> bool:
    async with runtime.db.transaction() as session:
        result = await session.execute(
            delete(wishlist_items).where(wishlist_items.c.user_id == user_id, wishlist_items.c.sku == sku)
        )
        return bool(getattr(result, "rowcount", 0))


async def get_items(
    runtime: ServiceRuntime,
    user_id: str,
    *,
    skus: list[str] | None = None,
    after: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """A user's wishlist items, by SKU; `available` is what users has learned (false when not yet known)."""
    query = (
        select(wishlist_items.c.sku, wishlist_items.c.added_at, sku_availability.c.available)
        .outerjoin(sku_availability, sku_availability.c.sku == wishlist_items.c.sku)
        .where(wishlist_items.c.user_id == user_id)
        .order_by(wishlist_items.c.sku)
        .limit(limit)
    )
    if skus is not None:
        query = query.where(wishlist_items.c.sku.in_(skus))
    if after is not None:
        query = query.where(wishlist_items.c.sku > after)
    async with runtime.db.reading() as session:
        rows = (await session.execute(query)).all()
    return [{"sku": row.sku, "available": bool(row.available), "added_at": utc(row.added_at)} for row in rows]
