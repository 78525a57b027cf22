"""The operator's side of the command line: what the services track, asked over HTTP as the `admin` client."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from skuflow.platform.settings import Settings
from skuflow.service_client import call, client_token, session


async def flows(
    settings: Settings, *, status: str | None, correlation_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """Inventory's orchestrated flows: those of one request, or the newest (of a status), up to `limit`."""
    async with session() as http:
        token = await client_token(http, settings, "admin", settings.admin_secret)
        headers = {"Authorization": f"Bearer {token}"}
        if correlation_id is not None:
            url = f"{settings.inventory_url}/v1/flows/{correlation_id}"
        else:
            query = {"limit": limit} | ({"status": status} if status else {})
            url = f"{settings.inventory_url}/v1/flows?{urlencode(query)}"
        answer = await call(http, "GET", "inventory", "SKUFLOW_INVENTORY_URL", url, headers=headers)
        return list(answer["items"])[:limit]
