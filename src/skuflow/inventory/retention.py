"""Retention: inventory forgets, after `SKUFLOW_RETENTION_DAYS`, what it keeps only to answer for a while.

- Idempotency keys: a request repeated with its key later than that is a new request.
- Flows that ended (completed, failed, superseded), with their steps: `GET /v1/flows/...` no longer knows
  them. A running flow is never deleted, however old.
- The warehouse files ledger, except each path's newest imported entry and whatever came after it (or,
  for a path never imported, its newest entry): those decide whether a snapshot changed and whether a file
  still in the folder was already imported (`feed/importer.py`), so they stay.

Stock numbers, SKUs and the outbox (which purges itself) are not touched. It runs at start and then every
hour, in batches (short transactions, whatever the backlog), in one process of the service at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from skuflow.inventory.db import flow_steps, flows, idempotency_keys, warehouse_files
from skuflow.platform.background import Periodic
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.inventory.retention")

BATCH = 5_000
INTERVAL_SECONDS = 3_600.0
AFTER_FAILURE_SECONDS = 60.0


class Retention:
    def __init__(self, runtime: ServiceRuntime, interval: float = INTERVAL_SECONDS, batch: int = BATCH) -> None:
        self.db = runtime.db
        self.keep = timedelta(days=runtime.settings.retention_days)
        self.batch = batch
        self.deleted = dict.fromkeys(PURGES, 0)
        self._periodic = Periodic("inventory retention", self.purge, interval, after_failure=AFTER_FAILURE_SECONDS)

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def purge(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than the retention; answers how many rows of each kind went."""
        cutoff = (now or datetime.now(UTC)) - self.keep
        async with self.db.exclusive("skuflow-inventory-retention") as mine:
            if not mine:
                return {}  # another process of inventory is at it
            deleted = {kind: await self._in_batches(purge, cutoff) for kind, purge in PURGES.items()}
        for kind, count in deleted.items():
            self.deleted[kind] += count
        if any(deleted.values()):
            log.info("retention: deleted what ended before %s: %s", cutoff.isoformat(timespec="seconds"), deleted)
        return deleted

    async def _in_batches(self, purge: Purge, cutoff: datetime) -> int:
        """Run `purge` in a transaction of its own, batch after batch, until one deletes less than a batch."""
        total = 0
        while True:
            async with self.db.transaction() as session:
                deleted = await purge(session, cutoff, self.batch)
            total += deleted
            if deleted < self.batch:
                return total


Purge = Callable[[AsyncSession, datetime, int], Awaitable[int]]  # deletes up to a batch, answers how many


async def _old_keys(session: AsyncSession, cutoff: datetime, batch: int) -> int:
    key = (idempotency_keys.c.principal, idempotency_keys.c.key)
    found = select(*key).where(idempotency_keys.c.created_at < cutoff).limit(batch)
    rows = [tuple(row) for row in (await session.execute(found)).all()]
    if not rows:
        return 0
    return _count(await session.execute(delete(idempotency_keys).where(tuple_(*key).in_(rows))))


async def _ended_flows(session: AsyncSession, cutoff: datetime, batch: int) -> int:
    found = select(flows.c.flow_id).where(flows.c.status != "running", flows.c.finished_at < cutoff).limit(batch)
    ids = list((await session.scalars(found)).all())
    if not ids:
        return 0
    await session.execute(delete(flow_steps).where(flow_steps.c.flow_id.in_(ids)))
    return _count(await session.execute(delete(flows).where(flows.c.flow_id.in_(ids))))


async def _superseded_files(session: AsyncSession, cutoff: datetime, batch: int) -> int:
    files, same_path = warehouse_files, aliased(warehouse_files)
    newest = select(func.max(same_path.c.id)).where(same_path.c.path == files.c.path)
    newest_imported = newest.where(same_path.c.status == "imported")
    kept_from = func.coalesce(newest_imported.scalar_subquery(), newest.scalar_subquery())
    found = select(files.c.id).where(files.c.finished_at < cutoff, files.c.id < kept_from).limit(batch)
    ids = list((await session.scalars(found)).all())
    if not ids:
        return 0
    return _count(await session.execute(delete(files).where(files.c.id.in_(ids))))


def _count(result: Any) -> int:
    """Rows a DELETE removed: what stops the batches (a batch that deletes nothing ends them)."""
    return int(result.rowcount)


# What retention deletes, by the name it reports (`/readyz`, the log) under.
PURGES: dict[str, Purge] = {
    "idempotency_keys": _old_keys,
    "flows": _ended_flows,
    "warehouse_files": _superseded_files,
}
