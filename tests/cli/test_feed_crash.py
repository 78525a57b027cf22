"""A crash in the middle of importing a big warehouse file (`kill -9` of `skuflow serve inventory`), then
a restart: nothing of the file was recorded by the dead process, and the new one records it once, whole.
RabbitMQ and PostgreSQL, as in production; the FTP server is pyftpdlib, in the test's process."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from skuflow.embedded.ftp import FtpServer
from skuflow.inventory.db import outbox, skus, warehouse_files
from tests.cli.test_system_commands import wait_ready
from tests.support.postgres import PostgreSQL

LINES = 200_000  # a progress line at 100,000: killed half-way


class Service:
    """`skuflow serve SERVICE` as a process whose log lines can be waited for."""

    def __init__(self, environment: dict[str, str], *args: str, service: str = "inventory") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "skuflow", "serve", service, *args],
            env=environment,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def terminate(self) -> int:
        """SIGTERM, as a supervisor stops it: answers the exit code (killed, and failing, after 60 s)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"did not stop within 60 s of SIGTERM:\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        return "".join(self.seen) + "".join(self.lines.queue)

    def wait_for_log(self, words: str, within: float = 60) -> str:
        """The next log line with `words` in it (lines before it are read and passed over)."""
        deadline = time.monotonic() + within
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no log line with {words!r} within {within}s") from None
            self.seen.append(line)
            if words in line:
                return line


def pid_in(line: str) -> int:
    """The pid a log line names (`worker 1 started (pid 1234)`)."""
    match = re.search(r"pid (\d+)", json.loads(line)["message"])
    assert match is not None, line
    return int(match.group(1))


async def counts(url: str) -> tuple[int, int, int]:
    """(warehouse files recorded, SKUs, outbox rows) in inventory's database."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            found = [
                await connection.scalar(select(func.count()).select_from(table))
                for table in (warehouse_files, skus, outbox)
            ]
            return int(found[0] or 0), int(found[1] or 0), int(found[2] or 0)
    finally:
        await engine.dispose()


@pytest.mark.amqp
def test_a_crash_mid_import_records_nothing_and_the_restart_records_the_file_once(
    environment: dict[str, str],
    amqp_url: str,
    postgresql: PostgreSQL,
    postgres_databases: dict[str, str],
    tmp_path: Path,
):
    database = postgres_databases["inventory"]
    asyncio.run(postgresql.empty_database(database))
    ftp = FtpServer(tmp_path / "ftp", "warehouse", "secret-ftp")
    ftp.start()
    try:
        content = "warehouse_id,sku,on_hand\n" + "".join(f"WH-1,SKU-{n:06d},{n % 9}\n" for n in range(LINES))
        (ftp.root / "outbox" / "big.csv").write_text(content)
        environment |= {
            "SKUFLOW_BROKER_URL": amqp_url,
            "SKUFLOW_INVENTORY_DATABASE_URL": database,
            "SKUFLOW_WAREHOUSE_FTP_URL": ftp.url(),
            "SKUFLOW_WAREHOUSE_FTP_POLL_SECONDS": "0.2",
            "SKUFLOW_SHUTDOWN_GRACE_SECONDS": "5",
        }

        first = Service(environment)
        try:
            first.wait_for_log("/outbox/big.csv: 100000 lines read")
        finally:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=30)
        assert asyncio.run(counts(database)) == (0, 0, 0), "the dead process committed nothing"
        assert (ftp.root / "outbox" / "big.csv").exists()

        second = Service(environment)
        try:
            wait_ready(second.process, environment["SKUFLOW_INVENTORY_URL"])
            deadline = time.monotonic() + 120
            while not (ftp.root / "outbox" / "processed" / "big.csv").exists():
                assert time.monotonic() < deadline, "big.csv was not imported within 120 s"
                assert second.process.poll() is None, second.log()
                time.sleep(0.2)
        finally:
            code = second.terminate()
        assert code == 0, second.log()
        assert asyncio.run(counts(database)) == (1, LINES, LINES), "one file, each SKU once, one event each"
    finally:
        ftp.stop()
