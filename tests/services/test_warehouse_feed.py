"""The warehouse feed over FTP (CONTRACT section 4), against a real FTP server (pyftpdlib) on a free port,
with inventory running on the test's stack and polling it every few tenths of a second."""

from __future__ import annotations

import asyncio
import ftplib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import func, select

from skuflow.embedded.ftp import FtpServer
from skuflow.inventory.db import warehouse_files
from skuflow.inventory.feed import watcher as watcher_module
from skuflow.messaging import Broker, Envelope, Queue, Topology, create_broker
from skuflow.messaging.routes import SKU_EVENTS
from skuflow.platform import telemetry
from skuflow.platform.ftp import FtpFileTooLarge, FtpLocation, connect
from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.settings import Settings
from skuflow.warehouse import WarehouseError, upload
from tests.conftest import ADMIN_SECRET, TEST_OPTIONS, Stack
from tests.support.feed_files import check_report, feed_files
from tests.support.servers import RunningServer, free_socket, serve, url_of
from tests.support.waiting import wait_until

POLL = 0.1
FUZZ_EXAMPLES = int(os.environ.get("SKUFLOW_PROPERTY_EXAMPLES", "5"))
_fuzz_examples = itertools.count()
HEADER = "warehouse_id,sku,on_hand\n"


@dataclass
class Feed:
    ftp: FtpServer
    location: FtpLocation  # what inventory watches
    settings: Settings
    inventory: RunningServer
    http: aiohttp.ClientSession
    observer: Broker
    scratch: Path
    users: RunningServer  # it checks the admin token that /readyz's details need
    others: list[RunningServer] = field(default_factory=list)  # more inventory processes, as it were
    _admin_token: str | None = None

    async def another_inventory(self) -> RunningServer:
        """One more inventory on the same database, watching the same server."""
        from skuflow.inventory.service import build_app

        other = await serve(build_app(self.settings))
        self.others.append(other)
        return other

    async def restart_inventory(self) -> None:
        from skuflow.inventory.service import build_app

        await self.inventory.stop()
        self.inventory = await serve(build_app(self.settings))

    @property
    def runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.inventory.app.state.runtime
        return runtime

    @property
    def outbox(self) -> Path:
        return self.ftp.root / "outbox"

    async def upload(self, name: str, content: str) -> None:
        """As the warehouse does it (`skuflow warehouse upload`): a temporary name, then a rename."""
        local = self.scratch / name
        local.write_text(content)
        await upload(self.location, local)

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        """/readyz as the admin client sees it: with the details (the watcher's report)."""
        if self._admin_token is None:  # asked once: the token endpoint is rate limited
            form = {"grant_type": "client_credentials", "client_id": "admin", "client_secret": ADMIN_SECRET}
            async with self.http.post(f"{self.users.url}/v1/auth/token", data=form) as response:
                assert response.status == 200, await response.text()
                self._admin_token = str((await response.json())["access_token"])
        headers = {"Authorization": f"Bearer {self._admin_token}"}
        async with self.http.get(f"{self.inventory.url}/readyz", headers=headers) as response:
            return response.status, await response.json()

    async def watcher(self) -> dict[str, Any]:
        status, body = await self.readyz()
        assert status == 200, body  # FTP trouble never makes inventory unready (CONTRACT section 7)
        report: dict[str, Any] = body["details"]["warehouse_ftp"]
        assert body["checks"]["warehouse_ftp"] == ("ok" if report["status"] == "ok" else "degraded"), body
        return report

    async def wait_polls(self, count: int) -> None:
        """Until the watcher has looked at the server `count` more times."""
        target = (await self.watcher())["polls"] + count
        await wait_until(lambda: self._polled(target), what=f"{count} polls")

    async def _polled(self, target: int) -> bool:
        return int((await self.watcher())["polls"]) >= target

    async def availability(self, sku: str) -> dict[str, Any] | None:
        async with self.http.get(f"{self.inventory.url}/v1/skus/{sku}/availability") as response:
            return await response.json() if response.status == 200 else None

    async def ledger(self) -> list[Any]:
        async with self.runtime.db.reading() as session:
            return list((await session.execute(select(warehouse_files).order_by(warehouse_files.c.id))).all())

    async def count(self, table: Any) -> int:
        async with self.runtime.db.reading() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)

    async def published(self) -> list[Envelope]:
        outbox_ = self.runtime.outbox
        assert outbox_ is not None
        await wait_until(lambda: _is_zero(outbox_.pending()), what="the outbox relayed")
        return await self.observer.take("test.observer.sku_processed", 100_000)


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0


