"""Sending the wishlist emails from the notifications table (an email outbox), over SMTP (aiosmtplib).

A notification row is written with the availability change that makes it due; the mailer sends it and
records the outcome (CONTRACT section 8):

- accepted: `sent`;
- refused for good by the SMTP server (a 5xx answer to the recipient or the content), or an email that
  cannot be built (an address or name stored before today's rules, say): tried again later, and `failed`
  after `emails.PERMANENT_FAILURES_ALLOWED` such refusals;
- anything else (the server unreachable, a 4xx answer, a timeout, TLS or AUTH trouble, which say nothing
  of this email and everything of the connection): retried with a growing delay for as long as it takes.

Either way the row waits its next try and the rows behind it go on: no email holds up another. Each email
carries a Message-ID derived from its row, so that a resend after a crash between sending and marking (the
one window where it could go twice) is recognisable as the same email. Headers are built from parsed
addresses and one-line text only, so no stored text can add a header. On PostgreSQL several processes share
the work (`FOR UPDATE SKIP LOCKED`), each holding what it claimed for CLAIM_SECONDS.

A pass sends on up to `connections` SMTP connections at once (`SKUFLOW_SMTP_CONNECTIONS`), each carrying its
share of the batch one email after another and kept open while emails keep coming (`smtp_pool` says what
becomes of one after each kind of failure, and when an email is tried once more on a fresh one). Each outcome
is recorded before its connection carries the next email, so that a crash can leave at most one accepted,
unrecorded email per connection; the outcomes that arrive while one record is being written go together in
the next transaction (`GroupCommit`). The product names of a pass are asked of catalog before its first send,
in one call. One INFO line a pass says how many were sent; each email's own line is DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.quoprimime as quoprimime
import functools
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiosmtplib
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import DBAPIError

from skuflow.messaging.tracing import creation_context
from skuflow.platform.background import Wakeable
from skuflow.platform.db import Database
from skuflow.platform.group_commit import GroupCommit, Submitted
from skuflow.platform.http import call_json
from skuflow.platform.identifiers import is_identifier
from skuflow.platform.runtime import Check
from skuflow.platform.smtp import SmtpTarget
from skuflow.platform.text import one_line
from skuflow.users import emails
from skuflow.users.db import notifications
from skuflow.users.smtp_pool import SmtpPool

log = logging.getLogger("skuflow.users.mailer")

SENDER = Address("skuflow", addr_spec="notifications@skuflow.local")

CLAIM_SECONDS = 120.0  # how long a mailer holds the emails it took before another may take them
# One deadline for the whole of one email: connect, TLS and AUTH when a connection is opened, MAIL, RCPT, DATA,
# and the one try on a fresh connection should the one kept open have gone away. The pass's product names,
# asked of catalog before its first send, have one such deadline too.
SEND_SECONDS = 30.0
# A send starts only while it can end, counted from before the claim was taken, with a whole SEND_SECONDS to
# spare for recording its outcome: a slow SMTP server or catalog cannot make the claim run out under an email
# in progress, and a second mailer take (and send) it again. Each connection checks it before each email.
START_WITHIN = CLAIM_SECONDS - 2 * SEND_SECONDS
STOP_WITHIN = 15.0  # seconds a stopping mailer waits for the emails in progress
# A pass opens one more connection only for this many more emails: fewer go about as fast on the connections
# already open, and each connection costs the server a slot and the client a handshake (TLS and AUTH).
EMAILS_PER_CONNECTION = 16
NAMES_PER_CALL = 500  # the most a page of catalog's `GET /v1/products` holds
SUBJECT_LENGTH = 255  # the column's size
# How an email goes on the wire: CRLF, and header lines folded only past RFC 5322's 998 characters. (Python
# 3.11's folding at 78 garbles a long subject that mixes ASCII with other text; a subject fits in 998.)
WIRE_LINE = 998  # the longest line on the wire before a header is folded (RFC 5322's limit)
WIRE = email.policy.SMTP.clone(max_line_length=WIRE_LINE)


def on_the_wire(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=WIRE)


Outcome = tuple[int, dict[str, Any]]  # a notification's id, and the column values that record its try


class Unbuildable(Exception):
    """This row cannot become an email (its stored address is not one mailbox, say): a permanent failure."""


class Mailer:
    def __init__(
        self,
        db: Database,
        smtp_url: str | None,
        catalog_url: str,
        http: Callable[[], aiohttp.ClientSession] | None = None,
        *,
        batch_size: int = 50,
        poll_seconds: float = 1.0,
        pooled: bool = True,
        connections: int = 1,
        tracer: Tracer | None = None,
    ) -> None:
        """`tracer`: for a span per email sent, in the trace of the change that made it due."""
        self.db = db
        self.tracer = tracer
        self.smtp = SmtpTarget.parse(smtp_url) if smtp_url else None
        # A connection for many emails; `pooled=False`, a connection per email, is the benchmark's baseline.
        self._pool = (
            SmtpPool(self.smtp, step_seconds=SEND_SECONDS, reuse=pooled, size=connections) if self.smtp else None
        )
        self._records: GroupCommit[Outcome, None] = GroupCommit(self._record_together, self._record_one)
        self.catalog_url = catalog_url
        self._session_of = http  # the service's HTTP client, there once the service has started
        self.http: aiohttp.ClientSession | None = None
        self.batch_size = batch_size
        self.sent = 0
        self.failed = 0  # attempts that failed, in this process
        self.failures = {"transient": 0, "permanent": 0}  # the same, by kind (`_refused_for_good`)
        self.last_error: str | None = None
        self.failing = False  # the last send failed for a reason of the connection (the server away, 4xx...)
        # Stopped after the emails being sent are sent and recorded (not cancelled between the SMTP server's
        # acceptance and the record, which would send them again later), within a bound.
        self._loop = Wakeable("mailer", self._pass, poll_seconds=poll_seconds, stop_within=STOP_WITHIN)

    def wake(self) -> None:
        self._loop.wake()

    async def start(self) -> None:
        self.http = self._session_of() if self._session_of is not None else None
        if self.smtp is None:
            log.warning("SKUFLOW_SMTP_URL is not set: wishlist emails are kept until it is")
            return
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._pool is not None:
            await self._pool.close()

    async def check(self) -> Check:
        """For /readyz: degraded while no SMTP server is set or this process's last send failed for the
        connection's sake (emails then wait, and go later; the state follows the sends, it does not probe the
        server); never a reason to be unready. An email refused for good says nothing of the server: the
        details count them, in the table, for every process."""
        details = {
            "smtp": str(self.smtp) if self.smtp else "not configured",
            "sent": self.sent,
            "failed_attempts": self.failed,
            "last_error": self.last_error,
        }
        try:
            async with self.db.reading() as session:
                failed = notifications.c.status == "failed"
                details["failed_emails"] = await session.scalar(select(func.count()).where(failed))
        except Exception as error:  # the database check says it is away; this line only says it cannot count
            details["failed_emails"] = f"cannot count: {error!r}"
        return Check("degraded" if self.smtp is None or self.failing else "ok", details)

    async def pending(self) -> int:
        """Emails not sent yet and not given up on: due now, or waiting their next try (the email backlog)."""
        async with self.db.reading() as session:
            pending = notifications.c.status == "pending"
            return int(await session.scalar(select(func.count()).where(pending)) or 0)

    async def _pass(self) -> bool:
        try:
            return await self.send_due() == self.batch_size
        finally:
            if self._pool is not None:
                await self._pool.close_if_idle()

    async def send_due(self) -> int:
        """Send the emails that are due; returns how many were tried."""
        async with self.db.one_worker("skuflow-mailer") as mine:
            return await self._send_due() if mine else 0

    async def _send_due(self) -> int:
        claimed_at = time.monotonic()
        rows = await self._claim()
        # Counted from before the claim was taken, so that the last send ends well within it. The rest of the
        # batch, still claimed, is released below.
        deadline = claimed_at + START_WITHIN
        sent, failed = self.sent, self.failed
        waiting = deque(rows)  # taken oldest first by whichever connection is free
        try:
            if rows:
                names = await self._product_names({row.sku for row in rows})
                assert self._pool is not None
                lanes = min(self._pool.size, math.ceil(len(rows) / EMAILS_PER_CONNECTION))
                # Each lane ends its email in progress before the pass ends: none is cut between the server's
                # acceptance and its record, and none of the rows it may still take is released under it.
                ended = await asyncio.gather(
                    *(self._send_some(waiting, names, deadline, lane) for lane in range(lanes)),
                    return_exceptions=True,
                )
                for outcome in ended:
                    if isinstance(outcome, BaseException):
                        raise outcome
        finally:
            if not self.db.is_sqlite and waiting and not self._loop.stopping:
                await self._release(waiting)
            if self.sent > sent:  # one line a pass, not one an email
                log.info("emailed %d, %d failed", self.sent - sent, self.failed - failed)
        return len(rows)

    async def _send_some(self, waiting: deque[Any], names: dict[str, str], deadline: float, lane: int) -> None:
        """One connection's share of the pass: the next waiting email, sent and recorded, until none is left,
        the mailer stops or the deadline passes. Recorded before the next: a crash leaves at most this one
        email accepted and unrecorded on this connection."""
        while waiting and not self._loop.stopping and time.monotonic() <= deadline:
            row = waiting.popleft()
            await self._records.submit((row.id, await self._send(row, names, lane)))

    async def _claim(self) -> Sequence[Any]:
        """The due rows of this pass, oldest first; on PostgreSQL claimed (and the claim committed)."""
        now = datetime.now(UTC)
        query = (
            select(notifications)
            .where(notifications.c.status == "pending", notifications.c.next_attempt_at <= now)
            .order_by(notifications.c.id)
            .limit(self.batch_size)
        )
        if self.db.is_sqlite:  # one mailer at a time (one_worker): nobody else takes them
            async with self.db.reading() as session:
                return (await session.execute(query)).all()
        # Claimed, and the claim committed, before anything is sent: other mailers skip these rows until the
        # claim runs out (it does, should this process die before recording what it sent).
        async with self.db.transaction() as session:
            rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
            if rows:
                claim = {"next_attempt_at": now + timedelta(seconds=CLAIM_SECONDS)}
                ids = [row.id for row in rows]
                await session.execute(update(notifications).where(notifications.c.id.in_(ids)).values(**claim))
        return rows

    async def _release(self, rows: Iterable[Any]) -> None:
        """A pass cut short (the deadline, or an unexpected error): the rest are due again now, not when the
        claim runs out."""
        with contextlib.suppress(Exception):
            ids = [row.id for row in rows]
            async with self.db.transaction() as session:
                released = update(notifications).where(notifications.c.id.in_(ids))
                await session.execute(released.values(next_attempt_at=datetime.now(UTC)))

    async def _record_together(self, batch: Sequence[Submitted[Outcome]]) -> list[Exception | None]:
        await self._record([submitted.item for submitted in batch])
        return [None] * len(batch)

    async def _record_one(self, outcome: Outcome) -> None:
        await self._record([outcome])

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        """Record the outcomes of a few emails in one transaction, one statement per kind of outcome (the
        columns written), trying again while the database is away: an email the SMTP server accepted must be
        marked sent, not sent again."""
        kinds: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for notification, values in outcomes:
            kinds.setdefault(tuple(sorted(values)), []).append({"notification": notification, **values})
        by_id = update(notifications).where(notifications.c.id == bindparam("notification"))
        delay = 0.5
        while True:
            try:
                async with self.db.transaction() as session:
                    for rows in kinds.values():
                        await session.execute(by_id, rows)  # the SET clause: the columns the rows name
                return
            except (DBAPIError, OSError) as error:
                ids = ", ".join(str(notification) for notification, _ in outcomes)
                log.warning("cannot record email(s) %s yet (%r); trying again in %.1fs", ids, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send(self, row: Any, names: dict[str, str], lane: int) -> dict[str, Any]:
        """Try one email on `lane`'s connection; the column values that record the outcome. Never raises:
        whatever this one row holds, the rows behind it are sent."""
        if self.tracer is None:
            return await self._send_within(row, names, lane)
        parent = creation_context({"traceparent": row.traceparent} if row.traceparent else {})
        attributes: dict[str, Any] = {
            "server.address": self.smtp.host if self.smtp else "",
            "server.port": self.smtp.port if self.smtp else 0,
            "skuflow.email.notification_id": row.id,
            "skuflow.email.sku": row.sku,
            "skuflow.email.attempt": row.attempts + 1,
        }
        with self.tracer.start_as_current_span(
            "send email", context=parent or Context(), kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            outcome = await self._send_within(row, names, lane)
            if outcome.get("status") != "sent":
                span.set_attribute("error.type", "permanent" if outcome["status"] == "failed" else "transient")
                span.set_status(Status(StatusCode.ERROR, str(outcome.get("last_error"))))
            return outcome

    async def _send_within(self, row: Any, names: dict[str, str], lane: int) -> dict[str, Any]:
        try:
            async with asyncio.timeout(SEND_SECONDS):  # one deadline for all of it: see START_WITHIN
                return await self._build_and_send(row, names, lane)
        except TimeoutError:  # the pool dropped a connection cut mid-command
            return self._failure(row, f"not sent within {SEND_SECONDS:.0f} s", permanent=False)

    async def _build_and_send(self, row: Any, names: dict[str, str], lane: int) -> dict[str, Any]:
        assert self._pool is not None
        try:
            recipient, subject, content = self._email(row, names.get(row.sku, row.sku))
        except Exception as error:
            return self._failure(row, f"cannot build the email: {type(error).__name__}: {error}", permanent=True)
        try:
            await self._pool.send(SENDER.addr_spec, recipient, content, lane=lane)
        except Exception as error:
            if not isinstance(error, aiosmtplib.SMTPException | OSError):  # not foreseen: worth a traceback
                log.exception("email %d: unexpected error while sending; it will be tried again", row.id)
            return self._failure(row, f"{type(error).__name__}: {error}", permanent=_refused_for_good(error))
        self.sent += 1
        self.failing = False
        log.debug("emailed %r: %s", row.email, subject)
        return {
            "status": "sent",
            "attempts": row.attempts + 1,
            "sent_at": datetime.now(UTC),
            "subject": subject[:SUBJECT_LENGTH],
            "last_error": None,
        }

    @staticmethod
    def _email(row: Any, name: str) -> tuple[str, str, bytes]:
        """What is sent for `row`: the envelope's recipient (the parsed address, never read from a header), the
        subject, and the email on the wire, byte for byte `on_the_wire(_message(row, name))` (a test holds them
        equal). Only To and Message-ID go through the email package for each email; the part every email of a
        product shares is built once (building each email whole was a third of the mailer's CPU)."""
        recipient = _recipient(row)
        subject, shared = _product_part(row.sku, one_line(name) or row.sku)
        return recipient.addr_spec, subject, _header("To", recipient) + _header("Message-ID", _message_id(row)) + shared

    @staticmethod
    def _message(row: Any, name: str) -> EmailMessage:
        """The email for `row` as one message, the reference for `_email`; raises when its stored address is
        not one mailbox. The subject and body are built from `one_line` text and the recipient from a parsed
        address: nothing stored adds a header."""
        recipient = _recipient(row)
        name = one_line(name) or row.sku
        message = EmailMessage()
        message["To"] = recipient
        message["Message-ID"] = _message_id(row)
        message["From"] = SENDER
        message["Subject"] = _subject(name)
        message.set_content(_body(row.sku, name))
        return message

    def _failure(self, row: Any, reason: str, *, permanent: bool) -> dict[str, Any]:
        attempts = row.attempts + 1
        permanent_failures = row.permanent_failures + permanent
        self.failed += 1
        self.failures["permanent" if permanent else "transient"] += 1
        self.failing = self.failing or not permanent
        self.last_error = reason
        values: dict[str, Any] = {
            "attempts": attempts,
            "permanent_failures": permanent_failures,
            "last_error": reason[:500],
        }
        if emails.email_given_up(permanent_failures):
            log.error("email %d to %r failed for good after %d tries: %s", row.id, row.email, attempts, reason)
            return {**values, "status": "failed"}
        delay = emails.next_attempt_delay(attempts)
        kind = "refused" if permanent else "failed"
        log.warning("email %d to %r %s (%s); trying again in %.0fs", row.id, row.email, kind, reason, delay)
        return {**values, "next_attempt_at": datetime.now(UTC) + timedelta(seconds=delay)}

    async def _product_names(self, skus: set[str]) -> dict[str, str]:
        """The pass's product names from catalog, in one call per NAMES_PER_CALL SKUs (`GET /v1/products?sku=...`)
        and within one send's deadline. A name is nice to have: whatever catalog does, the emails go, each
        SKU catalog does not name (unknown, unreachable, too slow) named by its id."""
        names: dict[str, str] = {}
        if self.http is None:
            return names
        wanted = sorted(filter(is_identifier, skus))  # one no SKU today (stored before the rule) goes unnamed
        try:
            async with asyncio.timeout(SEND_SECONDS):
                for start in range(0, len(wanted), NAMES_PER_CALL):
                    chunk = wanted[start : start + NAMES_PER_CALL]
                    query = urlencode([("limit", NAMES_PER_CALL), *(("sku", sku) for sku in chunk)])
                    status, body = await call_json(
                        self.http, "GET", f"{self.catalog_url}/v1/products?{query}", attempts=2
                    )
                    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("items"), list):
                        raise ValueError(f"catalog answered {status}: {body!r:.200}")
                    asked = set(chunk)
                    for item in body["items"]:
                        if isinstance(item, dict) and item.get("sku") in asked and item.get("name"):
                            names[str(item["sku"])] = str(item["name"])
        except Exception as error:
            log.warning("no product names from catalog (%r): using the SKUs of the rest", error)
        return names


