"""Bounded backpressure above saturation (docs/contract.md, SKUFLOW_MAX_BACKLOG): while inventory's backlog is
at its bound, its writes answer 503 with Retry-After and record nothing, a replay still answers, the service
stays ready; once the backlog drains below the bound, writes are taken again. (The FTP feed's side:
`test_warehouse_feed.py`.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from skuflow.inventory.db import outbox as outbox_table
from skuflow.inventory.service import MIGRATIONS
from skuflow.messaging import Envelope, Outgoing
from skuflow.platform.backpressure import Backpressure
from skuflow.platform.db import Database
from skuflow.platform.metrics import ServiceMetrics
from skuflow.platform.outbox import Outbox
from tests.conftest import Stack
from tests.services.conftest import System
from tests.services.test_metrics import scrape, value
from tests.support.waiting import wait_until

BOUND = 2


@pytest.fixture
def small_bound(stack: Stack) -> None:
    """Inventory takes no more writes once two messages wait in its outbox (or, in orchestration, two flows run)."""
    stack.overrides |= {"max_backlog": BOUND}


def report(sku: str, on_hand: int) -> dict[str, Any]:
    return {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": on_hand}]}


async def post(system: System, body: dict[str, Any], key: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    return await system.call("POST", "/v1/stock", token=await system.client_token(), json=body, headers=headers)


async def seen(system: System, backlog: str = "outbox_messages") -> float:
    """The backlog as inventory's /metrics shows it."""
    return value(await scrape(system, "inventory"), f"skuflow_backlog_{backlog}")


async def at_least(system: System, count: int, backlog: str = "outbox_messages") -> bool:
    return await seen(system, backlog) >= count


async def below(system: System, count: int, backlog: str = "outbox_messages") -> bool:
    return await seen(system, backlog) < count


async def test_at_the_bound_writes_are_503_with_retry_after_and_record_nothing_until_the_outbox_drains(
    small_bound: None, system: System
):
    runtime = system.inventory_runtime
    relay, outbox = runtime.relay, runtime.outbox
    assert relay is not None
    assert outbox is not None
    await relay.stop()  # what is written stays in the outbox, as behind a broker outage
    first = report("SKU-1", 1)
    assert (await post(system, first, key="delivery-1"))[0] == 202
    assert (await post(system, report("SKU-2", 2)))[0] == 202
    await wait_until(lambda: at_least(system, BOUND), what="the backlog counted at its bound")

    status, body, headers = await post(system, report("SKU-3", 3), key="delivery-3")
    assert status == 503
    assert headers["Retry-After"] == "60"  # nothing drains while the relay is stopped: the longest wait
    assert body["detail"] == (
        "the backlog is at its bound (SKUFLOW_MAX_BACKLOG=2): 2 outbox messages wait to be published; "
        "nothing was recorded: retry in 60 s"
    )
    status, body, headers = await system.call(
        "PUT", "/v1/skus/SKU-1", token=await system.client_token(), json={"safety_stock": 1}
    )
    assert (status, headers["Retry-After"]) == (503, "60")
    assert "outbox messages wait to be published" in body["detail"]

    # Nothing recorded: no SKU, no change, no outbox row.
    assert (await system.call("GET", "/v1/skus/SKU-3/availability"))[0] == 404
    status, view, _ = await system.call("GET", "/v1/skus/SKU-1/availability")
    assert (view["safety_stock"], view["revision"]) == (0, 1)
    assert await outbox.pending() == BOUND

    # What records nothing is answered as ever: a replay, the safety stock the SKU has.
    status, body, headers = await post(system, first, key="delivery-1")
    assert (status, body["accepted"], headers["Idempotent-Replayed"]) == (202, 1, "true")
    status, view, _ = await system.call(
        "PUT", "/v1/skus/SKU-1", token=await system.client_token(), json={"safety_stock": 0}
    )
    assert (status, view["revision"]) == (200, 1)
    assert await outbox.pending() == BOUND

    # Ready all along (readiness is the database and the broker); the backlog shows, and the refusals count.
    status, body, _ = await system.call("GET", "/readyz", token=await system.admin_token())
    assert (status, body["checks"]["backlog"]) == (200, "degraded")
    backlog = body["details"]["backlog"]
    assert (backlog["bound"], backlog["outbox_messages"], backlog["retry_after"], backlog["refused"]) == (2, 2, 60, 2)
    metrics = await scrape(system, "inventory")
    refused = "skuflow_backpressure_refused_total"
    assert value(metrics, refused, method="POST", route="/v1/stock") == 1
    assert value(metrics, refused, method="PUT", route="/v1/skus/{sku}") == 1

    relay.start()
    await wait_until(lambda: below(system, BOUND), what="the backlog counted below its bound")
    status, body, _ = await post(system, report("SKU-3", 3), key="delivery-3")
    assert (status, body["accepted"]) == (202, 1)
    status, view, _ = await system.call("GET", "/v1/skus/SKU-3/availability")
    assert view["on_hand"] == 3
    status, body, _ = await system.call("GET", "/readyz")
    assert body["checks"]["backlog"] == "ok"
    assert sorted(event.json()["sku"] for event in await system.published()) == ["SKU-1", "SKU-2", "SKU-3"]


