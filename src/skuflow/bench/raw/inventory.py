"""Inventory, the obvious way: a stock report in one transaction, then one `sku_processed` per changed SKU."""

from __future__ import annotations

from aiohttp import web

from skuflow.bench.raw.common import POOL, PUBLISH, SETTINGS, Bus, aio_pika_bus, application
from skuflow.bench.raw.settings import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock_levels (
    warehouse_id text NOT NULL, sku text NOT NULL, on_hand integer NOT NULL, updated_at timestamptz NOT NULL,
    PRIMARY KEY (warehouse_id, sku));
CREATE TABLE IF NOT EXISTS skus (
    sku text PRIMARY KEY, on_hand bigint NOT NULL, safety_stock integer NOT NULL DEFAULT 0,
    available_for_sale bigint NOT NULL, revision integer NOT NULL, updated_at timestamptz NOT NULL);
"""
UPSERT_LEVEL = """
INSERT INTO stock_levels (warehouse_id, sku, on_hand, updated_at) VALUES ($1, $2, $3, now())
ON CONFLICT (warehouse_id, sku) DO UPDATE SET on_hand = excluded.on_hand, updated_at = now()
"""
# The SKU's total over its warehouses; a new revision only when the total changed (RETURNING says so).
UPSERT_TOTAL = """
INSERT INTO skus (sku, on_hand, available_for_sale, revision, updated_at)
SELECT $1, sum(on_hand), greatest(sum(on_hand), 0), 1, now() FROM stock_levels WHERE sku = $1
ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand,
    available_for_sale = greatest(excluded.on_hand - skus.safety_stock, 0),
    revision = skus.revision + 1, updated_at = now()
WHERE skus.on_hand <> excluded.on_hand
RETURNING sku
"""


def app(settings: Settings, bus: Bus = aio_pika_bus) -> web.Application:
    result = application(settings, SCHEMA, bus)
    result.router.add_post("/v1/stock", post_stock)
    result.router.add_get("/v1/skus/{sku}/availability", get_availability)
    return result


async def post_stock(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != f"Bearer {request.app[SETTINGS].token}":
        return web.json_response({"detail": "unauthorized"}, status=401)
    report = await request.json()
    warehouse = report["warehouse_id"]
    items = sorted(report["items"], key=lambda item: item["sku"])  # rows locked in one order: no deadlock
    changed = []
    async with request.app[POOL].acquire() as connection, connection.transaction():
        for item in items:
            await connection.execute(UPSERT_LEVEL, warehouse, item["sku"], item["on_hand"])
            if await connection.fetchval(UPSERT_TOTAL, item["sku"]) is not None:
                changed.append(item["sku"])
    for sku in changed:  # after the commit: a crash here loses the event (no outbox)
        await request.app[PUBLISH](sku)
    return web.json_response({"accepted": len(items), "changed": len(changed)})


async def get_availability(request: web.Request) -> web.Response:
    sku = request.match_info["sku"]
    row = await request.app[POOL].fetchrow("SELECT on_hand, available_for_sale, revision FROM skus WHERE sku = $1", sku)
    if row is None:
        return web.json_response({"detail": f"no SKU {sku}"}, status=404)
    available = row["available_for_sale"] > 0
    return web.json_response({"sku": sku, **dict(row), "available": available})
