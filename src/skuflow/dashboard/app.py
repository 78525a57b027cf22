"""The dashboard's HTTP side, so far: it receives spans over OTLP/HTTP and answers flows' timelines as JSON
(issue 19; the page, `skuflow serve dashboard` and its place in `skuflow up` come next).

- `POST /v1/traces`: the OpenTelemetry protocol's trace export over HTTP (OTLP/HTTP): a protobuf
  `ExportTraceServiceRequest`, gzip or not, at most `MAX_BODY` bytes once unzipped; answered with an empty
  `ExportTraceServiceResponse`. The services export there when `SKUFLOW_DASHBOARD_URL` (or any OTLP endpoint)
  names the dashboard. OTLP's JSON encoding is refused (415): the exporters send protobuf by default.
- `GET /api/flows`: the correlation ids of the flows most recently heard of, newest first.
- `GET /api/flows/{correlation_id}`: that flow's timeline (`spans.timeline`), 404 when none of its spans is
  kept.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from skuflow.dashboard.spans import SpanStore, records_from_otlp, timeline

PROTOBUF = "application/x-protobuf"
MAX_BODY = 8 * 1024 * 1024  # bytes of one export, unzipped: the SDK's batches are far smaller
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"  # the correlation id rule (docs/contract.md)


def build_app(store: SpanStore | None = None) -> FastAPI:
    app = FastAPI(title="skuflow dashboard", version="1")
    app.state.store = store = store if store is not None else SpanStore()

    @app.post(
        "/v1/traces",
        summary="OTLP/HTTP trace export (protobuf): the services' spans",
        response_class=Response,
        responses={400: {}, 413: {}, 415: {}},
    )
    async def traces(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != PROTOBUF:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"send OTLP as {PROTOBUF} (protobuf)")
        body = await _bounded_body(request)
        if request.headers.get("content-encoding", "").strip().lower() == "gzip":
            body = _gunzip(body)
        try:
            records = await asyncio.to_thread(records_from_otlp, body)  # up to 8 MiB to parse: off the loop
        except ValueError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from None
        store.add(records)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)

    @app.get("/api/flows", summary="The flows most recently heard of, newest first")
    async def flows(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
        return {"items": store.recent_flows(limit)}

    @app.get("/api/flows/{correlation_id}", summary="A flow's timeline across the services")
    async def flow(correlation_id: Annotated[str, Path(pattern=ID_PATTERN)]) -> dict[str, Any]:
        spans = store.flow(correlation_id)
        if not spans:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no span of flow {correlation_id!r} is kept")
        return {"correlation_id": correlation_id, **timeline(spans)}

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"an export holds at most {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"an export holds at most {MAX_BODY} bytes")
    return bytes(body)


def _gunzip(body: bytes) -> bytes:
    """Unzipped, at most MAX_BODY bytes of it: a small body may unzip to gigabytes."""
    unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = unzip.decompress(body, MAX_BODY + 1)
    except zlib.error as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"not gzip: {error}") from None
    if len(out) > MAX_BODY or unzip.unconsumed_tail:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"an export holds at most {MAX_BODY} bytes")
    return out
