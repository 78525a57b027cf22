"""A file's lines applied set-based: staged into a temporary table, then a few statements record them.

A million lines cost a bulk load (COPY on PostgreSQL, one `executemany` on SQLite) and a handful of
statements, not a million round trips, and the process holds one batch at a time. Everything happens in
the caller's transaction, so a file is recorded whole or not at all.

These statements apply the rules of `skuflow.inventory.domain` to many lines at once; the tests check that
both ways give the same result. One difference comes from files having a warehouse per line: several
warehouses may report the same SKU, and the file then changes that SKU once, by the sum of their changes
(one revision, one `sku_processed`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.inventory.feed.lines import BadLine, Row
from skuflow.platform.db import Database, driver_connection

COLUMNS = ("line", "warehouse_id", "sku", "on_hand", "as_of")
_LINES_COLUMNS = (
    "line integer NOT NULL, warehouse_id varchar(64) NOT NULL, sku varchar(64) NOT NULL, "
    "on_hand integer NOT NULL, as_of {timestamp} NOT NULL"
)
_SKUS_COLUMNS = "sku varchar(64) PRIMARY KEY, delta bigint NOT NULL, is_new boolean NOT NULL"

_DUPLICATES = text(
    "SELECT line, warehouse_id, sku, first_line FROM ("
    " SELECT line, warehouse_id, sku, MIN(line) OVER (PARTITION BY warehouse_id, sku) AS first_line"
    " FROM feed_lines) numbered"
    " WHERE line <> first_line ORDER BY line"
)
# A line is stale when its as_of is not newer than the one recorded for its warehouse and SKU.
_DROP_STALE = text(
    "DELETE FROM feed_lines WHERE EXISTS (SELECT 1 FROM stock_levels r"
    " WHERE r.warehouse_id = feed_lines.warehouse_id AND r.sku = feed_lines.sku AND r.as_of >= feed_lines.as_of)"
)
# The SKUs' rows, locked in name order as `recording` does, so concurrent reports queue instead of deadlocking.
_LOCK_SKUS = text(
    "SELECT count(*) FROM (SELECT s.sku FROM skus s WHERE EXISTS"
    " (SELECT 1 FROM feed_lines l WHERE l.sku = s.sku) ORDER BY s.sku FOR UPDATE OF s) locked"
)
_SKU_CHANGES = text(
    "INSERT INTO feed_skus (sku, delta, is_new)"
    " SELECT l.sku, SUM(l.on_hand - COALESCE(r.on_hand, 0)), NOT EXISTS (SELECT 1 FROM skus s WHERE s.sku = l.sku)"
    " FROM feed_lines l LEFT JOIN stock_levels r ON r.warehouse_id = l.warehouse_id AND r.sku = l.sku"
    " GROUP BY l.sku"
)
_WRITE_LEVELS = text(
    "INSERT INTO stock_levels (warehouse_id, sku, on_hand, as_of, updated_at)"
    " SELECT warehouse_id, sku, on_hand, as_of, :now FROM feed_lines WHERE true"
    " ON CONFLICT (warehouse_id, sku) DO UPDATE"
    " SET on_hand = excluded.on_hand, as_of = excluded.as_of, updated_at = excluded.updated_at"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))
_UPDATE_SKUS = text(
    "UPDATE skus SET on_hand = skus.on_hand + f.delta, revision = skus.revision + 1, updated_at = :now"
    " FROM feed_skus f WHERE f.sku = skus.sku AND f.delta <> 0 AND NOT f.is_new"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))
_CREATE_SKUS = text(
    "INSERT INTO skus (sku, on_hand, safety_stock, revision, updated_at)"
    " SELECT sku, delta, 0, 1, :now FROM feed_skus WHERE is_new"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))
_CHANGED_PAGE = text(
    "SELECT sku FROM feed_skus WHERE (is_new OR delta <> 0) AND sku > :after ORDER BY sku LIMIT :limit"
)


@dataclass(frozen=True, slots=True)
class Applied:
    accepted: int  # lines not stale (repeats of the recorded number included)
    stale: int
    changed: int  # SKUs whose on_hand changed, or that the file created: one sku_processed each


class Staging:
    """The lines of one file, in temporary tables of the transaction that records them."""

    def __init__(self, db: Database, session: AsyncSession) -> None:
        self.db = db
        self.session = session
        self.staged = 0
        self._bind_time: Any = None

    async def create(self) -> None:
        if self.db.is_sqlite:
            # SQLite keeps temporary tables for the life of the (pooled) connection: start empty.
            for table in ("feed_lines", "feed_skus"):
                await self.session.execute(text(f"DROP TABLE IF EXISTS temp.{table}"))
            await self._execute(f"CREATE TEMPORARY TABLE feed_lines ({_LINES_COLUMNS.format(timestamp='text')})")
            await self._execute(f"CREATE TEMPORARY TABLE feed_skus ({_SKUS_COLUMNS})")
            dialect = self.db.engine.dialect
            self._bind_time = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
        else:
            columns = _LINES_COLUMNS.format(timestamp="timestamptz")
            await self._execute(f"CREATE TEMPORARY TABLE feed_lines ({columns}) ON COMMIT DROP")
            await self._execute(f"CREATE TEMPORARY TABLE feed_skus ({_SKUS_COLUMNS}) ON COMMIT DROP")

    async def add(self, rows: Sequence[Row]) -> None:
        """Stage checked lines with the driver's bulk path (a stage of the transaction, not yet recorded)."""
        if not rows:
            return
        if self.db.is_sqlite:
            to_text = self._bind_time
            await (await driver_connection(self.session)).executemany(
                "INSERT INTO feed_lines VALUES (?, ?, ?, ?, ?)", [(*row[:4], to_text(row[4])) for row in rows]
            )
        else:
            await self.db.copy(self.session, "feed_lines", COLUMNS, rows)
        self.staged += len(rows)

    async def duplicates(self) -> AsyncIterator[BadLine]:
        """Each line that repeats the warehouse and SKU of an earlier line, in line order."""
        result = await self.session.stream(_DUPLICATES)
        async for line, warehouse, sku, first in result:
            yield BadLine(line, f"warehouse {warehouse} reports {sku} twice (lines {first} and {line})")

    async def apply(self, now: datetime) -> Applied:
        """Record the staged lines: drop the stale ones, write the rest, move the SKUs' totals on."""
        if not self.db.is_sqlite:
            await self._execute("ANALYZE feed_lines")  # a temporary table has no statistics otherwise
            await self.session.execute(_LOCK_SKUS)
        stale: int = (await self.session.execute(_DROP_STALE)).rowcount  # type: ignore[attr-defined]
        await self.session.execute(_SKU_CHANGES)
        await self.session.execute(_WRITE_LEVELS, {"now": now})
        await self.session.execute(_UPDATE_SKUS, {"now": now})
        await self.session.execute(_CREATE_SKUS, {"now": now})
        changed = await self.session.scalar(text("SELECT count(*) FROM feed_skus WHERE is_new OR delta <> 0"))
        return Applied(accepted=self.staged - stale, stale=stale, changed=int(changed or 0))

    async def drop(self) -> None:
        """Empty the tables before the commit (SQLite keeps temporary tables for the connection's life)."""
        if self.db.is_sqlite:
            for table in ("feed_lines", "feed_skus"):
                await self._execute(f"DROP TABLE temp.{table}")

    async def changed_skus(self, page: int = 5000) -> AsyncIterator[list[str]]:
        """The SKUs the file changed, in name order, a page at a time."""
        after = ""
        while True:
            names = list((await self.session.scalars(_CHANGED_PAGE, {"after": after, "limit": page})).all())
            if not names:
                return
            yield names
            after = names[-1]

    async def _execute(self, statement: str) -> None:
        await self.session.execute(text(statement))
