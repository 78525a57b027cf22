"""Catalog, the obvious way: on `sku_processed`, ask inventory and store the product's availability; and the
product list the bench watches (keyset pages of `items` and `next_cursor`, as skuflow's)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from skuflow.bench.raw.common import POOL, SETTINGS, Bus, aio_pika_bus, application, get_json
from skuflow.bench.raw.settings import Settings

QUEUE = "catalog.sku_processed"
SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku text PRIMARY KEY, name text NOT NULL, price numeric NOT NULL, available boolean NOT NULL DEFAULT false,
    availability_revision integer NOT NULL DEFAULT 0, availability_checked_at timestamptz,
    updated_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS ix_products_available ON products (available, sku);
"""
STORE = """
UPDATE products SET available = $2, availability_revision = $3, availability_checked_at = now(), updated_at = now()
WHERE sku = $1 AND availability_revision < $3
"""
MAX_PAGE = 500


def app(settings: Settings, bus: Bus = aio_pika_bus) -> web.Application:
    result = application(settings, SCHEMA, bus, (QUEUE, on_sku_processed))
    result.router.add_get("/v1/products", list_products)
    result.router.add_get("/v1/products/{sku}", get_product)
    return result


async def on_sku_processed(app: web.Application, sku: str) -> None:
    answer = await get_json(app, f"{app[SETTINGS].inventory_url}/v1/skus/{sku}/availability")
    await app[POOL].execute(STORE, sku, answer["available"], answer["revision"])


async def list_products(request: web.Request) -> web.Response:
    query = request.query
    limit = min(int(query.get("limit", "100")), MAX_PAGE)
    available = {"true": True, "false": False}.get(query.get("available", ""))
    rows = await request.app[POOL].fetch(
        "SELECT sku, name, available, availability_revision, availability_checked_at FROM products"
        " WHERE ($1::boolean IS NULL OR available = $1) AND sku > $2 ORDER BY sku LIMIT $3",
        available,
        query.get("cursor", ""),
        limit,
    )
    items = [{**dict(row), "availability_checked_at": _iso(row["availability_checked_at"])} for row in rows]
    return web.json_response({"items": items, "next_cursor": items[-1]["sku"] if len(items) == limit else None})


async def get_product(request: web.Request) -> web.Response:
    sku = request.match_info["sku"]
    row = await request.app[POOL].fetchrow("SELECT sku, name, available FROM products WHERE sku = $1", sku)
    if row is None:
        return web.json_response({"detail": f"no product {sku}"}, status=404)
    return web.json_response(dict(row))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
