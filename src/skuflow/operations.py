"""The operator's side of the command line: the flows inventory tracks and the dead letters, asked as the
`admin` client (or, for dead letters on RabbitMQ, read from the broker itself)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from skuflow.messaging import create_broker
from skuflow.messaging.dead_letters import WORK_QUEUES, check_queue
from skuflow.messaging.dead_letters import dead_letters as read_dead_letters
from skuflow.platform.settings import Settings, without_password
from skuflow.service_client import ServiceError, call, client_token, session


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


async def dead_letters(settings: Settings, queue: str | None) -> tuple[dict[str, Any], str]:
    """The dead letters per work queue, and where they were read: RabbitMQ itself, or (`memory://`) the
    running `skuflow up`, whose process holds them."""
    queues = (check_queue(queue),) if queue else WORK_QUEUES
    if settings.broker_url.startswith("memory://"):
        query = f"?{urlencode({'queue': queues[0]})}" if queue else ""
        answer = await _ask_admin(settings, "GET", f"/v1/admin/dead-letters{query}")
        return dict(answer["queues"]), _asked_up(settings)
    async with create_broker(settings.broker_url, "skuflow-dlq", settings.broker_options()) as broker:
        return await read_dead_letters(broker, queues), without_password(settings.broker_url)


async def replay(settings: Settings, queue: str, message_id: str | None) -> tuple[int, str]:
    """Put dead letters back on their work queue (all, or one); answers how many, and where."""
    name = check_queue(queue)
    if settings.broker_url.startswith("memory://"):
        query = f"?{urlencode({'message_id': message_id})}" if message_id else ""
        answer = await _ask_admin(settings, "POST", f"/v1/admin/dead-letters/{name}/replay{query}")
        return int(answer["replayed"]), _asked_up(settings)
    async with create_broker(settings.broker_url, "skuflow-dlq", settings.broker_options()) as broker:
        replayed = await broker.replay(name, message_id)
    if message_id is not None and replayed == 0:
        raise ServiceError(f"no dead letter {message_id!r} in {name}.dlq")
    return replayed, without_password(settings.broker_url)


async def _ask_admin(settings: Settings, method: str, path: str) -> dict[str, Any]:
    async with session() as http:
        token = await client_token(http, settings, "admin", settings.admin_secret)
        url = f"{settings.inventory_url}{path}"
        headers = {"Authorization": f"Bearer {token}"}
        return await call(http, method, "inventory", "SKUFLOW_INVENTORY_URL", url, headers=headers)


def _asked_up(settings: Settings) -> str:
    return f"the running skuflow up at {settings.inventory_url}: with memory:// the dead letters live in its process"


async def reconcile(settings: Settings) -> list[dict[str, Any]]:
    """Ask catalog and users to re-check every SKU against inventory now; their reports."""
    reports = []
    async with session() as http:
        token = await client_token(http, settings, "admin", settings.admin_secret)
        headers = {"Authorization": f"Bearer {token}"}
        for service in ("catalog", "users"):
            base = getattr(settings, f"{service}_url")
            url = f"{base}/v1/admin/reconcile?older_than_seconds=0"
            setting = f"SKUFLOW_{service.upper()}_URL"
            reports.append(await call(http, "POST", service, setting, url, headers=headers))
    return reports
