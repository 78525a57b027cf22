"""The HTTP side every service shares: one app factory, the same middleware, errors and probes.

- `X-Correlation-ID` and `X-Request-ID`: taken from the request (or generated), echoed on the response,
  and bound as the flow of everything the request does (log lines, published messages: the request id is
  their `causation_id`).
- A body over 1 MiB is refused with 413 before the endpoint sees it.
- Errors are `{"detail": ...}`; invalid input is 422 with one entry per problem, naming its location.
- `/healthz` (alive), `/readyz` (database and broker, 503 otherwise), `/metrics` (Prometheus).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skuflow.messaging import flow_scope, new_id
from skuflow.platform import admin
from skuflow.platform.runtime import ServiceRuntime

MAX_BODY_BYTES = 1024 * 1024
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ID_HEADERS = (("x-correlation-id", "X-Correlation-ID"), ("x-request-id", "X-Request-ID"))


def create_app(runtime: ServiceRuntime, routers: Sequence[APIRouter], *, title: str, description: str) -> FastAPI:
    app = FastAPI(title=title, description=description, version="1", lifespan=runtime.lifespan)
    app.state.runtime = runtime
    for router in routers:
        app.include_router(router)
    app.include_router(admin.router)
    app.include_router(_probes(runtime))
    app.add_middleware(_BodyLimit)
    app.add_middleware(_Flow, runtime=runtime)
    app.add_exception_handler(RequestValidationError, _invalid_input)
    return app


async def _invalid_input(_request: Request, error: Exception) -> Response:
    """422 with one entry per problem (FastAPI's shape), worded for the two cases its wording confuses."""
    assert isinstance(error, RequestValidationError)
    problems = []
    for problem in error.errors():
        problem = dict(problem)
        if problem.get("type") == "json_invalid":
            problem["msg"] = f"body is not valid JSON: {problem.get('ctx', {}).get('error', 'cannot parse it')}"
            problem.pop("input", None)
        elif problem.get("type") == "model_attributes_type" and tuple(problem.get("loc", ())) == ("body",):
            problem["msg"] = "expected a JSON object in the body (Content-Type: application/json)"
        problems.append(problem)
    # ASCII-escaped: an input echoed back may hold a lone surrogate (JSON's "\ud800"), which UTF-8 cannot encode.
    body = json.dumps({"detail": jsonable_encoder(problems)}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def runtime_of(request: Request) -> ServiceRuntime:
    """The running service a request arrived at (its database, broker, settings)."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def _probes(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @router.get("/readyz", summary="The database and the broker are reachable", responses={503: {}})
    async def readyz() -> JSONResponse:
        ready, checks = await runtime.readiness()
        body = {"status": "ready" if ready else "unready", "service": runtime.name, "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


class _Flow:
    """Binds the request's correlation and request ids, echoes them, and counts the request."""

    def __init__(self, app: ASGIApp, runtime: ServiceRuntime) -> None:
        self.app = app
        self.metrics = runtime.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name: value for name, value in scope["headers"] if name in (b"x-correlation-id", b"x-request-id")}
        ids: dict[str, str] = {}
        for key, label in _ID_HEADERS:
            given = headers.get(key.encode(), b"").decode("latin-1")
            if given and not _ID_PATTERN.match(given):
                response = _error(422, f"{label} must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'")
                await response(scope, receive, send)
                return
            ids[label] = given or new_id()
        echo = [(label.lower().encode(), value.encode()) for label, value in ids.items()]
        status = 500
        started = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *echo]
            await send(message)

        try:
            with flow_scope(ids["X-Correlation-ID"], causation_id=ids["X-Request-ID"]):
                await self.app(scope, receive, send_with_ids)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.observe_request(scope["method"], path, status, time.perf_counter() - started)


class _BodyLimit:
    """413 for a body over MAX_BODY_BYTES: at once from Content-Length, or as soon as the stream exceeds it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                await _too_large()(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    # An HTTPException, because FastAPI turns any other error raised while it reads the body
                    # into a 400.
                    raise HTTPException(413, _TOO_LARGE)
            return message

        await self.app(scope, counting_receive, send)


_TOO_LARGE = f"request body larger than {MAX_BODY_BYTES} bytes (1 MiB)"


def _too_large() -> JSONResponse:
    return _error(413, _TOO_LARGE)


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)
