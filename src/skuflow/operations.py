"""The operator's side of the command line: what the services track, asked over HTTP as the `admin` client."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from skuflow.platform.settings import Settings
from skuflow.service_client import call, client_token, session


async def flows(
    settings: Settings, *, status: str | None, correlation_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """Inventory's orchestrated flows, up to `limit`: those one request started (oldest first), or the
    newest ones, of a status if given."""
    async with session() as http:
        token = await client_token(http, settings, "admin", settings.admin_secret)
        headers = {"Authorization": f"Bearer {token}"}
        query: dict[str, Any] = {"limit": limit}
        if correlation_id is not None:
            url = f"{settings.inventory_url}/v1/flows/{quote(correlation_id, safe='')}?{urlencode(query)}"
        else:
            query |= {"status": status} if status else {}
            url = f"{settings.inventory_url}/v1/flows?{urlencode(query)}"
        answer = await call(http, "GET", "inventory", "SKUFLOW_INVENTORY_URL", url, headers=headers)
        return list(answer["items"])
