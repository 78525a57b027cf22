"""Importing one downloaded warehouse file: whole or not at all, and never twice.

One transaction stages and checks every line, records the numbers, adds one `sku_processed` outbox row
per changed SKU and writes the file's row in the `warehouse_files` ledger. The ledger row is what makes a
file count once: a crash before the commit leaves nothing (the file is imported later, whole), and a crash
after it leaves the row, so the file is recognised by its path and content hash and only moved.

Any bad line rejects the file: the transaction is rolled back and the report lists every bad line, in line
order, as `line <n>: <reason>` (CONTRACT section 7). The report is built on disk, so a file of a million
bad lines does not need a million strings in memory.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.inventory.db import warehouse_files
from skuflow.inventory.feed.lines import Batch, read_batches
from skuflow.inventory.feed.staging import Staging
from skuflow.inventory.recording import announce_changes, retrying_conflicts
from skuflow.messaging import flow_scope, new_id
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.inventory.feed")

Status = Literal["imported", "rejected", "unchanged"]
PROGRESS_EVERY = 100_000  # lines; a log line to follow a big import (and to know it is under way)


@dataclass(frozen=True)
class Delivery:
    """A file fetched from the warehouse's server into a local copy."""

    path: str  # where it is on the FTP server
    local: Path
    content_hash: str  # SHA-256 of the content, hex
    size: int
    snapshot: bool  # a snapshot is compared with its last imported version; a delivery with any earlier one


@dataclass(frozen=True)
class Outcome:
    status: Status
    lines: int = 0
    accepted: int = 0
    stale: int = 0
    bad_lines: int = 0
    changed_skus: int = 0
    correlation_id: str = ""
    seconds: float = 0.0
    errors_report: Path | None = None  # rejected: the local report, `line <n>: <reason>` per bad line

    def as_dict(self) -> dict[str, object]:
        return {key: value for key, value in asdict(self).items() if key != "errors_report"}


class _Rejected(Exception):
    """Raised inside the import's transaction to roll it back."""

    def __init__(self, lines: int, bad_lines: int) -> None:
        self.lines = lines
        self.bad_lines = bad_lines


async def import_delivery(runtime: ServiceRuntime, delivery: Delivery, workdir: Path) -> Outcome:
    """Import the file unless the ledger says it was (CONTRACT sections 4 and 7)."""
    if await _seen_before(runtime, delivery):
        return Outcome("unchanged")
    correlation_id = new_id()
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    with flow_scope(correlation_id, None):
        log.info("importing %s (%d bytes)", delivery.path, delivery.size)
        try:
            outcome = await retrying_conflicts(lambda: _import(runtime, delivery, workdir, started_at, correlation_id))
        except _Rejected as rejected:
            outcome = Outcome(
                "rejected",
                lines=rejected.lines,
                bad_lines=rejected.bad_lines,
                errors_report=workdir / "errors.txt",
            )
            async with runtime.db.transaction() as session:  # remembered, so an unchanged snapshot is not retried
                await _write_ledger(session, delivery, outcome, correlation_id, started_at)
        outcome = Outcome(
            **{**asdict(outcome), "correlation_id": correlation_id, "seconds": time.perf_counter() - clock}
        )
    log.info(
        "%s %s: %d lines, %d accepted, %d stale, %d bad, %d SKUs changed in %.2f s",
        outcome.status,
        delivery.path,
        outcome.lines,
        outcome.accepted,
        outcome.stale,
        outcome.bad_lines,
        outcome.changed_skus,
        outcome.seconds,
        extra={"correlation_id": correlation_id},
    )
    return outcome


