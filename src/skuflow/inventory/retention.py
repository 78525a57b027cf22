"""Retention: inventory forgets, after `SKUFLOW_RETENTION_DAYS`, what it keeps only to answer for a while.

- Idempotency keys: a request repeated with its key later than that is a new request.
- Flows that ended (completed, failed, superseded), with their steps: `GET /v1/flows/...` no longer knows
  them. A running flow is never deleted, however old.
- The warehouse files ledger, except each path's newest entry: that one decides whether a snapshot changed
  and whether a file still in the folder was already imported, so it stays.

Stock numbers, SKUs and the outbox (which purges itself) are not touched. It runs at start and then every
hour, in batches (short transactions, whatever the backlog), in one process of the service at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from skuflow.inventory.db import flow_steps, flows, idempotency_keys, warehouse_files
from skuflow.platform.background import Background
from skuflow.platform.db import Database
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.inventory.retention")

BATCH = 5_000
INTERVAL_SECONDS = 3_600.0


class Retention:
    def __init__(self, runtime: ServiceRuntime, interval: float = INTERVAL_SECONDS) -> None:
        self.db = runtime.db
        self.keep = timedelta(days=runtime.settings.retention_days)
        self.interval = interval
        self.deleted: dict[str, int] = {"idempotency_keys": 0, "flows": 0, "warehouse_files": 0}
        self._background = Background("retention")

    async def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("retention: a purge failed; trying again in %.0f s", self.interval)
            await asyncio.sleep(self.interval)

    async def purge(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than the retention; answers how many rows of each kind went."""
        cutoff = (now or datetime.now(UTC)) - self.keep
        async with self.db.exclusive("skuflow-inventory-retention") as mine:
            if not mine:
                return {}  # another process of inventory is at it
            deleted = {
                kind: await _in_batches(self.db, batch, cutoff)
                for kind, batch in (
                    ("idempotency_keys", _old_keys),
                    ("flows", _ended_flows),
                    ("warehouse_files", _superseded_files),
                )
            }
        for kind, count in deleted.items():
            self.deleted[kind] += count
        if any(deleted.values()):
            log.info("retention: deleted what ended before %s: %s", cutoff.isoformat(timespec="seconds"), deleted)
        return deleted


Batch = Callable[[AsyncSession, datetime], Awaitable[int]]


async def _in_batches(db: Database, batch: Batch, cutoff: datetime) -> int:
    """Run `batch` in a transaction of its own until it deletes less than a full batch."""
    total = 0
    while True:
        async with db.transaction() as session:
            count = await batch(session, cutoff)
        total += count
        if count < BATCH:
            return total


async def _old_keys(session: AsyncSession, cutoff: datetime) -> int:
    key = (idempotency_keys.c.principal, idempotency_keys.c.key)
    found = select(*key).where(idempotency_keys.c.created_at < cutoff).limit(BATCH)
    rows = [tuple(row) for row in (await session.execute(found)).all()]
    if rows:
        await session.execute(delete(idempotency_keys).where(tuple_(*key).in_(rows)))
    return len(rows)


async def _ended_flows(session: AsyncSession, cutoff: datetime) -> int:
    found = select(flows.c.flow_id).where(flows.c.status != "running", flows.c.finished_at < cutoff).limit(BATCH)
    ids = list((await session.scalars(found)).all())
    if ids:
        await session.execute(delete(flow_steps).where(flow_steps.c.flow_id.in_(ids)))
        await session.execute(delete(flows).where(flows.c.flow_id.in_(ids)))
    return len(ids)


async def _superseded_files(session: AsyncSession, cutoff: datetime) -> int:
    newer = aliased(warehouse_files)
    newest = select(func.max(newer.c.id)).where(newer.c.path == warehouse_files.c.path).scalar_subquery()
    found = (
        select(warehouse_files.c.id)
        .where(warehouse_files.c.finished_at < cutoff, warehouse_files.c.id < newest)
        .limit(BATCH)
    )
    ids = list((await session.scalars(found)).all())
    if ids:
        await session.execute(delete(warehouse_files).where(warehouse_files.c.id.in_(ids)))
    return len(ids)
