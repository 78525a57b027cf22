"""`skuflow bench mailer`: how fast the users service's mailer sends the emails that are due.

Each run writes N due notification rows (100 SKUs) into a fresh users database (SQLite, and PostgreSQL when a
server is given, where the mailer claims its rows with SKIP LOCKED) and starts the embedded SMTP sink on
127.0.0.1, in a process of its own as a real server would be (`--tls`: with STARTTLS and AUTH required, as a
submission server is, on a self-signed certificate the mailer is told to trust). The clock runs from the first
pass to the last email recorded and the SMTP connections closed: the mailer's own passes (`send_due`), batch
after batch, as its loop runs them while more is waiting. Three ways, in the same run on the same rows made due
again, taking turns going first: the mailer as the service runs it, on `--connections` SMTP connections at once
(SKUFLOW_SMTP_CONNECTIONS, 4 by default); on one pooled connection (`connections=1`, as it was before sends
went side by side); and with a connection opened and closed for each email (`pooled=False`, as it was before
pooling), the baseline. Beside each rate, the mailer's CPU per email (this process's), which a machine
shared with other work changes far less than the rates.

Catalog is not running, so each product's name is its SKU: this measures the SMTP side. (Catalog is asked once
per SKU a pass, whichever way the emails go.)
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table
from sqlalchemy import update

from skuflow.bench.scratch import scratch_database
from skuflow.bench.smtp_server import SinkProcess, TlsAndAuth, sink_process
from skuflow.embedded.certificate import self_signed
from skuflow.platform.db import Database
from skuflow.users.db import notifications
from skuflow.users.mailer import Mailer
from skuflow.users.service import MIGRATIONS

SKUS = 100
NO_CATALOG = "http://127.0.0.1:9"  # never called: the mailer is given no HTTP client


@dataclass(frozen=True)
class MailerRun:
    concurrent: float  # emails/s over several connections at once
    pooled: float  # emails/s over one connection kept open
    per_email: float  # emails/s with a connection per email
    concurrent_connections: int  # connections the concurrent side opened
    connections: int  # connections the pooled side opened
    # The mailer's process CPU (the bench's: SQLite's thread included; not the sink's nor PostgreSQL's) per
    # email: what a machine shared with other work changes least.
    concurrent_cpu_ms: float
    pooled_cpu_ms: float


# The three ways of a run: (connections, pooled); None stands for `--connections`.
WAYS: tuple[tuple[int | None, bool], ...] = ((None, True), (1, True), (1, False))


@dataclass
class DatabaseRuns:
    name: str
    runs: list[MailerRun] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "concurrent_emails_per_second": statistics.median(run.concurrent for run in self.runs),
            "concurrent_ratio": statistics.median(run.concurrent / run.pooled for run in self.runs),
            "concurrent_connections": statistics.median(run.concurrent_connections for run in self.runs),
            "concurrent_cpu_ms_per_email": statistics.median(run.concurrent_cpu_ms for run in self.runs),
            "pooled_emails_per_second": statistics.median(run.pooled for run in self.runs),
            "pooled_cpu_ms_per_email": statistics.median(run.pooled_cpu_ms for run in self.runs),
            "per_email_connection_emails_per_second": statistics.median(run.per_email for run in self.runs),
            "pooled_ratio": statistics.median(run.pooled / run.per_email for run in self.runs),
            "pooled_connections": statistics.median(run.connections for run in self.runs),
        }


@dataclass
class MailerReport:
    emails: int
    runs: int
    tls: bool
    connections: int
    databases: list[DatabaseRuns] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "emails": self.emails,
            "runs": self.runs,
            "smtp": "starttls+auth" if self.tls else "plain",
            "connections": self.connections,
            "databases": {runs.name: runs.summary() for runs in self.databases},
        }

    def table(self) -> Table:
        smtp = "STARTTLS and AUTH" if self.tls else "plain SMTP"
        title = f"bench mailer: {self.emails:,} emails x {self.runs} runs, to the embedded SMTP sink ({smtp})"
        table = Table(title=title)
        table.add_column("database")
        for column in (
            f"{self.connections} connections (emails/s)",
            "one pooled (emails/s)",
            "a connection per email (emails/s)",
            f"{self.connections} / one",
            "pooled / per email",
            f"connections ({self.connections} / one / per email)",
            f"mailer CPU ms/email ({self.connections} / one)",
        ):
            table.add_column(column, justify="right")
        for runs in self.databases:
            summary = runs.summary()
            table.add_row(
                runs.name,
                f"{summary['concurrent_emails_per_second']:,.0f}",
                f"{summary['pooled_emails_per_second']:,.0f}",
                f"{summary['per_email_connection_emails_per_second']:,.0f}",
                f"{summary['concurrent_ratio']:.2f}x",
                f"{summary['pooled_ratio']:.2f}x",
                f"{summary['concurrent_connections']:,.0f} / {summary['pooled_connections']:,.0f} / {self.emails:,}",
                f"{summary['concurrent_cpu_ms_per_email']:.2f} / {summary['pooled_cpu_ms_per_email']:.2f}",
            )
        return table


async def run(
    emails: int,
    runs: int,
    postgres_url: str | None,
    tls: bool,
    progress: Callable[[str], None],
    connections: int = 4,
) -> MailerReport:
    report = MailerReport(emails, runs, tls, connections)
    with tempfile.TemporaryDirectory(prefix="skuflow-bench-mailer-") as scratch:
        secure = _self_signed(Path(scratch)) if tls else None
        for name in ["sqlite"] + (["postgresql"] if postgres_url else []):
            figures = DatabaseRuns(name)
            for n in range(runs):
                async with scratch_database(name, Path(scratch), postgres_url or "") as url:
                    result = await _one_run(url, emails, secure, connections, first=n % len(WAYS))
                figures.runs.append(result)
                progress(
                    f"run {n + 1}/{runs} {name}: {connections} connections {result.concurrent:,.0f} emails/s "
                    f"({result.concurrent_connections} opened), one pooled {result.pooled:,.0f} emails/s "
                    f"({result.connections} opened), a connection per email {result.per_email:,.0f} emails/s"
                )
            report.databases.append(figures)
    return report


async def _one_run(
    database_url: str, emails: int, secure: TlsAndAuth | None, connections: int, *, first: int
) -> MailerRun:
    db = Database(database_url, MIGRATIONS)
    await db.migrate()
    try:
        await _write_due(db, emails)
        rates: dict[tuple[int | None, bool], tuple[float, float]] = {}
        opened: dict[tuple[int | None, bool], int] = {}
        async with sink_process(secure) as sink:
            with _trusting(secure):
                for way in WAYS[first:] + WAYS[:first]:  # each way goes first in turn
                    size, pooled = way
                    before = await sink.connections()
                    rates[way] = await _send_all(db, sink, emails, pooled=pooled, connections=size or connections)
                    opened[way] = await sink.connections() - before
                    await _due_again(db)
        concurrent, pooled_one, per_email = WAYS
        return MailerRun(
            rates[concurrent][0],
            rates[pooled_one][0],
            rates[per_email][0],
            opened[concurrent],
            opened[pooled_one],
            rates[concurrent][1],
            rates[pooled_one][1],
        )
    finally:
        await db.close()


async def _send_all(
    db: Database, sink: SinkProcess, emails: int, *, pooled: bool, connections: int
) -> tuple[float, float]:
    """Emails/s and the process's CPU ms per email: the mailer's passes until none is due, then its connections
    closed, as at stop."""
    mailer = Mailer(db, sink.url, NO_CATALOG, pooled=pooled, connections=connections)
    started, cpu = time.perf_counter(), time.process_time()
    try:
        while await mailer.send_due() > 0:
            pass
    finally:
        await mailer.stop()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if mailer.sent != emails:
        raise RuntimeError(f"the mailer sent {mailer.sent} of {emails} emails (last error: {mailer.last_error})")
    return emails / seconds, 1000 * cpu / emails


async def _write_due(db: Database, emails: int) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": f"u{n}",
            "sku": f"SKU-{n % SKUS}",
            "revision": 1,
            "email": f"user{n}@example.com",
            "created_at": now,
            "next_attempt_at": now,
        }
        for n in range(emails)
    ]
    async with db.transaction() as session:
        await db.insert_many(session, notifications, rows)


async def _due_again(db: Database) -> None:
    """Every email pending and due again, for the other side."""
    again = {"status": "pending", "attempts": 0, "sent_at": None, "subject": None, "next_attempt_at": datetime.now(UTC)}
    async with db.transaction() as session:
        await session.execute(update(notifications).values(**again))


def _self_signed(folder: Path) -> TlsAndAuth:
    """A certificate for 127.0.0.1 and an account for AUTH."""
    cert, key = self_signed(folder)
    return TlsAndAuth(cert, key, "bench", uuid.uuid4().hex)


@contextlib.contextmanager
def _trusting(secure: TlsAndAuth | None) -> Iterator[None]:
    """The mailer checks certificates against the trust store SSL_CERT_FILE names: the bench's, for the run."""
    if secure is None:
        yield
        return
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(secure.cert)
    try:
        yield
    finally:
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before
