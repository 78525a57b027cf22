"""An SMTP sink (aiosmtpd) that accepts every email and keeps it in memory, for `skuflow up` and the tests.

It speaks real SMTP on a real port; it just delivers nowhere. `refuse_next` makes it answer the next N
emails with a temporary failure (451), as a mail server under trouble would.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    message_id: str
    received_at: float = field(default_factory=time.time)  # when the sink accepted it (epoch seconds)


class SmtpSink:
    def __init__(self, on_mail: Callable[[ReceivedMail], None] | None = None) -> None:
        self.mails: list[ReceivedMail] = []
        self.refuse_next = 0
        self.refused = 0
        self.on_mail = on_mail
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self, hostname="skuflow-sink"), host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
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
        if self.on_mail is not None:
            self.on_mail(mail)
        return "250 OK"
