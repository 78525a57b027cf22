"""The operator's side of the command line: the flows inventory tracks, the dead letters, reconciliation and
users' signing keys, asked as the `admin` client (or, for dead letters on RabbitMQ, read from the broker
itself)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from rich.table import Table

from skuflow.messaging import create_broker
from skuflow.messaging.dead_letters import WORK_QUEUES, check_queue
from skuflow.messaging.dead_letters import dead_letters as read_dead_letters
from skuflow.platform.settings import Settings, without_password
from skuflow.service_client import ServiceError, connected


async def flows(
    settings: Settings, *, status: str | None, correlation_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """Inventory's orchestrated flows, up to `limit`: those one request started (oldest first), or the
    newest ones, of a status if given."""
    query: dict[str, Any] = {"limit": limit}
    if correlation_id is not None:
        path = f"/v1/flows/{quote(correlation_id, safe='')}?{urlencode(query)}"
    else:
        query |= {"status": status} if status else {}
        path = f"/v1/flows?{urlencode(query)}"
    async with connected(settings) as client:
        answer = await client.call("GET", "inventory", path, as_client="admin")
        return list(answer["items"])


FLOW_STATUSES = ("running", "completed", "failed", "superseded")
NO_FLOWS = (
    "No flows: inventory starts one per SKU a report changes, and only in SKUFLOW_MODE=orchestration "
    "(choreography has none)."
)


def flows_table(found: list[dict[str, Any]], *, oldest_first: bool) -> Table:
    """The flows as `skuflow flows` shows them: one row each, its steps marked by status."""
    table = Table(title=f"flows ({len(found)}, {'oldest first' if oldest_first else 'newest first'})")
    for column in ("flow", "correlation id", "sku", "rev", "status", "steps (attempts)", "started", "error"):
        table.add_column(column, overflow="fold")  # whole ids, folded onto more lines when narrow
    marks = {"done": "[green]done[/]", "pending": "[yellow]pending[/]", "failed": "[red]failed[/]"}
    for flow in found:
        steps = ", ".join(f"{s['step']} {marks[s['status']]} ({s['attempts']})" for s in flow["steps"])
        started = flow["started_at"][:19].replace("T", " ")
        row = (flow["flow_id"], flow["correlation_id"], flow["sku"], str(flow["revision"]), flow["status"])
        table.add_row(*row, steps, started, flow["error"] or "")
    return table


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


def dead_letters_table(queues: dict[str, Any], where: str) -> Table:
    """The dead letters as `skuflow dlq list` shows them: per queue its count, then one row per letter."""
    table = Table(title=f"dead letters ({where})")
    for column in ("queue", "count", "message id", "type", "reason", "attempts", "age"):
        table.add_column(column, justify="right" if column in ("count", "attempts", "age") else "left")
    for name, found in queues.items():
        if not found["count"]:
            table.add_row(name, "0", "", "", "", "", "")
        for n, letter in enumerate(found["letters"]):
            first = n == 0
            table.add_row(
                name if first else "",
                str(found["count"]) if first else "",
                letter["message_id"],
                letter["type"],
                letter["reason"],
                str(letter["attempts"]),
                f"{letter['age_seconds']:.0f} s",
            )
    return table


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
    async with connected(settings) as client:
        return await client.call(method, "inventory", path, as_client="admin")


def _asked_up(settings: Settings) -> str:
    return f"the running skuflow up at {settings.inventory_url}: with memory:// the dead letters live in its process"


async def reconcile(settings: Settings) -> list[dict[str, Any]]:
    """Ask catalog and users to re-check every SKU against inventory now; their reports."""
    async with connected(settings) as client:
        path = "/v1/admin/reconcile?older_than_seconds=0"
        return [await client.call("POST", service, path, as_client="admin") for service in ("catalog", "users")]


async def rotate_signing_key(settings: Settings) -> tuple[str, list[str]]:
    """Have users make a new signing key: (its key id, the ids of the keys it retired, which still verify
    until their tokens expire)."""
    async with connected(settings) as client:
        answer = await client.call("POST", "users", "/v1/admin/signing-keys/rotate", as_client="admin")
    try:
        return str(answer["kid"]), [str(kid) for kid in answer["retired"]]
    except (KeyError, TypeError) as error:
        raise ServiceError(f"users answered a key rotation without its fields ({error}): {answer!r}") from None
