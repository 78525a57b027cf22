"""The embedded SMTP sink in a process of its own, for `bench mailer`: the mailer's process then spends its CPU
on the mailer alone, as beside a real SMTP server, and not on parsing what it receives.

`python -m skuflow.bench.smtp_server [CERT KEY USER]` serves on 127.0.0.1 (with the three, STARTTLS and AUTH
are required, the password in SKUFLOW_BENCH_SMTP_PASSWORD) and prints its port; each line it reads is answered
with the number of connections it has accepted; the end of its input stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from skuflow.embedded.smtp import SmtpSink

PASSWORD = "SKUFLOW_BENCH_SMTP_PASSWORD"


@dataclass(frozen=True)
class TlsAndAuth:
    """STARTTLS with this certificate (trusted by the client through SSL_CERT_FILE) and AUTH."""

    cert: Path
    key: Path
    user: str
    password: str


class SinkProcess:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self._process = process
        self.url = url

    async def connections(self) -> int:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(b"count\n")
        await self._process.stdin.drain()
        return int(await self._process.stdout.readline())


@contextlib.asynccontextmanager
async def sink_process(secure: TlsAndAuth | None = None) -> AsyncIterator[SinkProcess]:
    arguments = [str(secure.cert), str(secure.key), secure.user] if secure else []
    password = {PASSWORD: secure.password} if secure else {}  # not on a command line, which anyone may read
    # aiosmtpd warns of its own deprecated attribute at every AUTH: not the bench's business.
    command = [sys.executable, "-W", "ignore::DeprecationWarning", "-m", __name__, *arguments]
    environment = {**os.environ, **password}
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(*command, env=environment, stdin=pipe, stdout=pipe)
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        started = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        if not started.strip().isdigit():
            raise RuntimeError("the SMTP sink's process did not start")
        user = f"{secure.user}:{secure.password}@" if secure else ""
        query = "?starttls=true" if secure else ""
        yield SinkProcess(process, f"smtp://{user}127.0.0.1:{int(started)}{query}")
    finally:
        process.stdin.close()  # the end of its input stops it
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _serve(arguments: Sequence[str]) -> None:
    sink = SmtpSink()
    if arguments:
        cert, key, user = arguments
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        sink = SmtpSink(credentials=(user, os.environ[PASSWORD]), tls=context)
    await sink.start()
    print(sink.port, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(sink.connections, flush=True)
    await sink.stop()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1:]))