@pytest.mark.parametrize("mode", ["orchestration"])
async def test_in_orchestration_the_running_flows_are_held_to_the_bound_too(small_bound: None, system: System):
    """The relay hands the commands on at once, so the outbox drains; the flows, stuck behind a catalog that
    is down, are the backlog."""
    from skuflow.catalog.service import build_app as catalog_app
    from tests.support.servers import serve

    await system.catalog.stop()
    assert (await post(system, report("SKU-A", 1)))[0] == 202
    assert (await post(system, report("SKU-B", 2)))[0] == 202
    await wait_until(lambda: at_least(system, BOUND, "running_flows"), what="two flows counted running")

    status, body, headers = await post(system, report("SKU-C", 3))
    assert (status, headers["Retry-After"]) == (503, "60")  # no flow has ended in the last seconds
    assert "2 flows are running" in body["detail"]
    assert (await system.call("GET", "/v1/skus/SKU-C/availability"))[0] == 404

    system.catalog = await serve(catalog_app(system.inventory_runtime.settings))
    await wait_until(lambda: below(system, BOUND, "running_flows"), what="the flows ended, catalog back")
    assert (await post(system, report("SKU-C", 3)))[0] == 202
    await wait_until(lambda: system.catalog_knows("SKU-C", 1), what="the third flow to reach catalog")


async def test_retry_after_is_the_excess_at_the_rate_the_relay_drained_lately_and_zero_is_no_bound(stack: Stack):
    """Six messages wait, counted up to 4 (twice the bound, 2): 3 over the bound, at the rate of the 5 the
    relay published in the last 5 s, is 3 s."""
    db = Database(stack.database_urls["inventory"], MIGRATIONS)
    await db.migrate()
    outbox = Outbox(db, outbox_table)
    backpressure = Backpressure(db, BOUND, [outbox.backlog()], ServiceMetrics("inventory"))
    try:
        envelopes = [Envelope.new("sku_processed", {"sku": f"SKU-{n}"}, app_id="inventory") for n in range(11)]
        messages = [Outgoing(envelope, "sku_processed") for envelope in envelopes]
        async with db.transaction() as session:
            await outbox.add_many(session, messages)
            published = datetime.now(UTC) - timedelta(seconds=1)
            ids = [message.envelope.message_id for message in messages[:5]]
            table = outbox_table.c
            await session.execute(update(outbox_table).where(table.message_id.in_(ids)).values(published_at=published))
        await backpressure.refresh()

        saturated = backpressure.saturated()
        assert saturated is not None
        assert saturated.retry_after == 3
        assert str(saturated) == (
            "the backlog is at its bound (SKUFLOW_MAX_BACKLOG=2): 4+ outbox messages wait to be published"
        )
        unbounded = Backpressure(db, 0, [outbox.backlog()], ServiceMetrics("inventory"))
        await unbounded.refresh()
        assert (unbounded.saturated(), unbounded.counted_at) == (None, None)  # 0: no bound, nothing counted
    finally:
        await db.close()
