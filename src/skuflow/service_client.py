"""Calling the services from the command line (`warehouse push`, `flows`): a client's token from users,
then JSON, with every failure turned into one readable line."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import SecretStr

from skuflow.platform.secrets import secrets_file
from skuflow.platform.settings import Settings

TIMEOUT = aiohttp.ClientTimeout(total=15)


class ServiceError(Exception):
    """The request did not go through; the message says why."""


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=TIMEOUT)


async def client_token(
    http: aiohttp.ClientSession, settings: Settings, client_id: str, secret: SecretStr | None
) -> str:
    """A token of the client `client_id` (OAuth 2.0 client credentials) from SKUFLOW_USERS_URL."""
    if secret is None:
        raise ServiceError(
            f"no {client_id} secret: SKUFLOW_{client_id.upper()}_SECRET is unset and "
            f"{secrets_file(settings).resolve()} does not exist (run from the directory where `skuflow up` ran, "
            "or set SKUFLOW_DATA_DIR)"
        )
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret.get_secret_value()}
    answer = await call(http, "POST", "users", "SKUFLOW_USERS_URL", f"{settings.users_url}/v1/auth/token", data=form)
    return str(answer["access_token"])


async def call(
    http: aiohttp.ClientSession, method: str, service: str, setting: str, url: str, **kwargs: Any
) -> dict[str, Any]:
    """One request; its JSON answer, or `ServiceError` naming the service, the setting and the problem."""
    try:
        async with http.request(method, url, **kwargs) as response:
            body = await response.json(content_type=None)
            status = response.status
    except aiohttp.ClientConnectionError as error:
        reason = error.os_error.strerror if isinstance(error, aiohttp.ClientConnectorError) else str(error)
        raise ServiceError(
            f"cannot reach {service} at {url.split('/v1/')[0]} ({setting}): {reason}; is `skuflow up` running?"
        ) from None
    if status >= 400:
        raise ServiceError(f"{service} refused the request ({status}): {explain(body)}")
    return dict(body)


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
