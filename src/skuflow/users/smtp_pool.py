"""The mailer's SMTP connections: a few kept open across emails, instead of one opened and closed per email.

The pool has `size` lanes, each one connection carrying one email at a time (SMTP allows one transaction at a
time on a connection): the mailer sends on several lanes at once, each lane its own emails one after another.
A lane's connection is opened when an email needs it, with the options `SmtpTarget.connection_options()` gives
(TLS, STARTTLS, AUTH), and kept while emails keep coming: `close_if_idle` ends it once it has waited
IDLE_SECONDS for one, and `close` at stop. What a failed send means for its lane's connection:

- a refusal of this email's recipient or content (an answer to RCPT or DATA, other than 421): the email's
  own outcome; the connection stays (aiosmtplib has sent RSET, so the next email starts a clean envelope);
- anything else (the server closed the connection, a timeout, a 421, a refused sender, TLS or AUTH trouble,
  an error nobody foresaw): the connection is dropped. If it had already carried an email, the email is tried
  once more on a fresh connection: servers close connections after so many messages or when idle, which says
  nothing of the server's health. A fresh connection that fails is not tried again at once: it says the
  server is in trouble, and a second try would only double the load on it (or the refused logins).

The one retry does not widen the window in which an email could go twice: a connection lost after the content
was sent leaves the email unrecorded either way, and without the retry it would be sent again on its next try.
The lanes share nothing but the target: one lane's connection lost costs the others nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiosmtplib

from skuflow.platform.smtp import SmtpTarget

log = logging.getLogger("skuflow.users.mailer")

# Long enough to bridge the mailer's passes while emails keep coming (it polls every second), short enough not
# to hold one of the server's connection slots for nothing.
IDLE_SECONDS = 5.0
QUIT_SECONDS = 2.0  # QUIT is a courtesy: a server slow to answer it is closed anyway
SERVICE_CLOSING = 421  # RFC 5321: the server is closing the connection (aiosmtplib closes its side too)


class SmtpPool:
    """`size` lanes to one SMTP server, each a `SmtpConnection`; an email goes on the lane its caller names."""

    def __init__(
        self,
        target: SmtpTarget,
        *,
        step_seconds: float,
        idle_seconds: float = IDLE_SECONDS,
        reuse: bool = True,
        size: int = 1,
    ) -> None:
        if size < 1:
            raise ValueError("an SMTP pool has at least one connection")
        self.lanes = [SmtpConnection(target, step_seconds, idle_seconds, reuse) for _ in range(size)]

    @property
    def size(self) -> int:
        return len(self.lanes)

    @property
    def opened(self) -> int:
        """Connections opened, all lanes together."""
        return sum(lane.opened for lane in self.lanes)

    async def send(self, sender: str, recipient: str, content: bytes, *, lane: int = 0) -> None:
        """Send one email on `lane`'s connection; raises what aiosmtplib raises when it is not accepted."""
        await self.lanes[lane].send(sender, recipient, content)

    async def close_if_idle(self) -> None:
        await asyncio.gather(*(lane.close_if_idle() for lane in self.lanes))  # each QUIT bounded, side by side

    async def close(self) -> None:
        await asyncio.gather(*(lane.close() for lane in self.lanes))


class SmtpConnection:
    """One lane: one connection kept open, one email at a time on it, whoever calls."""

    def __init__(self, target: SmtpTarget, step_seconds: float, idle_seconds: float, reuse: bool) -> None:
        self.target = target
        self.step_seconds = step_seconds  # bounds each step (connect, each command); the caller bounds the whole
        self.idle_seconds = idle_seconds
        self.reuse = reuse  # False: a connection per email, as before pooling (the benchmark's baseline)
        self.opened = 0  # connections opened
        self._client: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self._lock = asyncio.Lock()  # one email at a time on the one connection, whoever calls

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def send(self, sender: str, recipient: str, content: bytes) -> None:
        """Send one email; raises what aiosmtplib raises when it is not accepted."""
        async with self._lock:
            reused = self.connected
            try:
                await self._try(sender, recipient, content)
            except (aiosmtplib.SMTPException, OSError) as error:
                if not (reused and about_the_connection(error)):
                    raise
                log.debug("the SMTP connection went away (%r): sending again on a fresh one", error)
                await self._try(sender, recipient, content)
            finally:
                if not self.reuse:
                    await self._close()

    async def close_if_idle(self) -> None:
        async with self._lock:
            if self._client is not None and time.monotonic() - self._last_used >= self.idle_seconds:
                await self._close()

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        """QUIT, briefly, and close."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.is_connected:
                await client.quit(timeout=QUIT_SECONDS)
        except (aiosmtplib.SMTPException, OSError):
            pass  # closed below all the same
        finally:
            client.close()

    def drop(self) -> None:
        """Close without a word: the connection's state is unknown or it is already gone."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _try(self, sender: str, recipient: str, content: bytes) -> None:
        client = self._client if self._client is not None and self._client.is_connected else None
        if client is None:
            client = await self._connect()
        try:
            await client.sendmail(sender, [recipient], content)
        except BaseException as error:  # a deadline's cancellation too: mid-command, the state is unknown
            if not isinstance(error, Exception) or about_the_connection(error) or not client.is_connected:
                self.drop()
            raise
        finally:
            self._last_used = time.monotonic()

    async def _connect(self) -> aiosmtplib.SMTP:
        self.drop()  # what is left of a connection the server closed
        client = aiosmtplib.SMTP(timeout=self.step_seconds, **self.target.connection_options())
        await client.connect()  # on a failure aiosmtplib closes what it opened
        self._client = client
        self.opened += 1
        return client


def about_the_connection(error: Exception) -> bool:
    """Whether a failed send ends the connection's usefulness rather than refusing this email: everything but
    an answer to its recipient or content, and a 421 even there (the server is closing)."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return any(refusal.code == SERVICE_CLOSING for refusal in error.recipients)
    if isinstance(error, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return error.code == SERVICE_CLOSING
    return True