FeedFactory = Callable[..., Awaitable[Feed]]


@pytest.fixture
async def make_feed(stack: Stack, tmp_path: Path) -> AsyncIterator[FeedFactory]:
    """Start an FTP server and inventory watching `path` on it (as `user`/`password`, the server's own by
    default); an observer queue sees every event."""
    from skuflow.inventory.service import build_app
    from skuflow.users.service import build_app as users_app

    started: list[Feed] = []

    async def start(
        path: str = "/outbox",
        password: str = "secret-ftp",
        poll: float = POLL,
        max_file_bytes: int = 1024**3,
        max_backlog: int = 10_000,
    ) -> Feed:
        ftp = FtpServer(tmp_path / "ftp", "warehouse", "secret-ftp")
        ftp.start()
        location = FtpLocation(ftp.host, ftp.port, "warehouse", password, path)
        users_socket = free_socket()
        settings = stack.settings(
            warehouse_ftp_url=location.url(),
            warehouse_ftp_poll_seconds=poll,
            warehouse_max_file_bytes=max_file_bytes,
            max_backlog=max_backlog,
            users_url=url_of(users_socket),
        )
        users = await serve(users_app(settings), users_socket)
        observer = create_broker(stack.broker_url, "test-observer", TEST_OPTIONS)
        await observer.connect()
        await observer.declare(Topology((SKU_EVENTS,), (Queue("test.observer.sku_processed", SKU_EVENTS),)))
        inventory = await serve(build_app(settings))
        scratch = tmp_path / "warehouse"
        scratch.mkdir(exist_ok=True)
        feed = Feed(ftp, location, settings, inventory, aiohttp.ClientSession(), observer, scratch, users)
        started.append(feed)
        return feed

    yield start
    for feed in started:
        await feed.http.close()
        for server in [feed.inventory, *feed.others, feed.users]:
            await server.stop()
        await feed.observer.close()
        feed.ftp.stop()


@pytest.fixture
async def feed(make_feed: FeedFactory) -> Feed:
    return await make_feed()


async def test_a_delivery_is_recorded_whole_announced_once_per_sku_and_moved_to_processed(feed: Feed):
    await feed.upload("stock.csv", HEADER + "WH-1,SKU-A,5\nWH-2,SKU-A,3\nWH-1,SKU-B,0\n")

    await wait_until(lambda: (feed.outbox / "processed" / "stock.csv").exists(), what="stock.csv processed")
    assert not (feed.outbox / "stock.csv").exists()
    sku_a, sku_b = await feed.availability("SKU-A"), await feed.availability("SKU-B")
    assert sku_a is not None
    assert (sku_a["on_hand"], sku_a["revision"]) == (8, 1)
    assert sku_b is not None
    assert (sku_b["on_hand"], sku_b["revision"]) == (0, 1)
    [entry] = await feed.ledger()
    assert (entry.path, entry.status, entry.lines, entry.accepted, entry.changed_skus) == (
        "/outbox/stock.csv",
        "imported",
        3,
        3,
        2,
    )
    events = await feed.published()
    assert sorted(event.json()["sku"] for event in events) == ["SKU-A", "SKU-B"]
    assert {event.correlation_id for event in events} == {entry.correlation_id}
    watcher = await feed.watcher()
    assert watcher["status"] == "ok"
    assert watcher["files"]["imported"] == 1
    assert watcher["last_file"]["path"] == "/outbox/stock.csv"


