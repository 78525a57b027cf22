"""The HTTP side every service shares: one app factory, the same middleware, errors and probes.

- `X-Correlation-ID` and `X-Request-ID`: taken from the request (or generated), echoed on the response,
  and bound as the flow of everything the request does (log lines, published messages: the request id is
  their `causation_id`).
- A body over 1 MiB is refused with 413 before the endpoint sees it.
- Errors are `{"detail": ...}`; invalid input is 422 with one entry per problem, naming its location.
- `/healthz` (alive), `/readyz` (database and broker, 503 otherwise), `/metrics` (Prometheus),
  `/asyncapi.json` (the messaging topology, as `skuflow asyncapi --format json`). `/readyz` tells anyone each
  check's state; its details (counts, errors, hosts) only the admin client's token.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skuflow.messaging import flow_scope, new_id
from skuflow.messaging.asyncapi import document as asyncapi_document
from skuflow.platform import admin, responses, telemetry
from skuflow.platform.auth import authenticated, principal_if_any, require_scope
from skuflow.platform.responses import EVERY_OPERATION, WITH_A_TOKEN
from skuflow.platform.runtime import ServiceRuntime, State

log = logging.getLogger("skuflow.web")
MAX_BODY_BYTES = 1024 * 1024
# What a correlation or request id may be (headers, and a correlation id in a path).
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ID_RULE = "1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'"
is_id = re.compile(ID_PATTERN).fullmatch  # the rule of a correlation or request id
_ID_HEADERS = (("x-correlation-id", "X-Correlation-ID"), ("x-request-id", "X-Request-ID"))


def create_app(runtime: ServiceRuntime, routers: Sequence[APIRouter], *, title: str, description: str) -> FastAPI:
    app = FastAPI(title=title, description=description, version="1", lifespan=runtime.lifespan)
    app.state.runtime = runtime
    for router in [*routers, admin.router, _probes(runtime)]:
        _document_errors(router)
        app.include_router(router)
    app.add_middleware(_BodyLimit)
    app.add_middleware(_Flow, runtime=runtime)
    app.add_exception_handler(RequestValidationError, _invalid_input)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _unstorable_text)
    telemetry.trace_http_server(app, runtime.name)
    return app


def _document_errors(router: APIRouter) -> None:
    """Declare in each operation the errors that every operation, or every one that needs a token, may
    answer, unless it declares them itself: found from its dependencies, so never forgotten."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        common = {**EVERY_OPERATION, **(WITH_A_TOKEN if _needs_token(route.dependant) else {})}
        declared = {str(code) for code in route.responses}
        for code, response in common.items():
            if str(code) not in declared:
                route.responses[code] = response


def _needs_token(dependant: Dependant) -> bool:
    return any(d.call is authenticated or _needs_token(d) for d in dependant.dependencies)


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


async def _http_error(request: Request, error: Exception) -> Response:
    """FastAPI's answer, but for a JSON body that is not UTF-8 text: FastAPI says 400, and invalid input is
    422 everywhere else (found by the API fuzzer)."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
        problem = {"type": "json_invalid", "loc": ["body"], "msg": "body is not valid JSON: it is not UTF-8 text"}
        return JSONResponse({"detail": [problem]}, status_code=422)
    return await http_exception_handler(request, error)


# PostgreSQL's "character not in repertoire": text holding NUL (U+0000), which it cannot store (SQLite can).
_NOT_IN_REPERTOIRE = "22021"


async def _unstorable_text(_request: Request, error: Exception) -> JSONResponse:
    """A last line behind the input models: text that PostgreSQL refuses to store is the client's invalid
    input (422), not a 500 (found by the API fuzzer). Its transaction was rolled back: nothing is recorded.
    Any other database error stays a 500."""
    assert isinstance(error, DBAPIError)
    if getattr(error.orig, "sqlstate", None) != _NOT_IN_REPERTOIRE:
        raise error
    problem = {"type": "string_nul", "loc": ["body"], "msg": "text must not contain the NUL character (U+0000)"}
    return JSONResponse({"detail": [problem]}, status_code=422)


def runtime_of(request: Request) -> ServiceRuntime:
    """The running service a request arrived at (its database, broker, settings)."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def _probes(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @router.get(
        "/readyz",
        summary="The database and the broker are reachable",
        response_model=Readiness,
        responses={
            503: {"model": Readiness, "description": "the database or the broker is unreachable"},
            401: responses.problem("a bearer token was sent and it is not valid"),
            403: responses.problem("a bearer token was sent and it lacks the scope 'admin'"),
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        """Anyone: the overall status and each check's state. With the admin client's token, also `details`
        (counts, errors, hosts), which would tell an attacker too much. 503 only when the database or the
        broker is unreachable; any other trouble is `degraded`, and the service stays ready."""
        admin = await _admin_asks(request)
        ready, checks = await runtime.readiness()
        body: dict[str, Any] = {
            "status": "ready" if ready else "unready",
            "service": runtime.name,
            "checks": {name: check.state for name, check in checks.items()},
        }
        if admin:
            body["details"] = {name: check.details for name, check in checks.items()}
        return JSONResponse(jsonable_encoder(body), status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    asyncapi = asyncapi_document()  # the same for every service, as `skuflow asyncapi` prints it

    @router.get("/asyncapi.json", include_in_schema=False)  # beside /openapi.json, which is not in it either
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(asyncapi)

    return router


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    service: str
    checks: dict[str, State] = Field(description="Each check's state: ok, degraded (the service stays ready) or down")
    details: dict[str, dict[str, Any]] | None = Field(
        None, description="Each check's counts, errors and hosts: only with a token of scope 'admin'"
    )


async def _admin_asks(request: Request) -> bool:
    """Whether the request carries a valid token of scope `admin` (401 or 403 for a token that is not one).
    When the token cannot be checked now (users unreachable, or its own database down), the answer is what
    anyone sees: /readyz's status code must keep saying only whether the database and broker are reachable."""
    try:
        principal = await principal_if_any(request)
    except HTTPException as error:
        if error.status_code != 503:
            raise
        return False
    except Exception as error:  # the users service's own verifier reads its database, which may be down
        log.warning("/readyz cannot verify a token: %r", error)
        return False
    if principal is None:
        return False
    await require_scope("admin")(principal)
    return True


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
            if given and not is_id(given):
                response = _error(422, f"{label} must be {ID_RULE}")
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
