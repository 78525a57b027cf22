"""Wishlists, and what users learns of availability: the transitions that make emails due.

Users keeps, per SKU, the availability and revision it last learned from inventory (from events and
commands, see consumers.py, and when it reconciles); only a newer revision than the recorded one changes
anything (redeliveries and late messages are ignored). When the SKU goes from not available (or unknown) to
available, one notification per wishlisting user is written in the same transaction, unique
per user, SKU and revision: the mailer sends them afterwards (see mailer.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select

from skuflow.messaging.tracing import current_trace_headers
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
    """`record_availabilities` for one SKU."""
    return await record_availabilities(db, {sku: news}, emails_due, now or datetime.now(UTC))


async def record_availabilities(
    db: Database, news: Mapping[str, Availability], emails_due: Callable[[], None], now: datetime
) -> int:
    """Record SKUs' availability, each at its revision, in one transaction; returns how many emails became due
    (`emails_due` is called once they are committed)."""
    names = sorted(news)  # rows locked in key order, as every writer does
    async with db.transaction() as session:
        query = select(sku_availability).where(sku_availability.c.sku.in_(names)).order_by(sku_availability.c.sku)
        known = {row.sku: row for row in await session.execute(db.for_update(query))}
        fresh = [sku for sku in names if emails.is_news(news[sku].revision, _revision(known.get(sku)))]
        rows = [
            {"sku": sku, "available": news[sku].available, "revision": news[sku].revision, "checked_at": now}
            for sku in fresh
        ]
        # A concurrent first record of the same SKU fails on the key; the messages are retried and then find
        # its row.
        await db.insert_many(session, sku_availability, [row for row in rows if row["sku"] not in known])
        updated = [{**row, "key": row["sku"]} for row in rows if row["sku"] in known]
        if updated:
            await session.execute(
                sku_availability.update()
                .where(sku_availability.c.sku == bindparam("key"))
                .values(available=bindparam("available"), revision=bindparam("revision"), checked_at=now),
                updated,
            )
        became_available = [sku for sku in fresh if emails.email_due(_available(known.get(sku)), news[sku].available)]
        if not became_available:
            return 0
        wishers = (
            await session.execute(
                select(users.c.id, users.c.email, wishlist_items.c.sku)
                .join(wishlist_items, wishlist_items.c.user_id == users.c.id)
                .where(wishlist_items.c.sku.in_(became_available))
            )
        ).all()
        if wishers:
            traceparent = current_trace_headers().get("traceparent")
            statement = db.insert(notifications).on_conflict_do_nothing(index_elements=["user_id", "sku", "revision"])
            await session.execute(
                statement,
                [
                    {
                        "user_id": wisher.id,
                        "sku": wisher.sku,
                        "revision": news[wisher.sku].revision,
                        "email": wisher.email,
                        "created_at": now,
                        "next_attempt_at": now,
                        "attempts": 0,
                        "traceparent": traceparent,
                    }
                    for wisher in wishers
                ],
            )
            db.after_commit(session, emails_due)
        log.info("%d SKU(s) available again: %d email(s) due", len(became_available), len(wishers))
        return len(wishers)


def _revision(known: Any) -> int | None:
    return known.revision if known is not None else None


def _available(known: Any) -> bool | None:
    return known.available if known is not None else None


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
