"""The owners of the orchestrated flow's steps (CONTRACT sections 2 and 7): each service performs its
command from the `commands` exchange, idempotently, and replies `step_finished` to `inventory.flow_replies`.
The commands come from the test here, as the orchestrator will send them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from skuflow.catalog.db import products
from skuflow.messaging import COMMANDS, FLOW_ID, FLOW_REPLIES, Envelope, Queue, Topology
from tests.services.conftest import System
from tests.support.waiting import wait_until

REPLIES = "test.observer.flow_replies"  # a copy of every reply: the orchestrator will consume the real queue


@pytest.fixture
async def replies(system: System) -> str:
    await system.observer.declare(Topology((COMMANDS,), (Queue(REPLIES, COMMANDS, binding_key=FLOW_REPLIES),)))
    return REPLIES


async def command(system: System, step: str, flow_id: str | None, **body: Any) -> None:
    headers = {FLOW_ID: flow_id} if flow_id else {}
    envelope = system.observer.envelope(step, body, headers=headers)
    owner = {"recalculate_sku": "inventory", "update_sku_availability": "catalog"}.get(step, "users")
    await system.observer.publish(envelope, COMMANDS.name, f"{owner}.{step}")


async def catalog_availability(system: System, sku: str) -> tuple[bool, int] | None:
    """What catalog holds for a SKU it has no product for (not listed by its API until it has a name)."""
    async with system.catalog.app.state.runtime.db.reading() as session:
        row = (await session.execute(select(products).where(products.c.sku == sku))).first()
    return (row.available, row.availability_revision) if row is not None else None


async def reply_bodies(system: System, queue: str, count: int) -> list[dict[str, Any]]:
    taken: list[Envelope] = []

    async def arrived() -> bool:
        taken.extend(await system.observer.take(queue, count - len(taken)))
        return len(taken) >= count

    await wait_until(arrived, what=f"{count} step_finished replies")
    assert all(reply.type == "step_finished" for reply in taken)
    return [reply.json() for reply in taken]


async def test_each_owner_performs_its_step_and_replies(system: System, replies: str):
    token = await system.client_token()
    report = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-F", "on_hand": 5}]}
    status, _, _ = await system.call("POST", "/v1/stock", token=token, json=report)
    assert status == 202
    user, user_token = await system.sign_up("flo@example.com")
    status, _, _ = await system.call("PUT", f"/v1/users/{user}/wishlist/SKU-G", token=user_token, service="users")
    assert status == 201

    await command(system, "recalculate_sku", "flow-1", sku="SKU-F")
    await command(system, "update_sku_availability", "flow-2", sku="SKU-G", available_for_sale=3, revision=4)
    await command(system, "update_wishlists_for_sku", "flow-3", sku="SKU-G", available_for_sale=3, revision=4)

    bodies = sorted(await reply_bodies(system, replies, 3), key=lambda body: body["flow_id"])
    ok = {"ok": True, "error": None}
    assert bodies == [
        {"flow_id": "flow-1", "sku": "SKU-F", "step": "recalculate_sku", "revision": 1, **ok},
        {"flow_id": "flow-2", "sku": "SKU-G", "step": "update_sku_availability", "revision": 4, **ok},
        {"flow_id": "flow-3", "sku": "SKU-G", "step": "update_wishlists_for_sku", "revision": 4, **ok},
    ]
    assert await catalog_availability(system, "SKU-G") == (True, 4)
    await wait_until(lambda: len(system.smtp.mails) == 1, what="the wishlist email")
    assert list(system.smtp.mails[0].recipients) == ["flo@example.com"]


async def test_a_stale_or_repeated_command_changes_nothing_and_is_answered_again(system: System, replies: str):
    await command(system, "update_sku_availability", "flow-new", sku="SKU-S", available_for_sale=0, revision=2)
    await command(system, "update_sku_availability", "flow-old", sku="SKU-S", available_for_sale=9, revision=1)
    await command(system, "update_sku_availability", "flow-new", sku="SKU-S", available_for_sale=0, revision=2)

    bodies = await reply_bodies(system, replies, 3)
    assert sorted(body["flow_id"] for body in bodies) == ["flow-new", "flow-new", "flow-old"]
    assert await catalog_availability(system, "SKU-S") == (False, 2)


async def test_recalculating_an_unknown_sku_replies_that_it_failed(system: System, replies: str):
    await command(system, "recalculate_sku", "flow-x", sku="NOPE")
    [body] = await reply_bodies(system, replies, 1)
    assert (body["step"], body["ok"], body["error"]) == ("recalculate_sku", False, "unknown SKU 'NOPE'")