async def test_a_file_with_bad_lines_records_nothing_and_its_report_names_each_bad_line(feed: Feed):
    await feed.upload("first.csv", "warehouse_id,sku,on_hand,as_of\nWH-1,SKU-S,7,2026-11-01T00:00:00Z\n")
    await wait_until(lambda: (feed.outbox / "processed" / "first.csv").exists(), what="first.csv processed")
    await feed.published()

    await feed.upload(
        "mixed.csv",
        "warehouse_id,sku,on_hand,as_of\n"
        "WH-1,SKU-A,5,2026-11-01T00:00:00Z\n"  # 2: good
        "WH-1,bad sku,5,2026-11-01T00:00:00Z\n"  # 3
        "WH-1,SKU-B,-1,2026-11-01T00:00:00Z\n"  # 4
        "WH-1,SKU-C,1,3026-01-01T00:00:00Z\n"  # 5: in the future
        "WH-1,SKU-D,1\n"  # 6: a field short
        "WH-1,SKU-A,6,2026-11-02T00:00:00Z\n"  # 7: the warehouse and SKU of line 2 again
        "WH-1,SKU-S,1,2026-10-01T00:00:00Z\n",  # 8: stale, which is not a bad line
    )

    report = feed.outbox / "rejected" / "mixed.csv.errors.txt"
    await wait_until(lambda: (feed.outbox / "rejected" / "mixed.csv").exists(), what="mixed.csv rejected")
    lines = report.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert "sku 'bad sku' is not an identifier" in lines[0]
    assert "on_hand '-1'" in lines[1]
    assert "in the future" in lines[2]
    assert "expected 4 fields, found 3" in lines[3]
    assert "reports SKU-A twice (lines 2 and 7)" in lines[4]
    assert await feed.availability("SKU-A") is None  # the good line was not recorded either
    stale = await feed.availability("SKU-S")
    assert stale is not None
    assert (stale["on_hand"], stale["revision"]) == (7, 1)
    assert await feed.published() == []
    assert [(entry.status, entry.bad_lines) for entry in await feed.ledger()] == [("imported", 0), ("rejected", 5)]


async def test_a_file_still_being_written_is_not_taken_until_it_stands_still(make_feed: FeedFactory):
    # A poll a second, a piece every 50 ms for about 4 s: only a writer stalled for a whole second (never
    # seen) would look finished.
    feed = await make_feed(poll=1.0)
    content = (HEADER + "".join(f"WH-1,SKU-{n:05d},{n}\n" for n in range(40_000))).encode()
    # The server writes to its disk through an 8 KiB buffer: pieces of 9 KiB change the size every time.
    pieces = [content[start : start + 9216] for start in range(0, len(content), 9216)]  # cut mid-line
    control = ftplib.FTP(timeout=10)
    await asyncio.to_thread(control.connect, feed.ftp.host, feed.ftp.port)
    await asyncio.to_thread(control.login, "warehouse", "secret-ftp")
    await asyncio.to_thread(control.voidcmd, "TYPE I")
    data = await asyncio.to_thread(control.transfercmd, "STOR /outbox/slow.csv")
    polls_before = (await feed.watcher())["polls"]

    def write_slowly() -> None:  # a piece every 50 ms: the size changes several times between two polls
        for piece in pieces:
            data.sendall(piece)
            time.sleep(0.05)

    try:
        await asyncio.to_thread(write_slowly)
        assert (await feed.watcher())["polls"] - polls_before >= 3, "the watcher looked while it was written"
        assert await feed.ledger() == []
        assert (feed.outbox / "slow.csv").exists()
    finally:
        data.close()
    await asyncio.to_thread(control.voidresp)
    await asyncio.to_thread(control.quit)

    await wait_until(lambda: (feed.outbox / "processed" / "slow.csv").exists(), what="slow.csv processed")
    [entry] = await feed.ledger()
    assert (entry.status, entry.lines, entry.changed_skus) == ("imported", 40_000, 40_000)