def _recipient(row: Any) -> Address:
    try:
        return Address(addr_spec=emails.normalize_email(row.email, new=False))
    except ValueError as error:
        raise Unbuildable(f"the stored address {row.email!r} is not one mailbox ({error})") from None


def _message_id(row: Any) -> str:
    return f"<notification-{row.id}-{row.sku}-{row.revision}@skuflow.local>"


def _subject(name: str) -> str:
    return f"{name} is available again"


def _body(sku: str, name: str) -> str:
    return f"Good news: {name} (SKU {sku}), on your wishlist, can be ordered again.\n\n-- skuflow\n"


@functools.lru_cache(maxsize=1024)  # products recently emailed about: a few hundred bytes each
def _product_part(sku: str, name: str) -> tuple[str, bytes]:
    """The subject, and what follows To and Message-ID on the wire (From, Subject, the MIME headers, the body)
    for every email about this product under this name."""
    subject = _subject(name)
    plain = _plain_product_part(sku, name, subject)
    if plain is not None:
        return subject, plain
    message = EmailMessage()
    message["From"] = SENDER
    message["Subject"] = subject
    message.set_content(_body(sku, name))
    return str(message["Subject"]), on_the_wire(message)


# Text the email package passes through unchanged: printable ASCII words, single spaces between; no `=` or `?`
# (an encoded word, `=?utf-8?q?...?=`, is decoded on parsing, and `=` is escaped in quoted-printable).
_PLAIN = re.compile(r"[!-<>@-~]+(?: [!-<>@-~]+)*")
_BODY_LINE = 78  # the longest body line the email package sends as 7bit (its default policy's line length)
_SUBJECT_UNFOLDED = WIRE_LINE - len("Subject: ")  # a longer subject is folded on the wire


