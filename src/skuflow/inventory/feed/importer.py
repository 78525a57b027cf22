"""Importing one downloaded warehouse file: whole or not at all, and never twice.

One transaction stages and checks every line, records the numbers, adds one `sku_processed` outbox row
per changed SKU and writes the file's row in the `warehouse_files` ledger. The ledger row is what makes a
file count once: a crash before the commit leaves nothing (the file is imported later, whole), and a crash
after it leaves the row, so the file is recognised by its path and content hash and only moved.

Any bad line rejects the file: the transaction is rolled back and the report lists every bad line, in line
order, as `line <n>: <reason>` (CONTRACT section 7). The report is built on disk, so a file of a million
bad lines does not need a million strings in memory. A file over the size limit is rejected unread
(`reject_unread`): its report is the one line `line 1: <why>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.inventory.db import warehouse_files
from skuflow.inventory.feed.lines import BadLine, Batch, read_batches
from skuflow.inventory.feed.staging import Staging
from skuflow.inventory.recording import announce_changes, retrying_conflicts
from skuflow.messaging import flow_scope, new_id
from skuflow.platform import telemetry
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


class _AlreadyRecorded(Exception):
    """Another process recorded the file while this one was reading it (seen under the lock)."""


class _Rejected(Exception):
    """Raised inside the import's transaction to roll it back."""

    def __init__(self, lines: int, bad_lines: int) -> None:
        self.lines = lines
        self.bad_lines = bad_lines


