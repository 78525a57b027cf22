"""Calling the services' HTTP APIs as a client (`warehouse push`, `flows`, `dlq`, `compare`'s driver): a
client's token from users, asked once and kept; JSON answers; every page of a list; waiting until a
condition holds; and every failure turned into one readable line."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp

from skuflow.platform.secrets import secrets_file
from skuflow.platform.settings import Settings

SECONDS = 15.0  # per request, all told
UP_HINT = "is `skuflow up` running?"


class ServiceError(Exception):
    """The request did not go through; the message says why. `retry_after`: the seconds a 503 asked to wait
    before sending it again (backpressure), else None."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceClient:
    """The services of one system (their URLs from `settings`), called over one HTTP session. A client id
    (`warehouse`, `admin`) authenticates with its secret from the settings (`warehouse_secret`, ...)."""

    def __init__(self, http: aiohttp.ClientSession, settings: Settings, hint: str = UP_HINT) -> None:
        self.http = http
        self.settings = settings
        self.hint = hint  # added to "cannot reach ...": what to check
        self._tokens: dict[str, str] = {}

    async def token(self, client_id: str) -> str:
        """A token of the client `client_id` (OAuth 2.0 client credentials) from SKUFLOW_USERS_URL, kept."""
        if client_id not in self._tokens:
            secret = getattr(self.settings, f"{client_id}_secret")
            if secret is None:
                raise ServiceError(
                    f"no {client_id} secret: SKUFLOW_{client_id.upper()}_SECRET is unset and "
                    f"{secrets_file(self.settings).resolve()} does not exist (run from the directory where "
                    "`skuflow up` ran, or set SKUFLOW_DATA_DIR)"
                )
            form = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret.get_secret_value(),
            }
            answer = await self.call("POST", "users", "/v1/auth/token", data=form)
            self._tokens[client_id] = str(answer["access_token"])
        return self._tokens[client_id]

    async def call(
        self, method: str, service: str, path: str, *, as_client: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """One request to `service` (inventory, catalog, users), as the client `as_client` if given; its
        JSON answer, or `ServiceError` naming the service, its setting and the problem."""
        if as_client is not None:
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {await self.token(as_client)}"}
        base: str = getattr(self.settings, f"{service}_url")
        return await call(
            self.http, method, service, f"SKUFLOW_{service.upper()}_URL", f"{base}{path}", self.hint, **kwargs
        )

    async def all(
        self, service: str, path: str, *, as_client: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Every item of a paged list (`items`, `next_cursor`), page by page; `path` may have a query."""
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": limit}
        joint = "&" if "?" in path else "?"
        while True:
            page = await self.call("GET", service, f"{path}{joint}{urlencode(query)}", as_client=as_client)
            items += page["items"]
            if page["next_cursor"] is None:
                return items
            query["cursor"] = page["next_cursor"]


@contextlib.asynccontextmanager
async def connected(settings: Settings, seconds: float = SECONDS, hint: str = UP_HINT) -> AsyncIterator[ServiceClient]:
    """A `ServiceClient` over a session of its own (each request bounded by `seconds`), closed after."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as http:
        yield ServiceClient(http, settings, hint)


async def until(
    condition: Callable[[], Awaitable[object]],
    what: str,
    within: float,
    every: float = 0.05,
    error: Callable[[str], Exception] = TimeoutError,
) -> None:
    """Ask `condition` every `every` seconds until it holds; past `within` seconds, raise `error`."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise error(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def call(
    http: aiohttp.ClientSession, method: str, service: str, setting: str, url: str, hint: str = UP_HINT, **kwargs: Any
) -> dict[str, Any]:
    """One request; its JSON answer (empty for none), or `ServiceError` naming the service, the setting and
    the problem."""
    try:
        async with http.request(method, url, **kwargs) as response:
            body = await response.json(content_type=None)
            status = response.status
            retry_after = _seconds(response.headers.get("Retry-After")) if status == 503 else None
    except aiohttp.ClientConnectionError as error:
        reason = error.os_error.strerror if isinstance(error, aiohttp.ClientConnectorError) else str(error)
        where = url.split("/v1/")[0]
        raise ServiceError(
            f"cannot reach {service} at {where} ({setting}): {reason}" + (f"; {hint}" if hint else "")
        ) from None
    if status >= 400:
        raise ServiceError(f"{service} refused the request ({status}): {explain(body)}", retry_after)
    return dict(body) if body is not None else {}


def _seconds(value: str | None) -> float | None:
    """A `Retry-After` in seconds (the form the services send; an HTTP date is not), else None."""
    try:
        return float(value) if value is not None and value.isdigit() else None
    except ValueError:
        return None


def explain(body: Any) -> str:
    """An error body as one readable line: `items[0].on_hand: Input should be ... (got -5)`."""
    detail = body.get("detail", body.get("error_description", body)) if isinstance(body, dict) else body
    if not isinstance(detail, list):
        return str(detail)
    lines = []
    for problem in detail:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem.get("loc", [])[1:])
        got = f" (got {problem['input']!r})" if "input" in problem else ""
        lines.append(f"{where.lstrip('.') or 'body'}: {problem.get('msg')}{got}")
    return "; ".join(lines)
