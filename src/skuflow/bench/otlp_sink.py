"""An OTLP/HTTP trace receiver for the benches that measure what tracing costs (`bench bus --against traced`,
`bench e2e --traced`), in a process of its own: the exporter under test then does all its real work
(serialising, sending, reading the answer) and nothing is dropped for want of a receiver, while what receiving
costs (parsing, counting) is spent outside the processes measured.

`python -m skuflow.bench.otlp_sink` serves `POST /v1/traces` on a free port of 127.0.0.1 and prints the port;
each request's body is read as an `ExportTraceServiceRequest` (gzip or not), its spans counted, and answered 200
with an empty `ExportTraceServiceResponse`. Each line it reads is answered with a line of JSON, what it has
received so far (`requests`, `spans`, `bytes`); the end of its input stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
START_SECONDS = 60.0
STOP_SECONDS = 10.0


@dataclass
class Received:
    requests: int = 0
    spans: int = 0
    bytes: int = 0  # request bodies as sent (compressed, if they were)


class OtlpSink:
    """The sink's process, seen from the bench: where to send spans, and what it has received so far."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self._process = process
        self._asking = asyncio.Lock()
        self.endpoint = f"http://127.0.0.1:{port}"  # OTEL_EXPORTER_OTLP_ENDPOINT (the exporter adds /v1/traces)
        self.traces_url = f"{self.endpoint}{TRACES_PATH}"  # an exporter's `endpoint` argument: the full URL

    @property
    def pid(self) -> int:
        return self._process.pid

    async def received(self) -> Received:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        async with self._asking:  # one question, one answer
            self._process.stdin.write(b"?\n")
            await self._process.stdin.drain()
            line = await asyncio.wait_for(self._process.stdout.readline(), START_SECONDS)
        if not line:
            raise RuntimeError(f"the OTLP sink's process ended ({self._process.returncode})")
        return Received(**json.loads(line))


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[OtlpSink]:
    """The sink in a process of its own, answering; stopped after the block (the end of its input)."""
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", __name__, stdin=pipe, stdout=pipe)
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        started = await asyncio.wait_for(process.stdout.readline(), START_SECONDS)
        if not started.strip().isdigit():
            raise RuntimeError("the OTLP sink's process did not start")
        yield OtlpSink(process, int(started))
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


def count_spans(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


async def _serve() -> None:
    received = Received()
    answer = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        received.requests += 1
        received.bytes += request.content_length or len(body)
        if body[:2] == b"\x1f\x8b":  # still gzipped (the server may or may not have undone Content-Encoding)
            body = gzip.decompress(body)
        try:
            received.spans += count_spans(body)
        except (DecodeError, OSError, EOFError):  # not protobuf, or broken gzip: the exporter is told
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        return web.Response(body=answer, content_type=PROTOBUF)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post(TRACES_PATH, traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(port, flush=True)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.readline():
            print(json.dumps(asdict(received)), flush=True)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(_serve())