async def import_delivery(runtime: ServiceRuntime, delivery: Delivery, workdir: Path) -> Outcome:
    """Import the file unless the ledger says it was (CONTRACT sections 4 and 7)."""
    async with runtime.db.reading() as session:  # the cheap look first: most repeats end here
        if await _seen_before(session, delivery):
            return Outcome("unchanged")
    correlation_id = new_id()
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    attributes = {"skuflow.feed.path": delivery.path, "skuflow.feed.bytes": delivery.size}
    with (
        flow_scope(correlation_id, None),
        telemetry.work_span(runtime.name, "import warehouse file", **attributes) as span,
    ):
        log.info("importing %s (%d bytes)", delivery.path, delivery.size)
        try:
            outcome = await retrying_conflicts(lambda: _import(runtime, delivery, workdir, started_at, correlation_id))
        except _AlreadyRecorded:
            log.info("%s was recorded by another process meanwhile", delivery.path)
            return Outcome("unchanged")
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
        if span is not None:
            span.set_attributes(
                {
                    "skuflow.feed.outcome": outcome.status,
                    "skuflow.feed.lines": outcome.lines,
                    "skuflow.feed.bad_lines": outcome.bad_lines,
                    "skuflow.feed.changed_skus": outcome.changed_skus,
                    "messaging.message.conversation_id": correlation_id,
                }
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


async def reject_unread(runtime: ServiceRuntime, delivery: Delivery, workdir: Path, reason: str) -> Outcome:
    """Reject a file without reading it (CONTRACT section 8: over the size limit), unless the ledger has
    this version already. Its `content_hash` is `unread_version(...)`: what the listing says of it."""
    correlation_id = new_id()
    started_at = datetime.now(UTC)
    with flow_scope(correlation_id, None):
        async with runtime.db.transaction() as session:
            await runtime.db.lock_for_transaction(session, f"skuflow-warehouse-import:{delivery.path}")
            if await _seen_before(session, delivery):
                return Outcome("unchanged")
            report = workdir / "errors.txt"
            report.write_text(f"{BadLine(1, reason)}\n", encoding="utf-8")
            outcome = Outcome("rejected", bad_lines=1, correlation_id=correlation_id, errors_report=report)
            await _write_ledger(session, delivery, outcome, correlation_id, started_at)
    log.info("rejected %s unread: %s", delivery.path, reason, extra={"correlation_id": correlation_id})
    return outcome


async def was_seen(runtime: ServiceRuntime, delivery: Delivery) -> bool:
    """Whether the ledger knows this version of the file (see `_seen_before`)."""
    async with runtime.db.reading() as session:
        return await _seen_before(session, delivery)


def unread_version(size: int, modified: str) -> str:
    """The stand-in for the content hash of a file rejected unread: a digest of its size and modification
    time, so that the same version is known again without a download, and any change is news."""
    return hashlib.sha256(f"unread {size} {modified}".encode()).hexdigest()


async def _seen_before(session: AsyncSession, delivery: Delivery) -> bool:
    """Whether the file is the version of its path imported last: a delivery left in the folder by a crash
    between the commit and the move, or a snapshot that has not changed. Any other content is news (A, B,
    then A again is three imports). A snapshot version rejected since is not examined again either, until it
    changes; a rejected delivery is moved away, and one sent again is examined again."""
    files = warehouse_files.c
    newest = await session.scalar(
        select(func.max(files.id)).where(files.path == delivery.path, files.status == "imported")
    )
    same = select(files.id).where(files.path == delivery.path, files.content_hash == delivery.content_hash)
    if delivery.snapshot:
        same = same.where(files.id >= (newest or 0))
    elif newest is None:
        return False
    else:
        same = same.where(files.id == newest)
    return (await session.execute(same.limit(1))).first() is not None


async def _import(
    runtime: ServiceRuntime, delivery: Delivery, workdir: Path, started_at: datetime, correlation_id: str
) -> Outcome:
    async with runtime.db.transaction() as session:
        # Another inventory process importing the same file waits here, then finds it in the ledger. (Not
        # the watcher's lock, which its own process holds: only the ledger decides what was recorded.)
        await runtime.db.lock_for_transaction(session, f"skuflow-warehouse-import:{delivery.path}")
        if await _seen_before(session, delivery):
            raise _AlreadyRecorded
        staging = Staging(runtime.db, session)
        await staging.create()
        lines, bad_lines = await _stage(staging, delivery, workdir, started_at)
        duplicates = 0
        with (workdir / "duplicates.txt").open("w", encoding="utf-8") as report:
            async for bad in staging.duplicates():
                report.write(f"{bad}\n")
                duplicates += 1
        if bad_lines or duplicates:
            await asyncio.to_thread(_merge_reports, workdir)
            raise _Rejected(lines, bad_lines + duplicates)
        applied = await staging.apply(started_at)
        async for names in staging.changed_skus():
            await announce_changes(runtime, session, names)
        await staging.drop()
        outcome = Outcome("imported", lines, applied.accepted, applied.stale, changed_skus=applied.changed)
        await _write_ledger(session, delivery, outcome, correlation_id, started_at)
    return outcome


async def _stage(staging: Staging, delivery: Delivery, workdir: Path, now: datetime) -> tuple[int, int]:
    """Read and check the file in a thread of its own, one batch ahead of staging the previous one."""
    batches: Generator[Batch, None, None] = read_batches(delivery.local, now)
    lines = bad_lines = reported = 0
    loop = asyncio.get_running_loop()
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feed-reader")
    try:
        upcoming = loop.run_in_executor(reader, next, batches, None)
        with (workdir / "bad_lines.txt").open("w", encoding="utf-8") as report:
            while (batch := await upcoming) is not None:
                upcoming = loop.run_in_executor(reader, next, batches, None)
                for bad in batch.bad:
                    report.write(f"{bad}\n")
                bad_lines += len(batch.bad)
                lines += len(batch.rows) + len(batch.bad)
                await staging.add(batch.rows)  # after a bad line, still staged: duplicates are reported too
                if lines - reported >= PROGRESS_EVERY:
                    reported = lines
                    log.info("%s: %d lines read", delivery.path, lines)
    finally:
        # On an error or a cancellation the thread may be reading a batch: let it finish (a few
        # milliseconds) before the file is closed under it.
        reader.shutdown(wait=True)
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
