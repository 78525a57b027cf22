"""The transactional outbox: a message is stored in the same transaction as the change that causes it,
and a relay publishes it afterwards, so a change is never committed without its message, nor the reverse.

A broker outage only delays messages: the request that caused them still succeeds, and the relay catches
up when the broker is back. The relay publishes in batches with a window of confirms in flight, is woken
when a transaction that added messages commits (and polls as well, for commits of other processes), and
is safe with several processes: on PostgreSQL each batch is claimed with `FOR UPDATE SKIP LOCKED`.
A crash between publishing and marking publishes a batch twice: consumers deduplicate by `message_id`.

A message the broker refuses (no such exchange, no queue bound for it: a topology that is wrong, which an
operator fixes) must not hold up the messages behind it: the relay marks what the broker took and holds
the refused messages back, trying each again with backoff (1 s doubling to 5 min) for as long as it is
refused. They stay pending, so nothing is lost; they are logged, counted in
`/metrics` and listed in `/readyz`. Order is not kept past a refused message: consumers already tolerate
any order (revisions and deduplication).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.messaging import Broker, Envelope, Outgoing, PublishError, PublishRefused
from skuflow.platform.db import COPY_FROM, Database, utc

log = logging.getLogger("skuflow.outbox")

TABLE = "outbox"
_COLUMNS = (
    "message_id",
    "exchange",
    "routing_key",
    "type",
    "app_id",
    "correlation_id",
    "causation_id",
    "timestamp",
    "body",
    "headers",
    "created_at",
)


def outbox_columns_v1() -> list[Any]:
    """The outbox's columns as each service's first migration creates them.

    Frozen: migrations are history. A change of the outbox is a new function (v2) beside this one, the
    table below switching to it, and a migration in each service that goes from one to the other."""
    return [
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("message_id", String(64), nullable=False, unique=True),
        Column("exchange", String(255), nullable=False),
        Column("routing_key", String(255), nullable=False),
        Column("type", String(128), nullable=False),
        Column("app_id", String(64), nullable=False),
        Column("correlation_id", String(128), nullable=False),
        Column("causation_id", String(128)),
        Column("timestamp", DateTime(timezone=True), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True)),
    ]


def create_outbox_v1(op: Any) -> None:
    """What each service's first migration runs to create its outbox (`op` is Alembic's)."""
    op.create_table(TABLE, *outbox_columns_v1())
    for name, columns in outbox_indexes():
        op.create_index(name, TABLE, columns)


def outbox_indexes(table: str = TABLE) -> list[tuple[str, list[str]]]:
    return [(f"ix_{table}_pending", ["published_at", "id"])]


def outbox_table(metadata: MetaData, name: str = TABLE) -> Table:
    table = Table(name, metadata, *outbox_columns_v1())
    for index, columns in outbox_indexes(name):
        Index(index, *(table.c[column] for column in columns))
    return table


class Outbox:
    """Adds messages to a transaction; wakes the relay once that transaction has committed."""

    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table
        self.relay: OutboxRelay | None = None

    async def add(self, session: AsyncSession, envelope: Envelope, exchange: str, routing_key: str = "") -> None:
        await self.add_many(session, [Outgoing(envelope, exchange, routing_key)])

    async def add_many(self, session: AsyncSession, messages: Sequence[Outgoing]) -> None:
        """Add messages to the session's transaction in one statement (one round trip, however many);
        on PostgreSQL many rows go by COPY (100,000 rows: ~0.5 s instead of ~2.8 s)."""
        if not messages:
            return
        now = datetime.now(UTC)
        rows = [
            (
                message.envelope.message_id,
                message.exchange,
                message.routing_key,
                message.envelope.type,
                message.envelope.app_id,
                message.envelope.correlation_id,
                message.envelope.causation_id,
                message.envelope.timestamp,
                message.envelope.body,
                dict(message.envelope.headers),
                now,
            )
            for message in messages
        ]
        if len(rows) >= COPY_FROM and not self.db.is_sqlite:
            copied = [(*row[:9], json.dumps(row[9]), row[10]) for row in rows]
            await self.db.copy(session, self.table.name, _COLUMNS, copied)
        else:
            await session.execute(self.table.insert(), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])
        if self.relay is not None:
            self.db.after_commit(session, self.relay.wake)

    async def pending(self) -> int:
        async with self.db.reading() as session:
            count = await session.scalar(
                select(func.count()).select_from(self.table).where(self.table.c.published_at.is_(None))
            )
            return int(count or 0)


@dataclass
class Refused:
    """A message the broker refused, held back until its next try."""

    message_id: str
    attempts: int
    error: str
    retry_at: float  # on the event loop's clock


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        broker: Broker,
        *,
        batch_size: int = 500,
        window: int = 100,
        poll_seconds: float = 0.5,
        keep_published: timedelta = timedelta(hours=1),
        refused_backoff: tuple[float, float] = (1.0, 300.0),  # first and longest wait of a refused message
    ) -> None:
        self.outbox = outbox
        self.broker = broker
        self.batch_size = batch_size
        self.window = window
        self.poll_seconds = poll_seconds
        self.keep_published = keep_published
        self.refused_backoff = refused_backoff
        self.published = 0
        self.last_error: str | None = None
        self.refused: dict[int, Refused] = {}  # by outbox row id
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        outbox.relay = self

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox relay")

    async def stop(self) -> None:
        """Stop after the batch in progress (so that what was published is marked), within a bound."""
        if self._task is None:
            return
        task, self._task = self._task, None
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=10)
        except TimeoutError:
            task.cancel()
        except Exception:
            log.exception("outbox relay ended with an error")
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        backoff = 0.5
        last_purge = datetime.now(UTC)
        while not self._stopping:
            self._wakeup.clear()  # before the batch: a commit during it wakes the next one
            try:
                sent = await self.publish_batch()
                if datetime.now(UTC) - last_purge > timedelta(minutes=1):
                    last_purge = datetime.now(UTC)
                    await self.purge()
                self.last_error = None
                backoff = 0.5
            except Exception as error:
                self.last_error = repr(error)
                if isinstance(error, PublishError | OSError):
                    log.warning("outbox relay: broker unavailable (%s); retrying in %.1fs", error, backoff)
                else:
                    log.exception("outbox relay failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30)
                continue
            if sent == self.batch_size:
                continue  # more are waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_seconds)

    async def publish_batch(self) -> int:
        """Publish the oldest pending messages (up to a batch) and mark them; returns how many were taken."""
        table, db = self.outbox.table, self.outbox.db
        query = select(table).where(table.c.published_at.is_(None)).order_by(table.c.id).limit(self.batch_size)
        now = asyncio.get_running_loop().time()
        waiting = [row_id for row_id, refused in self.refused.items() if refused.retry_at > now]
        if waiting:
            query = query.where(table.c.id.not_in(waiting))
        if db.is_sqlite:
            # One process owns a SQLite database: read, publish, then mark in a short write transaction,
            # so that requests do not wait on the broker.
            async with db.one_worker(f"skuflow-outbox-relay:{table.name}") as mine:
                if not mine:
                    return 0
                async with db.reading() as session:
                    rows = (await session.execute(query)).all()
                if rows:
                    sent = await self._publish(rows)
                    async with db.transaction() as session:
                        await self._mark(session, sent)
                return len(rows)
        async with db.transaction() as session:
            rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
            if rows:
                await self._mark(session, await self._publish(rows))
        return len(rows)

    async def _publish(self, rows: Sequence[Any]) -> Sequence[Any]:
        """Publish the rows; answers those the broker took (all of them, unless it refused some)."""
        try:
            await self.broker.publish_many([_outgoing(row) for row in rows], window=self.window)
            sent = rows
        except PublishRefused as error:
            for row in rows:
                if row.message_id in error.refused:
                    self._refuse(row, error.refused[row.message_id])
            sent = [row for row in rows if row.message_id not in error.refused]
        for row in sent:
            if (refused := self.refused.pop(row.id, None)) is not None:
                log.info("outbox: %s went out after %d refusals", row.message_id, refused.attempts)
        return sent

    def _refuse(self, row: Any, error: str) -> None:
        earlier = self.refused.get(row.id)
        attempts = (earlier.attempts if earlier else 0) + 1
        first, longest = self.refused_backoff
        backoff = min(first * 2 ** (attempts - 1), longest)
        retry_at = asyncio.get_running_loop().time() + backoff
        self.refused[row.id] = Refused(row.message_id, attempts, error, retry_at)
        log.error(
            "outbox: the broker refused %s %s to %r (routing key %r), attempt %d; the messages behind it go on, "
            "this one is tried again in %.1fs: %s",
            row.type,
            row.message_id,
            row.exchange,
            row.routing_key,
            attempts,
            backoff,
            error,
        )

    async def _mark(self, session: AsyncSession, rows: Sequence[Any]) -> None:
        if not rows:
            return
        table = self.outbox.table
        await session.execute(
            update(table).where(table.c.id.in_([row.id for row in rows])).values(published_at=datetime.now(UTC))
        )
        self.published += len(rows)

    async def purge(self) -> None:
        table = self.outbox.table
        cutoff = datetime.now(UTC) - self.keep_published
        async with self.outbox.db.transaction() as session:
            await session.execute(delete(table).where(table.c.published_at < cutoff))
            if self.refused:  # forget refusals of messages that went out since (through another process)
                query = select(table.c.id).where(table.c.id.in_(self.refused), table.c.published_at.is_(None))
                pending = set((await session.scalars(query)).all())
                self.refused = {row_id: refused for row_id, refused in self.refused.items() if row_id in pending}

    def refusals(self) -> dict[str, Any]:
        """What `/readyz` shows of the messages held back: how many, and the latest few."""
        latest = sorted(self.refused.values(), key=lambda refused: refused.retry_at)[-5:]
        return {
            "messages": len(self.refused),
            "latest": [{"message_id": r.message_id, "attempts": r.attempts, "error": r.error} for r in latest],
        }


def _outgoing(row: Any) -> Outgoing:
    timestamp = utc(row.timestamp)
    envelope = Envelope(
        type=row.type,
        body=row.body,
        app_id=row.app_id,
        message_id=row.message_id,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        timestamp=timestamp,
        headers=row.headers or {},
    )
    return Outgoing(envelope, row.exchange, row.routing_key)