async def test_a_snapshot_is_imported_at_each_new_content_and_never_moved(make_feed: FeedFactory):
    feed = await make_feed("/outbox/stock.csv")
    versions = [HEADER + "WH-1,SKU-A,1\n", HEADER + "WH-1,SKU-A,22\n", HEADER + "WH-1,SKU-A,1\n"]
    for imports, version in enumerate(versions, start=1):
        await feed.upload("stock.csv", version)
        await wait_until(lambda n=imports: _imports(feed, n), what=f"import number {imports}")
    await feed.wait_polls(3)  # the same content again and again: nothing more

    assert [entry.status for entry in await feed.ledger()] == ["imported"] * 3  # A, B, A: three imports
    assert (feed.outbox / "stock.csv").read_text() == versions[-1]
    assert not (feed.outbox / "processed").exists()
    sku = await feed.availability("SKU-A")
    assert sku is not None
    assert (sku["on_hand"], sku["revision"]) == (1, 3)
    assert len(await feed.published()) == 3

    # The same content under a new modification time: downloaded, compared, not imported.
    snapshot = feed.outbox / "stock.csv"
    os.utime(snapshot, (snapshot.stat().st_atime, snapshot.stat().st_mtime - 3600))
    await wait_until(lambda: _watcher_is(feed, last_poll_after=snapshot.stat().st_mtime), what="a look at it")
    await feed.wait_polls(3)
    # A version with a bad line is rejected (reported, not moved); then the last imported one is no news.
    await feed.upload("stock.csv", HEADER + "WH-1,SKU-A,many\n")
    await wait_until(lambda: (feed.outbox / "rejected" / "stock.csv.errors.txt").exists(), what="the report")
    await feed.upload("stock.csv", versions[-1])
    await feed.wait_polls(3)
    assert [entry.status for entry in await feed.ledger()] == ["imported"] * 3 + ["rejected"]
    assert snapshot.exists()
    assert await feed.published() == []


async def _watcher_is(feed: Feed, last_poll_after: float) -> bool:
    last = (await feed.watcher())["last_poll_at"]
    return last is not None and datetime.fromisoformat(last).timestamp() > last_poll_after


async def _imports(feed: Feed, count: int) -> bool:
    return len([entry for entry in await feed.ledger() if entry.status == "imported"]) >= count


async def test_a_file_whose_move_failed_after_the_commit_is_moved_later_not_imported_again(feed: Feed):
    everything = feed.ftp.authorizer.get_perms("warehouse")
    feed.ftp.authorizer.override_perm("warehouse", str(feed.outbox), everything.replace("f", ""), recursive=True)
    _drop_in(feed.outbox, "late.csv", HEADER + "WH-1,SKU-A,5\nWH-1,SKU-B,6\n")

    await wait_until(lambda: _imports(feed, 1), what="late.csv imported")
    await wait_until(lambda: _in_trouble(feed, "rename"), what="the move to fail")
    assert (feed.outbox / "late.csv").exists()
    feed.ftp.authorizer.override_perm("warehouse", str(feed.outbox), everything, recursive=True)

    await wait_until(lambda: (feed.outbox / "processed" / "late.csv").exists(), timeout=20, what="late.csv moved")
    assert [entry.status for entry in await feed.ledger()] == ["imported"]
    watcher = await feed.watcher()
    # Each poll while the move failed found the file already imported ("unchanged"); how many polls that
    # was depends on how fast the test put the permission back.
    assert (watcher["files"]["imported"], watcher["files"]["rejected"], watcher["status"]) == (1, 0, "ok")
    assert watcher["files"]["unchanged"] >= 1
    assert sorted(event.json()["sku"] for event in await feed.published()) == ["SKU-A", "SKU-B"]


def _drop_in(folder: Path, name: str, content: str | bytes) -> None:
    """A file appearing whole in the server's folder, as a rename on its disk makes it."""
    partial = folder.parent / f"{name}.partial"
    partial.write_bytes(content if isinstance(content, bytes) else content.encode())
    partial.replace(folder / name)


async def _in_trouble(feed: Feed, words: str) -> bool:
    watcher = await feed.watcher()
    return watcher["status"] == "trouble" and words in (watcher["problem"] or "")


async def test_while_the_ftp_server_is_down_inventory_stays_ready_says_why_and_resumes(feed: Feed):
    feed.ftp.stop()
    await wait_until(lambda: _in_trouble(feed, "connection refused"), what="the watcher to notice")
    status, body = await feed.readyz()
    assert status == 200
    assert body["status"] == "ready"

    feed.ftp.start(port=feed.location.port)
    _drop_in(feed.outbox, "after.csv", HEADER + "WH-1,SKU-A,5\n")
    await wait_until(lambda: (feed.outbox / "processed" / "after.csv").exists(), timeout=20, what="after.csv")
    assert (await feed.watcher())["status"] == "ok"


