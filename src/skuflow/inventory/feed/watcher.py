"""The watcher of the warehouse's FTP server (CONTRACT section 4), running inside the inventory service.

Every `SKUFLOW_WAREHOUSE_FTP_POLL_SECONDS` it lists the folder, and takes a file once its size and
modification time are the same as at the previous poll (a file still being written changes between two
polls). It downloads the file to a local copy, hashing it, and imports it (`importer`); then it moves it:
to `processed/`, or to `rejected/` beside `<name>.errors.txt`. The move comes after the commit: a crash in
between leaves the file in place, and the ledger recognises it next time, so it is moved, not imported
again. In snapshot mode (the path is one `.csv` file) nothing is moved: a new version is imported when its
content differs from the last version imported; the errors report of a rejected version goes to the
folder's `rejected/`.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from skuflow.inventory.feed.importer import Delivery, Outcome, import_delivery
from skuflow.platform.ftp import FtpConnection, FtpError, FtpLocation, RemoteFile, connect
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.inventory.feed")

MAX_BACKOFF = 60.0  # seconds between attempts while the server is in trouble, at most
SNAPSHOT_RECHECK = 60.0  # seconds after which an unchanged-looking snapshot is compared by content again


class FeedWatcher:
    def __init__(self, runtime: ServiceRuntime, location: FtpLocation, poll_seconds: float) -> None:
        self.runtime = runtime
        self.location = location
        self.poll_seconds = poll_seconds
        self.polls = 0  # completed polls (tests wait on it)
        self.problem: str | None = None
        self.last_poll_at: datetime | None = None
        self.last_file: dict[str, Any] | None = None
        self.counts = {"imported": 0, "rejected": 0, "unchanged": 0}
        self._previous: dict[str, tuple[int, str]] = {}  # name -> (size, modified) at the previous poll
        # Snapshot: the size and time of the version last handled, and when it was (monotonic seconds).
        self._handled: dict[str, tuple[tuple[int, str], float]] = {}
        self._task: asyncio.Task[None] | None = None
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
        self._task = asyncio.create_task(self._run(), name="warehouse feed")

    async def stop(self) -> None:
        """Stop at once: an import in progress is rolled back, and done again, whole, at the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def report(self) -> dict[str, Any]:
        """The watcher's state, for /readyz's body."""
        return {
            "url": self.location.redacted(),
            "mode": "snapshot" if self.location.is_snapshot else "folder",
            "status": "trouble" if self.problem else "ok",
            "problem": self.problem,
            "polls": self.polls,
            "last_poll_at": self.last_poll_at.isoformat() if self.last_poll_at else None,
            "files": dict(self.counts),
            "last_file": self.last_file,
        }

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self.poll()
            except FtpError as error:
                failures += 1
                self._trouble(str(error), failures)
            except Exception as error:  # the database, most likely: the file stays for the next attempt
                failures += 1
                log.exception("warehouse feed: a poll failed")
                self._trouble(f"a poll failed: {error!r}", failures)
            else:
                if self.problem is not None:
                    log.info("warehouse feed: %s works again", self.location.redacted())
                self.problem = None
                failures = 0
            delay = min(MAX_BACKOFF, self.poll_seconds * 2 ** max(0, failures - 1)) if failures else self.poll_seconds
            await asyncio.sleep(delay)

    def _trouble(self, problem: str, failures: int) -> None:
        self.problem = problem
        delay = min(MAX_BACKOFF, self.poll_seconds * 2 ** (failures - 1))
        log.warning("warehouse feed: %s; trying again in %.1f s", problem, delay)

    async def poll(self) -> None:
        """One look at the server: take each file that stood still since the previous look."""
        async with connect(self.location) as ftp:
            listing = await ftp.list_files(self.location.folder)
            # An empty file is an upload that has not started writing yet: it waits, like a growing one.
            current = {
                file.name: (file.size, file.modified) for file in listing if self._wanted(file.name) and file.size
            }
            steady = [
                RemoteFile(name, *signature)
                for name, signature in sorted(current.items())
                if self._previous.get(name) == signature and not self._handled_already(name, signature)
            ]
            self._previous = current
            for file in steady:
                await self._take(ftp, file)
        self.polls += 1
        self.last_poll_at = datetime.now(UTC)

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
        async with self.runtime.db.exclusive(f"skuflow-warehouse-file:{path}") as mine:
            if not mine:
                log.info("%s: another inventory process is taking it", path)
                return
            with tempfile.TemporaryDirectory(prefix="skuflow-feed-") as scratch:
                workdir = Path(scratch)
                local = workdir / "content.csv"
                content_hash = await ftp.download(path, local)
                size = local.stat().st_size
                if size != file.size:
                    log.info("%s changed while it was read (%d bytes, then %d); waiting", path, file.size, size)
                    self._previous.pop(file.name, None)
                    return
                delivery = Delivery(path, local, content_hash, size, snapshot=self.location.is_snapshot)
                outcome = await import_delivery(self.runtime, delivery, workdir)
                self._count(path, outcome)
                await self._file_away(ftp, file.name, outcome)
            if self.location.is_snapshot:
                self._handled[file.name] = ((file.size, file.modified), time.monotonic())

    def _count(self, path: str, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        self._files.labels(self.runtime.name, outcome.status).inc()
        if outcome.status == "imported":
            self._lines.labels(self.runtime.name).inc(outcome.lines)
        if outcome.status != "unchanged":
            self.last_file = {"path": path, "at": datetime.now(UTC).isoformat(), **outcome.as_dict()}

    async def _file_away(self, ftp: FtpConnection, name: str, outcome: Outcome) -> None:
        """Move a delivery where it belongs now that its outcome is committed; leave a snapshot in place."""
        folder = self.location.folder
        path = posixpath.join(folder, name)
        if outcome.status == "rejected":
            assert outcome.errors_report is not None
            rejected = posixpath.join(folder, "rejected")
            await ftp.ensure_folder(rejected)
            await ftp.upload(outcome.errors_report, posixpath.join(rejected, f"{name}.errors.txt"))
            if not self.location.is_snapshot:
                await _move(ftp, path, posixpath.join(rejected, name))
            log.warning("%s rejected: %d bad lines, see %s/%s.errors.txt", path, outcome.bad_lines, rejected, name)
        elif not self.location.is_snapshot:
            processed = posixpath.join(folder, "processed")
            await ftp.ensure_folder(processed)
            await _move(ftp, path, posixpath.join(processed, name))


async def _move(ftp: FtpConnection, source: str, target: str) -> None:
    """Rename; if the server will not replace a file of that name, keep both (the new one time-stamped)."""
    try:
        await ftp.rename(source, target)
    except FtpError:
        stem, extension = posixpath.splitext(target)
        await ftp.rename(source, f"{stem}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}{extension}")
