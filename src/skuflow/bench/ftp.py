"""`skuflow bench ftp`: how fast the warehouse feed imports a big file, and in how much memory.

Each run serves two files from an embedded FTP server: the first creates every SKU (N lines: 10
warehouses x N/10 SKUs, with `as_of`), the second changes every number (a newer `as_of`). For each, the
clock runs from the first byte downloaded to the commit of the numbers, the ledger row and one outbox row
per changed SKU, the same two calls the watcher makes; the relay is not running (it publishes at the bus's
rate, which `skuflow bench bus` and `bench outbox` measure). Memory is the process's resident size,
sampled every 10 ms: its peak during the import, and that peak above what it was when the import began.

The baseline, in the same process: downloading the file and checking its lines without a database, the
part of the work that no database can remove.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.table import Table

from skuflow.bench.memory import peak_resident
from skuflow.bench.scratch import scratch_database
from skuflow.embedded.ftp import FOLDER, FtpServer
from skuflow.inventory.feed.importer import Delivery, import_delivery
from skuflow.inventory.feed.lines import read_batches
from skuflow.inventory.service import build_runtime
from skuflow.platform.ftp import FtpLocation, connect
from skuflow.platform.settings import Settings

TARGET = 50_000  # lines/s, into SQLite and into PostgreSQL (the target)
WAREHOUSES = 10


@dataclass(frozen=True)
class Import:
    seconds: float
    peak_mb: float  # the process's resident memory at its highest during the import
    growth_mb: float  # the same, above what it was when the import began

    def rate(self, lines: int) -> float:
        return lines / self.seconds


@dataclass
class DatabaseFigures:
    name: str
    create: list[Import] = field(default_factory=list)  # first file: every SKU new
    update: list[Import] = field(default_factory=list)  # second file: every number changed

    def summary(self, lines: int) -> dict[str, dict[str, float]]:
        def figures(imports: list[Import]) -> dict[str, float]:
            rate = statistics.median(each.rate(lines) for each in imports)
            return {
                "lines_per_second": rate,
                "seconds": statistics.median(each.seconds for each in imports),
                "peak_memory_mb": max(each.peak_mb for each in imports),
                "memory_growth_mb": max(each.growth_mb for each in imports),
                "of_target": rate / TARGET,
            }

        return {"create": figures(self.create), "update": figures(self.update)}


@dataclass
class FtpReport:
    lines: int
    runs: int
    file_mb: float
    baseline: list[float] = field(default_factory=list)  # lines/s: download and check, no database
    databases: list[DatabaseFigures] = field(default_factory=list)

    def baseline_rate(self) -> float:
        return float(statistics.median(self.baseline))

    def summaries(self) -> dict[str, dict[str, dict[str, float]]]:
        """database -> file (create, update) -> figure -> value"""
        return {figures.name: figures.summary(self.lines) for figures in self.databases}

    def as_dict(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "runs": self.runs,
            "file_mb": self.file_mb,
            "target_lines_per_second": TARGET,
            "baseline_download_and_check_lines_per_second": self.baseline_rate(),
            "databases": self.summaries(),
        }

    def table(self) -> Table:
        title = f"bench ftp: {self.lines:,} lines ({self.file_mb:.1f} MB) x {self.runs} runs, first byte to commit"
        table = Table(title=title)
        columns = ("database", "file", "lines/s (median)", "seconds", "peak resident", "growth", f"of {TARGET:,}/s")
        for column in columns:
            table.add_column(column, justify="left" if column in ("database", "file") else "right")
        for name, summary in self.summaries().items():
            for kind, label in (("create", "every SKU new"), ("update", "every number changed")):
                figures = summary[kind]
                table.add_row(
                    name,
                    label,
                    f"{figures['lines_per_second']:,.0f}",
                    f"{figures['seconds']:.2f}",
                    f"{figures['peak_memory_mb']:.0f} MB",
                    f"{figures['memory_growth_mb']:.0f} MB",
                    f"{figures['of_target']:.2f}x",
                )
        baseline = f"{self.baseline_rate():,.0f}"
        table.add_row("(baseline)", "download and check, no database", baseline, "", "", "", "")
        return table


async def run(
    lines: int, runs: int, databases: list[str], postgres_url: str, progress: Callable[[str], None]
) -> FtpReport:
    with tempfile.TemporaryDirectory(prefix="skuflow-bench-ftp-") as scratch:
        root = Path(scratch)
        server = FtpServer(root / "ftp", "bench", uuid.uuid4().hex)
        server.start()
        try:
            as_of = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
            first, second = root / "ftp" / FOLDER / "first.csv", root / "ftp" / FOLDER / "second.csv"
            _write(first, lines, as_of, offset=0)
            _write(second, lines, as_of + timedelta(minutes=1), offset=1)
            report = FtpReport(lines, runs, first.stat().st_size / 2**20)
            for n in range(runs):
                report.baseline.append(await _download_and_check(server.location(), root, lines))
                progress(f"run {n + 1}/{runs}: download and check only: {report.baseline[-1]:,.0f} lines/s")
            for name in databases:
                figures = DatabaseFigures(name)
                for n in range(runs):
                    async with scratch_database(name, root, postgres_url) as url:
                        created, updated = await _one_run(server.location(), url, root)
                    figures.create.append(created)
                    figures.update.append(updated)
                    progress(
                        f"run {n + 1}/{runs} {name}: create {created.rate(lines):,.0f} lines/s "
                        f"(peak {created.peak_mb:.0f} MB), update {updated.rate(lines):,.0f} lines/s "
                        f"(peak {updated.peak_mb:.0f} MB)"
                    )
                report.databases.append(figures)
            return report
        finally:
            server.stop()


def _write(path: Path, lines: int, as_of: datetime, offset: int) -> None:
    moment = as_of.isoformat().replace("+00:00", "Z")
    with path.open("w") as out:
        out.write("warehouse_id,sku,on_hand,as_of\n")
        for n in range(lines):
            out.write(f"WH-{n % WAREHOUSES},SKU-{n // WAREHOUSES:07d},{(n + offset) % 1000},{moment}\n")


async def _download_and_check(location: FtpLocation, root: Path, lines: int) -> float:
    local = root / "baseline.csv"
    started = time.perf_counter()
    async with connect(location) as ftp:
        await ftp.download(f"{location.path}/first.csv", local)
    checked = await asyncio.to_thread(lambda: sum(len(b.rows) for b in read_batches(local, datetime.now(UTC))))
    assert checked == lines
    return lines / (time.perf_counter() - started)


async def _one_run(location: FtpLocation, database_url: str, root: Path) -> tuple[Import, Import]:
    broker = f"memory://bench-{uuid.uuid4().hex}"
    settings = Settings(broker_url=broker, data_dir=root, inventory_database_url=database_url)
    runtime = build_runtime(settings)  # not started: no relay, no consumers; its database and outbox only
    await runtime.db.migrate()
    try:
        results = []
        for name in ("first.csv", "second.csv"):
            workdir = root / f"work-{uuid.uuid4().hex}"
            workdir.mkdir()
            local = workdir / "content.csv"
            with peak_resident() as peak:
                started = time.perf_counter()
                async with connect(location) as ftp:
                    digest = await ftp.download(f"{location.path}/{name}", local)
                delivery = Delivery(f"{location.path}/{name}", local, digest, local.stat().st_size, snapshot=False)
                outcome = await import_delivery(runtime, delivery, workdir)
                seconds = time.perf_counter() - started
            if outcome.status != "imported":
                raise RuntimeError(f"bench file {name} was {outcome.status}, not imported")
            results.append(Import(seconds, *peak()))
        return results[0], results[1]
    finally:
        await runtime.db.close()
