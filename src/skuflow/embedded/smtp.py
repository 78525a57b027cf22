"""An SMTP sink (aiosmtpd) that accepts every email and keeps it in memory, for `skuflow up` and the tests.

It speaks real SMTP on a real port; it just delivers nowhere. Like a real server it refuses a recipient
that is not one mailbox with a permanent 553, and keeps bounded memory: the newest KEEP_MAILS emails, each
at most MAX_MAIL_BYTES. For the tests it can act as a server in trouble: `refuse_next` answers the next N
emails with a temporary failure (451), `refuse_recipients` answers those addresses with a permanent one
(550), `delay_seconds` takes that long over each email, `close_after` ends a connection once it has carried
that many emails (as servers that limit messages per connection do: 421 to the next MAIL, then closed),
`drop_at_mail` drops without a word the connection that sends the server's Nth MAIL (as a server process
dying under one connection would: nothing of that email was accepted); and as a server with AUTH
(`credentials`) and TLS (`tls`: STARTTLS, or `implicit_tls`). `connections` counts the connections it
accepted, `open_connections` those still open; stopping it drops the open ones, as a server going down does.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from skuflow.platform.smtp import mailbox

KEEP_MAILS = 10_000
MAX_MAIL_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    message_id: str
    received_at: float = field(default_factory=time.time)  # when the sink accepted it (epoch seconds)


class SmtpSink:
    def __init__(
        self,
        on_mail: Callable[[ReceivedMail], None] | None = None,
        *,
        credentials: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.mails: deque[ReceivedMail] = deque(maxlen=KEEP_MAILS)
        self.refuse_next = 0
        self.refused = 0
        self.refuse_recipients: set[str] = set()
        self.delay_seconds = 0.0
        self.close_after: int | None = None
        self.drop_at_mail: int | None = None
        self.mail_commands = 0  # MAIL commands received, on every connection
        self.connections = 0
        self._open: set[_Connection] = set()
        self.on_mail = on_mail
        self.credentials = credentials
        self.tls = tls
        self.implicit_tls = implicit_tls
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        query = "?starttls=true" if self.tls and not self.implicit_tls else ""
        return f"{scheme}://{user}127.0.0.1:{self.port}{query}"

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, host, port, ssl=self.tls if self.implicit_tls else None)
        self.port = self._server.sockets[0].getsockname()[1]

    def _session(self) -> SMTP:
        starttls = self.tls if not self.implicit_tls else None
        self.connections += 1
        return _Connection(
            self,
            hostname="skuflow-sink",
            data_size_limit=MAX_MAIL_BYTES,
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=self._authenticate if self.credentials else None,
            auth_required=self.credentials is not None,
            # aiosmtpd counts only STARTTLS as TLS: over implicit TLS it would hide AUTH unless told not to.
            auth_require_tls=self.tls is not None and not self.implicit_tls,
        )

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, data: Any
    ) -> AuthResult:
        expected = self.credentials
        given = (data.login.decode(), data.password.decode()) if isinstance(data, LoginPassword) else None
        # handled=False: aiosmtpd then answers (235, or 535 on a failure) instead of leaving the client waiting.
        return AuthResult(success=expected is not None and given == expected, handled=False)

    async def handle_RCPT(
        self, _server: SMTP, _session: Session, envelope: Envelope, address: str, _options: list[str]
    ) -> str:
        try:
            mailbox(address, deliverable=False)
        except ValueError as error:
            return f"553 5.1.3 {address!r} is not one mailbox: {error}"
        if address.lower() in self.refuse_recipients:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # stops listening; the connections already open are dropped below
            for connection in list(self._open):
                connection.drop()
            await self._server.wait_closed()
            self._server = None

    async def handle_DATA(self, server: SMTP, _session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay_seconds)  # a slow server (the tests); the email counts once answered
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return "451 4.3.0 Try again later"
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message: Any = email.message_from_bytes(content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        mail = ReceivedMail(
            sender=str(envelope.mail_from),
            recipients=tuple(str(rcpt) for rcpt in envelope.rcpt_tos),
            subject=str(message["Subject"] or ""),
            body=body.get_content() if body is not None else "",
            message_id=str(message["Message-ID"] or ""),
        )
        self.mails.append(mail)
        if isinstance(server, _Connection):
            server.accepted += 1
        if self.on_mail is not None:
            self.on_mail(mail)
        return "250 OK"


class _Connection(SMTP):
    """One client's connection to the sink: what it carried, for `close_after`, and a way to drop it."""

    def __init__(self, sink: SmtpSink, **options: Any) -> None:
        super().__init__(sink, **options)
        self.sink = sink
        self.accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.sink._open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.sink._open.discard(self)
        super().connection_lost(error)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def smtp_MAIL(self, arg: str | None) -> None:
        self.sink.mail_commands += 1
        if self.sink.mail_commands == self.sink.drop_at_mail:
            self.drop()
            return
        limit = self.sink.close_after
        if limit is not None and self.accepted >= limit and self.transport is not None:
            # aiosmtpd's own way of ending a session: the 421, then the connection closed.
            await self.push("421 4.7.0 Too many messages on one connection, closing")
            self.transport.close()
            return
        await super().smtp_MAIL(arg)