async def test_a_refused_login_is_reported_until_the_password_works(make_feed: FeedFactory):
    feed = await make_feed(password="not-the-password")
    await wait_until(lambda: _in_trouble(feed, "login refused for user 'warehouse'"), timeout=20, what="the refusal")
    assert "not-the-password" not in str(await feed.readyz())

    feed.ftp.authorizer.remove_user("warehouse")  # the server's admin sets the password inventory uses
    feed.ftp.authorizer.add_user("warehouse", "not-the-password", str(feed.ftp.root), perm="elradfmwMT")
    await wait_until(lambda: _status_is(feed, "ok"), timeout=30, what="the login to work")


async def test_a_missing_folder_is_reported_until_it_exists(make_feed: FeedFactory):
    feed = await make_feed("/deliveries")
    await wait_until(lambda: _in_trouble(feed, "folder /deliveries does not exist"), what="the missing folder")

    (feed.ftp.root / "deliveries").mkdir()
    await wait_until(lambda: _status_is(feed, "ok"), timeout=20, what="the folder to be found")


async def _status_is(feed: Feed, status: str) -> bool:
    return (await feed.watcher())["status"] == status


async def test_several_inventory_processes_take_each_file_once(feed: Feed):
    await feed.another_inventory()
    for n in range(6):
        _drop_in(feed.outbox, f"d{n}.csv", HEADER + f"WH-1,SKU-{n},{n + 1}\nWH-2,SKU-{n},1\n")

    for n in range(6):
        await wait_until(lambda n=n: (feed.outbox / "processed" / f"d{n}.csv").exists(), what=f"d{n}.csv")
    entries = await feed.ledger()
    assert sorted(entry.path for entry in entries) == [f"/outbox/d{n}.csv" for n in range(6)]
    assert {entry.status for entry in entries} == {"imported"}
    assert sorted(event.json()["sku"] for event in await feed.published()) == [f"SKU-{n}" for n in range(6)]


async def test_while_the_backlog_is_at_its_bound_files_wait_on_the_server_and_are_all_imported_after(
    make_feed: FeedFactory, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="skuflow.inventory.feed")
    feed = await make_feed(max_backlog=2)
    relay = feed.runtime.relay
    assert relay is not None
    await relay.stop()  # what is imported stays in the outbox, as behind a broker outage
    # A file is recorded whole: this one passes the bound by its own size.
    await feed.upload("first.csv", HEADER + "WH-1,SKU-A,1\nWH-1,SKU-B,2\nWH-1,SKU-C,3\n")
    await wait_until(lambda: (feed.outbox / "processed" / "first.csv").exists(), what="first.csv processed")
    await feed.upload("second.csv", HEADER + "WH-1,SKU-D,4\n")
    await feed.upload("third.csv", HEADER + "WH-2,SKU-A,5\n")

    await feed.wait_polls(5)
    assert (feed.outbox / "second.csv").exists()
    assert (feed.outbox / "third.csv").exists()
    assert await feed.availability("SKU-D") is None
    watcher = await feed.watcher()
    assert watcher["status"] == "ok"  # waiting is no trouble: the files are safe on the server
    assert watcher["waiting"] == (
        "the backlog is at its bound (SKUFLOW_MAX_BACKLOG=2): 3 outbox messages wait to be published"
    )
    waits = [record for record in caplog.records if "the files wait on the server" in record.getMessage()]
    assert len(waits) == 1, "logged once, not at every poll"

    relay.start()
    for name in ("second.csv", "third.csv"):
        await wait_until(lambda name=name: (feed.outbox / "processed" / name).exists(), what=f"{name} processed")
    assert [(entry.path, entry.status) for entry in await feed.ledger()] == [
        ("/outbox/first.csv", "imported"),
        ("/outbox/second.csv", "imported"),
        ("/outbox/third.csv", "imported"),
    ]
    sku_a, sku_d = await feed.availability("SKU-A"), await feed.availability("SKU-D")
    assert sku_a is not None
    assert sku_d is not None
    assert (sku_a["on_hand"], sku_a["revision"], sku_d["on_hand"]) == (6, 2, 4)
    events = await feed.published()
    assert sorted(event.json()["sku"] for event in events) == ["SKU-A", "SKU-A", "SKU-B", "SKU-C", "SKU-D"]
    assert (await feed.watcher())["waiting"] is None


