"""Catalog's part of the flow: marking a SKU available or not when inventory says it changed.

The consumer of `catalog.sku_processed` asks inventory's REST API for the SKU's current availability and
stores it with inventory's `revision`, only if that revision is newer than the one stored: duplicates and
deliveries in any order leave the newest answer in place. Inventory not knowing the SKU is not an error
(nothing to mark); inventory unreachable or failing is, and the messaging layer retries it with a delay.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pydantic
from sqlalchemy import select

from skuflow.catalog import domain
from skuflow.catalog.db import products
from skuflow.catalog.messages import SkuProcessed, UpdateSkuAvailability
from skuflow.messaging import Message
from skuflow.platform.db import Database
from skuflow.platform.flows import finish_step
from skuflow.platform.http import ServiceUnavailable, call_json
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.catalog")


class InventoryAvailability(pydantic.BaseModel):
    """The part of inventory's availability answer that catalog uses (its own model of the contract)."""

    available: bool
    revision: int = pydantic.Field(ge=1)


class UnexpectedAnswer(Exception):
    """Inventory answered in a way the contract does not foresee (retried, then dead-lettered)."""


async def mark_sku_availability(runtime: ServiceRuntime, message: Message[SkuProcessed]) -> None:
    sku = message.body.sku
    url = f"{runtime.settings.inventory_url}/v1/skus/{sku}/availability"
    status, body = await call_json(runtime.http, "GET", url)  # ServiceUnavailable: retried later
    if status == 404:
        log.info("inventory does not know SKU %s: no availability to mark", sku)
        return
    if status >= 500:
        raise ServiceUnavailable(f"GET {url} answered {status}")
    if status != 200:
        raise UnexpectedAnswer(f"GET {url} answered {status}: {body!r}")
    try:
        answer = InventoryAvailability.model_validate(body)
    except pydantic.ValidationError as error:
        raise UnexpectedAnswer(f"GET {url} answered 200 with an unusable body: {error}") from None

    stored = await stored_revision(runtime.db, sku)
    if stored is not None and not domain.is_newer(answer.revision, stored):
        # A duplicate or a late delivery: answered without taking the write lock.
        log.debug("SKU %s: revision %d already known (stored %d)", sku, answer.revision, stored)
        return
    if await store_availability(runtime.db, sku, available=answer.available, revision=answer.revision):
        log.info("SKU %s is %savailable (revision %d)", sku, "" if answer.available else "not ", answer.revision)


async def update_sku_availability(runtime: ServiceRuntime, message: Message[UpdateSkuAvailability]) -> None:
    """Consumer of `catalog.update_sku_availability` (orchestration): the command carries the availability
    and its revision; stored only if newer, so a stale or repeated command changes nothing. Then the reply."""
    command = message.body
    available = command.available_for_sale > 0
    if await store_availability(runtime.db, command.sku, available=available, revision=command.revision):
        log.info("SKU %s is %savailable (revision %d)", command.sku, "" if available else "not ", command.revision)
    await finish_step(runtime, message, "update_sku_availability", command.sku, command.revision)


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
    now = checked_at or datetime.now(UTC)
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