async def _seen_before(runtime: ServiceRuntime, delivery: Delivery) -> bool:
    """A delivery: any earlier import of the same path and content. A snapshot: the same content as its
    newest version imported (A, B, A is three imports), or as the newest one rejected since then."""
    async with runtime.db.reading() as session:
        if not delivery.snapshot:
            query = select(warehouse_files.c.id).where(
                warehouse_files.c.path == delivery.path,
                warehouse_files.c.content_hash == delivery.content_hash,
                warehouse_files.c.status == "imported",
            )
            return (await session.execute(query.limit(1))).first() is not None
        newest = select(warehouse_files.c.content_hash, warehouse_files.c.status).where(
            warehouse_files.c.path == delivery.path
        )
        rows = (await session.execute(newest.order_by(warehouse_files.c.id.desc()).limit(2))).all()
    for content_hash, status in rows:
        if content_hash == delivery.content_hash:
            return True
        if status == "imported":
            return False  # the newest import differs; an older one does not count
    return False


async def _import(
    runtime: ServiceRuntime, delivery: Delivery, workdir: Path, started_at: datetime, correlation_id: str
) -> Outcome:
    async with runtime.db.transaction() as session:
        staging = Staging(runtime.db, session)
        await staging.create()
        lines, bad_lines = await _stage(staging, delivery, workdir, started_at)
        duplicates = 0
        with (workdir / "duplicates.txt").open("w", encoding="utf-8") as report:
            async for bad in staging.duplicates():
                report.write(f"{bad}\n")
                duplicates += 1
        if bad_lines or duplicates:
            _merge_reports(workdir)
            raise _Rejected(lines, bad_lines + duplicates)
        applied = await staging.apply(started_at)
        async for names in staging.changed_skus():
            await announce_changes(runtime, session, names)
        outcome = Outcome("imported", lines, applied.accepted, applied.stale, changed_skus=applied.changed)
        await _write_ledger(session, delivery, outcome, correlation_id, started_at)
    return outcome


async def _stage(staging: Staging, delivery: Delivery, workdir: Path, now: datetime) -> tuple[int, int]:
    """Read and check the file in a worker thread, one batch ahead of staging the previous one."""
    batches: Generator[Batch, None, None] = read_batches(delivery.local, now)
    lines = bad_lines = reported = 0
    upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    try:
        with (workdir / "bad_lines.txt").open("w", encoding="utf-8") as report:
            while (batch := await upcoming) is not None:
                upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                for bad in batch.bad:
                    report.write(f"{bad}\n")
                bad_lines += len(batch.bad)
                lines += len(batch.rows) + len(batch.bad)
                await staging.add(batch.rows)  # after a bad line, still staged: duplicates are reported too
                if lines - reported >= PROGRESS_EVERY:
                    reported = lines
                    log.info("%s: %d lines read", delivery.path, lines)
    finally:
        # On an error, let the reading thread finish its batch before closing the file under it.
        await asyncio.gather(upcoming, return_exceptions=True)
        batches.close()
    return lines, bad_lines


def _merge_reports(workdir: Path) -> None:
    """One report in line order, from the lines' own faults and the duplicates (each already in order)."""

    def entries(name: str) -> Iterator[tuple[int, str]]:
        with (workdir / name).open(encoding="utf-8") as source:
            for entry in source:
                yield int(entry[5 : entry.index(":")]), entry

    with (workdir / "errors.txt").open("w", encoding="utf-8") as report:
        for _, entry in heapq.merge(entries("bad_lines.txt"), entries("duplicates.txt")):
            report.write(entry)


async def _write_ledger(
    session: AsyncSession, delivery: Delivery, outcome: Outcome, correlation_id: str, started_at: datetime
) -> None:
    await session.execute(
        warehouse_files.insert().values(
            path=delivery.path,
            content_hash=delivery.content_hash,
            size=delivery.size,
            status=outcome.status,
            lines=outcome.lines,
            accepted=outcome.accepted,
            stale=outcome.stale,
            bad_lines=outcome.bad_lines,
            changed_skus=outcome.changed_skus,
            correlation_id=correlation_id,
            started_at=started_at,
            finished_at=datetime.now(UTC),
        )
    )