async def test_stopping_mid_import_records_nothing_and_the_next_start_imports_the_file_whole(feed: Feed):
    lines = 150_000
    _drop_in(feed.outbox, "big.csv", HEADER + "".join(f"WH-1,B-{n},{n % 5}\n" for n in range(lines)))
    await wait_until(lambda: _importing(feed, "/outbox/big.csv"), timeout=20, what="the import to begin")

    await feed.inventory.stop()  # as SIGTERM does: the import is cancelled and rolled back
    assert await feed.ledger() == []
    assert (feed.outbox / "big.csv").exists()

    await feed.restart_inventory()
    await wait_until(lambda: (feed.outbox / "processed" / "big.csv").exists(), timeout=60, what="big.csv")
    [entry] = await feed.ledger()
    assert (entry.status, entry.lines, entry.changed_skus) == ("imported", lines, lines)


async def _importing(feed: Feed, path: str) -> bool:
    return (await feed.watcher())["importing"] == path


async def test_a_delivery_does_not_replace_one_still_waiting(make_feed: FeedFactory):
    feed = await make_feed(poll=30)  # the watcher looks rarely: the first file is still there
    await feed.upload("stock.csv", HEADER + "WH-1,SKU-A,1\n")
    with pytest.raises(WarehouseError, match="still waiting to be taken"):
        await feed.upload("stock.csv", HEADER + "WH-1,SKU-A,2\n")
    assert (feed.outbox / "stock.csv").read_text() == HEADER + "WH-1,SKU-A,1\n"


async def test_totals_may_pass_two_to_the_31st(feed: Feed):
    top = 1_000_000_000  # the most one warehouse may report
    _drop_in(feed.outbox, "huge.csv", HEADER + "".join(f"WH-{n},SKU-H,{top}\n" for n in range(3)))
    await wait_until(lambda: (feed.outbox / "processed" / "huge.csv").exists(), what="huge.csv")
    sku = await feed.availability("SKU-H")
    assert sku is not None
    assert sku["on_hand"] == 3 * top


async def test_the_same_name_sent_again_is_a_new_delivery_and_earlier_files_are_kept(feed: Feed):
    versions = [HEADER + "WH-1,SKU-A,1\n", HEADER + "WH-1,SKU-A,2\n", HEADER + "WH-1,SKU-A,1\n"]
    for imports, version in enumerate(versions, start=1):
        _drop_in(feed.outbox, "stock.csv", version)
        await wait_until(lambda n=imports: _imports(feed, n), what=f"import number {imports}")
        await wait_until(lambda: not (feed.outbox / "stock.csv").exists(), what="stock.csv moved")

    sku = await feed.availability("SKU-A")
    assert sku is not None
    assert (sku["on_hand"], sku["revision"]) == (1, 3)  # A, B, then A again: three imports
    kept = sorted(path.name for path in (feed.outbox / "processed").iterdir())
    assert len(kept) == 3
    assert kept[-1] == "stock.csv"
    assert all(name.startswith("stock.2") and name.endswith(".csv") for name in kept[:-1])


async def test_an_empty_file_is_rejected_not_left_waiting(feed: Feed):
    _drop_in(feed.outbox, "empty.csv", "")
    report = feed.outbox / "rejected" / "empty.csv.errors.txt"
    await wait_until(report.exists, what="empty.csv rejected")
    assert report.read_text().startswith("line 1: the file is empty")


def downloads(caplog: pytest.LogCaptureFixture, name: str) -> int:
    """How many times the FTP server sent (a part of) the file: it logs each RETR."""
    return sum(1 for record in caplog.records if record.name == "pyftpdlib" and f"RETR {name}" in record.getMessage())