def _plain_product_part(sku: str, name: str, subject: str) -> bytes | None:
    """The product's part as the email package would write it, written directly when the name and the SKU
    are plain text (a third of the mailer's CPU went to the package when each email is about its own
    product); None for anything else, which the package writes. `test_email_building` holds the two equal."""
    if not (_PLAIN.fullmatch(name) and _PLAIN.fullmatch(sku)) or len(subject) > _SUBJECT_UNFOLDED:
        return None
    body = _body(sku, name)
    if max(len(line) for line in body.split("\n")) <= _BODY_LINE:
        encoding, payload = "7bit", body
    else:  # the package's choice for long ASCII lines: quoted-printable, soft line breaks at its line length
        encoding, payload = "quoted-printable", quoprimime.body_encode(body, _BODY_LINE)
    head = (
        f"Subject: {subject}\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n"
        "MIME-Version: 1.0\r\n\r\n"
    )
    return _SENDER_HEADER + (head + payload.replace("\n", "\r\n")).encode("ascii")


def _header(name: str, value: Any) -> bytes:
    """One header on the wire, as `on_the_wire` puts it: parsed and folded by the same policy (a value with a
    line break is refused), so no value can add a header."""
    return WIRE.fold_binary(name, WIRE.header_store_parse(name, value)[1])


_SENDER_HEADER = _header("From", SENDER)


def _refused_for_good(error: Exception) -> bool:
    """Whether a failed send says this email will never go: the server's permanent (5xx) answer to its
    recipient or its content. Anything else is worth waiting out: the connection's troubles (unreachable, a
    timeout, TLS, AUTH, a refused greeting or sender: the same for every email), and errors nobody foresaw,
    which say nothing of this email either (an email that cannot be built is refused before sending)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return any(emails.smtp_refused_for_good(refusal.code) for refusal in error.recipients)
    if isinstance(error, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return emails.smtp_refused_for_good(error.code)
    return False
