"""The watcher of the warehouse's FTP server (CONTRACT section 4), running inside the inventory service.

Every `SKUFLOW_WAREHOUSE_FTP_POLL_SECONDS` it lists the folder, and takes a file once its size and
modification time are the same as at the previous poll (a file still being written changes between two
polls). It downloads the file to a local copy, hashing it, and imports it (`importer`); then it moves it:
to `processed/`, or to `rejected/` beside `<name>.errors.txt`. The move comes after the commit: a crash in
between leaves the file in place, and the ledger recognises it next time, so it is moved, not imported
again. In snapshot mode (the path is one `.csv` file) nothing is moved: a new version is imported when its
content differs from the last version imported; the errors report of a rejected version goes to the
folder's `rejected/`.

A file over `SKUFLOW_WAREHOUSE_MAX_FILE_BYTES` is rejected unread: as its listing says (nothing downloaded),
or as its download finds, which stops at the limit. The ledger keeps such a version by its size and time,
so a snapshot over the limit is reported once, not downloaded again until it changes.

While inventory's backlog is at its bound (`SKUFLOW_MAX_BACKLOG`, `inventory/admission.py`), files wait on
the server: before each file the watcher counts the backlog afresh (the file before may have filled it) and,
at the bound, leaves this and the rest to later polls, saying so once in the log and in `/readyz`. A file is
the unit: it is recorded whole, in one transaction, so it may pass the bound by its own size; pausing inside
it would hold that transaction (and SQLite's one writer) open.

Several inventory processes may watch the same server: a lock in the database lets one of them take a
given file. When the server is down, refuses the login or lacks the folder, the watcher says so in the log
and in `/readyz` (the service stays ready), and tries again with a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from skuflow.inventory.feed.importer import (
    Delivery,
    Outcome,
    import_delivery,
    reject_unread,
    unread_version,
    was_seen,
)
from skuflow.platform.background import Background
from skuflow.platform.backpressure import Backpressure
from skuflow.platform.ftp import FtpConnection, FtpError, FtpFileTooLarge, FtpLocation, RemoteFile, connect
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.inventory.feed")

MAX_BACKOFF = 60.0  # seconds between attempts while the server is in trouble, at most
STOP_TIMEOUT = 10.0  # seconds for an import in progress to roll back on stop
SNAPSHOT_RECHECK = 60.0  # seconds after which an unchanged-looking snapshot is compared by content again


class FeedWatcher:
    def __init__(
        self, runtime: ServiceRuntime, location: FtpLocation, poll_seconds: float, backpressure: Backpressure
    ) -> None:
        self.runtime = runtime
        self.location = location
        self.poll_seconds = poll_seconds
        self.backpressure = backpressure
        self.waiting: str | None = None  # why the files wait on the server (the backlog at its bound), if they do
        self.max_file_bytes = runtime.settings.warehouse_max_file_bytes
        self.polls = 0  # completed polls (tests wait on it)
        self.problem: str | None = None
        self.last_poll_at: datetime | None = None
        self.last_file: dict[str, Any] | None = None
        self.counts = {"imported": 0, "rejected": 0, "unchanged": 0}
        self._previous: dict[str, tuple[int, str]] = {}  # name -> (size, modified) at the previous poll
        # Snapshot: the size and time of the version last handled, and when it was (monotonic seconds).
        self._handled: dict[str, tuple[tuple[int, str], float]] = {}
        self._failed: dict[tuple[str, tuple[int, str]], _Failed] = {}  # (name, version) that failed
        self.importing: str | None = None  # the file being imported now
        self._background = Background("warehouse feed")
        self._files = Counter(
            "skuflow_warehouse_files",
            "Warehouse files the FTP feed handled, by outcome",
            ["service", "status"],
            registry=runtime.metrics.registry,
        )
        self._lines = Counter(
            "skuflow_warehouse_lines",
            "Lines of imported warehouse files",
            ["service"],
            registry=runtime.metrics.registry,
        )

    async def start(self) -> None:
        log.info("watching %s every %.1f s", self.location.redacted(), self.poll_seconds)
        self._background.start(self._run())

    async def stop(self) -> None:
        """Stop now: an import in progress is rolled back, and done again, whole, at the next start."""
        await self._background.stop(STOP_TIMEOUT)

    def report(self) -> dict[str, Any]:
        """The watcher's state, for /readyz's body."""
        return {
            "url": self.location.redacted(),
            "mode": "snapshot" if self.location.is_snapshot else "folder",
            "status": "trouble" if self.problem else "ok",
            "problem": self.problem,
            "polls": self.polls,
            "last_poll_at": self.last_poll_at.isoformat() if self.last_poll_at else None,
            "importing": self.importing,
            "waiting": self.waiting,
            "files": dict(self.counts),
            "last_file": self.last_file,
        }

    async def _run(self) -> None:
        failures = 0  # polls in a row that could not reach or list the server
        while True:
            try:
                await self.poll()
            except FtpError as error:
                failures += 1
                self.problem = str(error)
            except Exception as error:  # the database, most likely
                failures += 1
                log.exception("warehouse feed: a poll failed")
                self.problem = f"a poll failed: {error!r}"
            else:
                if failures:
                    log.info("warehouse feed: %s works again", self.location.redacted())
                failures = 0
            delay = _backoff(self.poll_seconds, failures)
            if failures:
                log.warning("warehouse feed: %s; trying again in %.1f s", self.problem, delay)
            await asyncio.sleep(delay)

    async def poll(self) -> None:
        """One look at the server: take each file that stood still since the previous look. A file that
        fails is tried again later, with a growing delay, and does not hold up the others."""
        async with connect(self.location) as ftp:
            current = await self._listing(ftp)
            steady = [
                RemoteFile(name, *signature)
                for name, signature in sorted(current.items())
                if self._previous.get(name) == signature and not self._handled_already(name, signature)
            ]
            self._previous = current
            problems = []
            for file in steady:
                key = (file.name, (file.size, file.modified))
                failed = self._failed.get(key)
                if failed is not None and time.monotonic() < failed.retry_at:
                    problems.append(failed.problem)
                    continue
                if await self._saturated():
                    break  # this file and the rest stay steady on the server: taken at a later poll
                try:
                    await self._take(ftp, file)
                except FtpError as error:
                    if error.code is None:
                        raise  # the connection itself: the whole poll backs off
                    problems.append(self._failure(key, str(error)))
                except Exception as error:
                    log.exception("warehouse feed: %s failed", file.name)
                    problems.append(self._failure(key, f"{file.name}: {error!r}"))
                else:
                    self._failed.pop(key, None)
        self.problem = "; ".join(problems) or None
        self.polls += 1
        self.last_poll_at = datetime.now(UTC)

    async def _saturated(self) -> bool:
        """Whether inventory's backlog is at its bound, counted now; logged once as the files begin to wait,
        and once as they go on."""
        await self.backpressure.refresh()
        saturated = self.backpressure.saturated()
        if saturated is None:
            if self.waiting is not None:
                log.info("warehouse feed: the backlog is below its bound again; importing")
            self.waiting = None
            return False
        if self.waiting is None:
            log.warning("warehouse feed: %s; the files wait on the server until it drains", saturated)
        self.waiting = str(saturated)
        return True

    async def _listing(self, ftp: FtpConnection) -> dict[str, tuple[int, str]]:
        """The wanted files' (size, modification time)."""
        listing = await ftp.list_files(self.location.folder)
        return {file.name: (file.size, file.modified) for file in listing if self._wanted(file.name)}

    def _failure(self, key: tuple[str, tuple[int, str]], error: str) -> str:
        attempts = self._failed[key].attempts + 1 if key in self._failed else 1
        delay = _backoff(self.poll_seconds, attempts)
        problem = f"{error} (attempt {attempts}; next in {delay:.1f} s)"
        self._failed[key] = _Failed(attempts, time.monotonic() + delay, problem)
        log.warning("warehouse feed: %s", problem)
        return problem

    def _handled_already(self, name: str, signature: tuple[int, str]) -> bool:
        """A snapshot's version was handled if its size and time are unchanged; but as a rewrite within the
        same second (the server's resolution) at the same size would look unchanged, the content is
        downloaded and compared again once a minute."""
        handled = self._handled.get(name)
        return handled is not None and handled[0] == signature and time.monotonic() - handled[1] < SNAPSHOT_RECHECK

    def _wanted(self, name: str) -> bool:
        if self.location.is_snapshot:
            return name == posixpath.basename(self.location.path)
        return name.lower().endswith(".csv") and not name.startswith(".")

    async def _take(self, ftp: FtpConnection, file: RemoteFile) -> None:
        path = posixpath.join(self.location.folder, file.name)
        signature = (file.size, file.modified)
        async with self.runtime.db.exclusive(f"skuflow-warehouse-file:{path}") as mine:
            if not mine:
                log.info("%s: another inventory process is taking it", path)
                return
            with tempfile.TemporaryDirectory(prefix="skuflow-feed-") as scratch:
                outcome = await self._judge(ftp, file, path, Path(scratch))
                if outcome is None:
                    return
                self._count(path, outcome)
                await self._file_away(ftp, file.name, signature, outcome)
            if self.location.is_snapshot:
                self._handled[file.name] = (signature, time.monotonic())

    async def _judge(self, ftp: FtpConnection, file: RemoteFile, path: str, workdir: Path) -> Outcome | None:
        """Download and import the file, or reject it unread; None when it is to be taken later (it is
        gone, or changed while it was read)."""
        signature = (file.size, file.modified)
        limit = f"the {self.max_file_bytes:,}-byte limit of a file (SKUFLOW_WAREHOUSE_MAX_FILE_BYTES)"
        unread = Delivery(
            path, workdir / "unread", unread_version(*signature), file.size, snapshot=self.location.is_snapshot
        )
        if file.size > self.max_file_bytes:
            return await reject_unread(self.runtime, unread, workdir, f"{file.size:,} bytes, over {limit}; not read")
        if self.location.is_snapshot and await was_seen(self.runtime, unread):
            return Outcome("unchanged")  # a version whose download was stopped at the limit before
        local = workdir / "content.csv"
        try:
            content_hash = await ftp.download(path, local, self.max_file_bytes)
        except FtpFileTooLarge:
            if (await self._listing(ftp)).get(file.name) == signature:  # the listing understates its size
                reason = f"over {limit} although listed as {file.size:,} bytes; its download was stopped there"
                return await reject_unread(self.runtime, unread, workdir, reason)
            content_hash = None  # it grew: its next listing tells
        except FtpError as error:
            if error.code == "550":  # gone: another inventory process took it
                log.info("%s is gone (%s)", path, error)
                return None
            raise
        if content_hash is None or (await self._listing(ftp)).get(file.name) != signature:
            log.info("%s changed while it was read; waiting for it to stand still", path)
            self._previous.pop(file.name, None)
            return None
        delivery = Delivery(path, local, content_hash, file.size, snapshot=self.location.is_snapshot)
        self.importing = path
        try:
            return await import_delivery(self.runtime, delivery, workdir)
        finally:
            self.importing = None

    def _count(self, path: str, outcome: Outcome) -> None:
        if outcome.status == "unchanged" and self.location.is_snapshot:
            return  # a snapshot compared again and found the same: routine, not news
        self.counts[outcome.status] += 1
        self._files.labels(self.runtime.name, outcome.status).inc()
        if outcome.status == "imported":
            self._lines.labels(self.runtime.name).inc(outcome.lines)
        if outcome.status != "unchanged":
            self.last_file = {"path": path, "at": datetime.now(UTC).isoformat(), **outcome.as_dict()}

    async def _file_away(self, ftp: FtpConnection, name: str, signature: tuple[int, str], outcome: Outcome) -> None:
        """Move a delivery where it belongs now that its outcome is committed; leave a snapshot in place."""
        folder = self.location.folder
        path = posixpath.join(folder, name)
        if self.location.is_snapshot and outcome.status != "rejected":
            return
        target = posixpath.join(folder, "rejected" if outcome.status == "rejected" else "processed")
        await ftp.ensure_folder(target)
        # An earlier file of the same name is kept: this one gets the time it was filed added to its name.
        kept = name if self.location.is_snapshot else await _free_name(ftp, target, name)
        if outcome.status == "rejected":
            assert outcome.errors_report is not None
            report = posixpath.join(target, f"{kept}.errors.txt")
            # Under a temporary name, then renamed: whoever reads rejected/ never sees half a report.
            await ftp.upload(outcome.errors_report, f"{report}.partial")
            with contextlib.suppress(FtpError):  # an earlier version's report: not every server renames over it
                await ftp.delete(report)
            await ftp.rename(f"{report}.partial", report)
            log.warning("%s rejected: %d bad line(s), see %s", path, outcome.bad_lines, report)
        if self.location.is_snapshot:
            return
        now = (await self._listing(ftp)).get(name)
        if now is None:
            log.info("%s was moved by another inventory process", path)
            return
        if now != signature:  # a new file of the same name came meanwhile: it stays, to be taken in its turn
            log.warning("%s was replaced after it was read; the new one waits for its turn", path)
            return
        await ftp.rename(path, posixpath.join(target, kept))


@dataclass(frozen=True, slots=True)
class _Failed:
    attempts: int
    retry_at: float  # monotonic seconds
    problem: str


def _backoff(poll_seconds: float, failures: int) -> float:
    """The poll interval, doubled for each failure in a row after the first, up to MAX_BACKOFF."""
    return min(MAX_BACKOFF, poll_seconds * 2 ** max(0, failures - 1)) if failures else poll_seconds


async def _free_name(ftp: FtpConnection, folder: str, name: str) -> str:
    """`name`, or if `folder` holds a file of that name already, `name` with the UTC time inserted."""
    if all(file.name != name for file in await ftp.list_files(folder)):
        return name
    stem, extension = posixpath.splitext(name)
    return f"{stem}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}{extension}"