async def test_a_delivery_over_the_size_limit_is_rejected_unread(
    make_feed: FeedFactory, caplog: pytest.LogCaptureFixture
):
    """Issue 14, defect 3: the size comes from the listing; a file over the limit is never downloaded."""
    caplog.set_level(logging.INFO, logger="pyftpdlib")
    feed = await make_feed(max_file_bytes=1000)
    big = HEADER + "".join(f"WH-1,SKU-{n:03d},1\n" for n in range(80))  # 1,224 bytes
    _drop_in(feed.outbox, "big.csv", big)
    _drop_in(feed.outbox, "small.csv", HEADER + "WH-1,SKU-S,1\n")

    report = feed.outbox / "rejected" / "big.csv.errors.txt"
    await wait_until(lambda: (feed.outbox / "rejected" / "big.csv").exists(), what="big.csv rejected")
    await wait_until(lambda: (feed.outbox / "processed" / "small.csv").exists(), what="small.csv imported")
    limit = "the 1,000-byte limit of a file (SKUFLOW_WAREHOUSE_MAX_FILE_BYTES)"
    assert report.read_text() == f"line 1: {len(big):,} bytes, over {limit}; not read\n"
    assert downloads(caplog, str(feed.outbox / "big.csv")) == 0
    assert downloads(caplog, str(feed.outbox / "small.csv")) == 1
    assert sorted((entry.path, entry.status) for entry in await feed.ledger()) == [
        ("/outbox/big.csv", "rejected"),
        ("/outbox/small.csv", "imported"),
    ]
    assert await feed.availability("SKU-000") is None
    assert (await feed.watcher())["status"] == "ok"


