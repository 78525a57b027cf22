"""The warehouse's side: reporting numbers to inventory over HTTP, as the warehouse would."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp

from skuflow.platform.settings import Settings


class WarehouseError(Exception):
    """The report did not go through; the message says why."""


async def push(settings: Settings, warehouse_id: str, sku: str, on_hand: int, as_of: datetime | None) -> dict[str, Any]:
    if settings.warehouse_secret is None:
        raise WarehouseError(
            "no warehouse secret: set SKUFLOW_WAREHOUSE_SECRET, or run `skuflow up` once to generate one "
            f"in {settings.data_dir}/secrets.json"
        )
    report: dict[str, Any] = {"warehouse_id": warehouse_id, "items": [{"sku": sku, "on_hand": on_hand}]}
    if as_of is not None:
        report["as_of"] = as_of.isoformat()
    form = {
        "grant_type": "client_credentials",
        "client_id": "warehouse",
        "client_secret": settings.warehouse_secret.get_secret_value(),
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        try:
            async with http.post(f"{settings.users_url}/v1/auth/token", data=form) as response:
                token = await _json(response, "users (token)")
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            async with http.post(f"{settings.inventory_url}/v1/stock", json=report, headers=headers) as response:
                return await _json(response, "inventory")
        except aiohttp.ClientConnectionError as error:
            raise WarehouseError(f"cannot reach the service: {error}") from None


async def _json(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    body = await response.json(content_type=None)
    if response.status >= 400:
        raise WarehouseError(f"{what} answered {response.status}: {body}")
    return dict(body)
