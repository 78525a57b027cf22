"""Sending the wishlist emails from the notifications table (an email outbox), over SMTP (aiosmtplib).

A notification row is written with the availability change that makes it due; the mailer sends it and
marks it sent. A failed send (SMTP down, refused) is kept and retried later with a growing delay: never
lost. Each email carries a Message-ID derived from its row, so that a resend after a crash between
sending and marking (the one window where it could go twice) is recognisable as the same email.
On PostgreSQL several processes share the work (`FOR UPDATE SKIP LOCKED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from skuflow.platform.db import Database
from skuflow.platform.http import ServiceUnavailable, call_json
from skuflow.users import domain
from skuflow.users.db import notifications

log = logging.getLogger("skuflow.users.mailer")

SENDER = "skuflow <notifications@skuflow.local>"


CLAIM_SECONDS = 120  # how long a mailer holds the emails it took before another may take them
STOP_WITHIN = 15.0  # seconds a stopping mailer waits for the email in progress


class Mailer:
    def __init__(
        self,
        db: Database,
        smtp_url: str | None,
        catalog_url: str,
        http: Any = None,
        *,
        batch_size: int = 50,
        poll_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.smtp_url = smtp_url
        self.catalog_url = catalog_url
        self.http: aiohttp.ClientSession | None = http
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.sent = 0
        self.failed = 0
        self.last_error: str | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wakeup.set()

    def start(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        if self.smtp_url is None:
            log.warning("SKUFLOW_SMTP_URL is not set: wishlist emails are kept until it is")
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="mailer")

    async def stop(self) -> None:
        """Let the email being sent be sent and recorded (not cancelled between the SMTP server's acceptance
        and the record, which would send it again later), within a bound; then stop."""
        if self._task is not None:
            self._stopping = True
            self._wakeup.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WITHIN)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def report(self) -> dict[str, Any]:
        """For /readyz: SMTP trouble is reported, never a reason to be unready."""
        return {
            "smtp": self.smtp_url or "not configured",
            "sent": self.sent,
            "failed_attempts": self.failed,
            "last_error": self.last_error,
        }

    async def _run(self) -> None:
        while not self._stopping:
            try:
                busy = await self.send_due() == self.batch_size
            except Exception:
                log.exception("mailer pass failed")
                busy = False
            if busy:
                continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_seconds)

    async def send_due(self) -> int:
        """Send the emails that are due; returns how many were tried."""
        async with self.db.one_worker("skuflow-mailer") as mine:
            return await self._send_due() if mine else 0

    async def _send_due(self) -> int:
        now = datetime.now(UTC)
        query = (
            select(notifications)
            .where(notifications.c.sent_at.is_(None), notifications.c.next_attempt_at <= now)
            .order_by(notifications.c.id)
            .limit(self.batch_size)
        )
        if self.db.is_sqlite:  # one mailer at a time (one_worker): nobody else takes them
            async with self.db.reading() as session:
                rows = (await session.execute(query)).all()
        else:
            # Claimed, and the claim committed, before anything is sent: other mailers skip these rows until
            # the claim runs out (it does, should this process die before recording what it sent).
            async with self.db.transaction() as session:
                rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
                if rows:
                    claim = {"next_attempt_at": now + timedelta(seconds=CLAIM_SECONDS)}
                    ids = [row.id for row in rows]
                    await session.execute(update(notifications).where(notifications.c.id.in_(ids)).values(**claim))
        # Within half the claim: the rest of the batch, still claimed, is taken again once the claim runs out.
        deadline = time.monotonic() + CLAIM_SECONDS / 2
        done = 0
        try:
            for row in rows:
                if self._stopping or time.monotonic() > deadline:
                    break
                await self._record(row.id, await self._send(row))
                done += 1
        finally:
            if not self.db.is_sqlite and done < len(rows) and not self._stopping:
                # Cut short (an unexpected error): the rest are due again now, not when the claim runs out.
                with contextlib.suppress(Exception):
                    ids = [row.id for row in rows[done:]]
                    async with self.db.transaction() as session:
                        released = update(notifications).where(notifications.c.id.in_(ids))
                        await session.execute(released.values(next_attempt_at=datetime.now(UTC)))
        return len(rows)

    async def _record(self, notification: int, values: dict[str, Any]) -> None:
        """Record the outcome of one email, each in its own transaction, trying again while the database is
        away: an email the SMTP server accepted must be marked sent, not sent again."""
        delay = 0.5
        while True:
            try:
                async with self.db.transaction() as session:
                    await session.execute(
                        update(notifications).where(notifications.c.id == notification).values(**values)
                    )
                return
            except (DBAPIError, OSError) as error:
                log.warning("cannot record email %d yet (%r); trying again in %.1fs", notification, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send(self, row: Any) -> dict[str, Any]:
        """Try one email; the column values that record the outcome."""
        name = await self._product_name(row.sku)
        subject = f"{name} is available again"
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = row.email
        message["Subject"] = subject
        message["Message-ID"] = f"<notification-{row.id}-{row.sku}-{row.revision}@skuflow.local>"
        message.set_content(
            f"Good news: {name} (SKU {row.sku}), on your wishlist, can be ordered again.\n\n-- skuflow\n"
        )
        target = urlsplit(self.smtp_url or "")
        try:
            await aiosmtplib.send(message, hostname=target.hostname, port=target.port or 25, timeout=10)
        except (aiosmtplib.SMTPException, OSError) as error:
            attempts = row.attempts + 1
            self.failed += 1
            self.last_error = f"{type(error).__name__}: {error}"
            delay = domain.next_attempt_delay(attempts)
            log.warning("email %d to %s failed (%s); retrying in %.0fs", row.id, row.email, self.last_error, delay)
            return {
                "attempts": attempts,
                "last_error": self.last_error[:500],
                "next_attempt_at": datetime.now(UTC) + timedelta(seconds=delay),
            }
        self.sent += 1
        log.info("emailed %s: %s", row.email, subject)
        return {"attempts": row.attempts + 1, "sent_at": datetime.now(UTC), "subject": subject, "last_error": None}

    async def _product_name(self, sku: str) -> str:
        """The product's name from catalog; the SKU id itself when catalog does not know it or cannot say."""
        if self.http is None:
            return sku
        try:
            status, body = await call_json(self.http, "GET", f"{self.catalog_url}/v1/products/{sku}", attempts=2)
        except ServiceUnavailable as error:
            log.warning("no product name for %s from catalog (%s): using the SKU", sku, error)
            return sku
        if status == 200 and isinstance(body, dict) and body.get("name"):
            return str(body["name"])
        return sku