async def test_a_snapshot_over_the_size_limit_is_reported_once_and_not_downloaded_again(
    make_feed: FeedFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    """A snapshot is never moved: its over-limit version is remembered by size and time, and neither
    downloaded nor reported again, even when the watcher looks at it anew (here at every poll), until it
    changes."""
    monkeypatch.setattr(watcher_module, "SNAPSHOT_RECHECK", 0.0)
    caplog.set_level(logging.INFO, logger="pyftpdlib")
    feed = await make_feed("/outbox/stock.csv", max_file_bytes=1000)
    await feed.upload("stock.csv", HEADER + "WH-1,SKU-A,1\n")
    await wait_until(lambda: _imports(feed, 1), what="the first version imported")
    await feed.upload("stock.csv", HEADER + "".join(f"WH-1,SKU-{n:03d},1\n" for n in range(80)))
    report = feed.outbox / "rejected" / "stock.csv.errors.txt"
    await wait_until(report.exists, what="the report")
    written = report.stat().st_mtime_ns
    retrieved = downloads(caplog, str(feed.outbox / "stock.csv"))

    await feed.wait_polls(5)
    assert [entry.status for entry in await feed.ledger()] == ["imported", "rejected"]
    assert report.stat().st_mtime_ns == written
    assert downloads(caplog, str(feed.outbox / "stock.csv")) == retrieved
    watcher = await feed.watcher()
    assert (watcher["status"], watcher["files"]["rejected"]) == ("ok", 1)

    await feed.upload("stock.csv", HEADER + "WH-1,SKU-A,2\n")  # it changes: news again
    await wait_until(lambda: _imports(feed, 2), what="the next version imported")
    sku = await feed.availability("SKU-A")
    assert sku is not None
    assert sku["on_hand"] == 2


async def test_a_download_stops_at_the_limit_and_the_connection_goes_on(feed: Feed, tmp_path: Path):
    """While downloading too: a file bigger than its listing said (or grown since) is read no further."""
    # Stopped mid-transfer (the server answers 426), and after the server sent it all (226).
    (feed.outbox / "long.csv").write_bytes(b"x" * (5 * 1024 * 1024))
    (feed.outbox / "little.csv").write_bytes(b"x" * 1001)
    (feed.outbox / "short.csv").write_bytes(b"y" * 10)
    async with connect(feed.location) as ftp:
        for name in ("long.csv", "little.csv"):
            with pytest.raises(FtpFileTooLarge, match="over the 1,000-byte limit: download stopped there"):
                await ftp.download(f"/outbox/{name}", tmp_path / name, max_bytes=1000)
            assert (tmp_path / name).stat().st_size <= 1000
            await ftp.download("/outbox/short.csv", tmp_path / "short.csv", max_bytes=1000)  # its own reply
            assert (tmp_path / "short.csv").read_bytes() == b"y" * 10
        assert {file.name for file in await ftp.list_files("/outbox")} >= {"long.csv", "little.csv", "short.csv"}


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_an_as_of_out_of_range_rejects_the_file_once(feed: Feed, as_of: str):
    """Issue 14, defect 4: the file was neither imported nor rejected, and downloaded again at every poll."""
    _drop_in(feed.outbox, "far.csv", f"warehouse_id,sku,on_hand,as_of\nWH-1,SKU-F,1,{as_of}\n")
    report = feed.outbox / "rejected" / "far.csv.errors.txt"
    await wait_until(report.exists, what="far.csv rejected")
    assert report.read_text().startswith(f"line 2: as_of '{as_of}': as_of must be from 1970-01-01T00:00:00Z")
    assert [(entry.status, entry.bad_lines) for entry in await feed.ledger()] == [("rejected", 1)]
    assert (await feed.watcher())["status"] == "ok"


@pytest.fixture
async def limited_feed(make_feed: FeedFactory) -> Feed:
    return await make_feed(max_file_bytes=60_000)  # a few of the fuzzed files are bigger


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=FUZZ_EXAMPLES <= 20,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(files=st.lists(feed_files(), min_size=1, max_size=8))
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
async def test_fuzzed_files_are_each_imported_or_rejected_once_through_the_watcher(
    limited_feed: Feed, files: list[bytes]
):
    """Fuzzed files (tests/support/feed_files.py) dropped together into the real server's folder, under a
    size limit that some of them pass: each ends in processed/ or in rejected/ beside its report, is in the
    ledger once, and the watcher stays untroubled (no file tried again). The examples share one feed."""
    feed = limited_feed
    example = next(_fuzz_examples)
    names = [f"fuzz-{example}-{n}.csv" for n in range(len(files))]
    for name, content in zip(names, files, strict=True):
        _drop_in(feed.outbox, name, content)

    for name in names:
        await wait_until(lambda name=name: _filed(feed, name), timeout=30, what=f"{name} filed")
    await feed.wait_polls(2)
    entries = [entry for entry in await feed.ledger() if entry.path.startswith(f"/outbox/fuzz-{example}-")]
    assert sorted(entry.path for entry in entries) == sorted(f"/outbox/{name}" for name in names), "each once"
    for entry in entries:
        name = entry.path.rsplit("/", 1)[1]
        if entry.status == "rejected":
            assert (feed.outbox / "rejected" / name).exists()
            report = (feed.outbox / "rejected" / f"{name}.errors.txt").read_bytes().decode("utf-8")
            check_report(report, entry.bad_lines)
        else:
            assert entry.status == "imported"
            assert (feed.outbox / "processed" / name).exists()
    watcher = await feed.watcher()
    assert (watcher["status"], watcher["problem"]) == ("ok", None)


def _filed(feed: Feed, name: str) -> bool:
    return (feed.outbox / "processed" / name).exists() or (feed.outbox / "rejected" / name).exists()


async def test_an_import_is_one_trace_holding_the_publish_of_each_event_it_announces(make_feed: FeedFactory):
    exporter = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))  # before inventory is built: it traces
    try:
        feed = await make_feed()
        await feed.upload("stock.csv", HEADER + "WH-1,SKU-A,5\nWH-1,SKU-B,0\n")
        await wait_until(lambda: (feed.outbox / "processed" / "stock.csv").exists(), what="stock.csv processed")
        await feed.published()  # the outbox relayed every event

        finished = exporter.get_finished_spans()
        [imported] = [span for span in finished if span.name == "import warehouse file"]
        assert imported.attributes is not None
        assert imported.attributes["skuflow.feed.path"] == "/outbox/stock.csv"
        assert imported.attributes["skuflow.feed.outcome"] == "imported"
        assert (imported.attributes["skuflow.feed.lines"], imported.attributes["skuflow.feed.bad_lines"]) == (2, 0)
        assert imported.attributes["skuflow.feed.changed_skus"] == 2
        publishes = [span for span in finished if span.kind is SpanKind.PRODUCER]
        assert len(publishes) == 2
        for publish in publishes:  # through the outbox, in the import's trace
            assert publish.parent is not None
            assert publish.parent.span_id == imported.context.span_id
    finally:
        telemetry.reset()
