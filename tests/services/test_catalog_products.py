"""Catalog end to end: real HTTP, real users and inventory, on both stacks (CONTRACT sections 3, 7)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from skuflow.catalog.consumers import CatalogConsumers, store_availability
from skuflow.catalog.db import products
from skuflow.catalog.messages import SkuProcessed
from skuflow.messaging import Envelope, Message
from skuflow.messaging.routes import SKU_PROCESSED
from skuflow.platform.availability import InventoryAvailability
from skuflow.platform.flows import StepReplies
from skuflow.platform.runtime import ServiceRuntime
from tests.services.conftest import System
from tests.support.waiting import wait_until

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
MUG = {"name": "Blue mug", "price": "19.90"}


@dataclass
class Catalog:
    """The system's catalog service, and what its tests do with it."""

    system: System

    @property
    def runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.system.catalog.app.state.runtime
        return runtime

    @property
    def consumers(self) -> CatalogConsumers:
        """Catalog's handlers, over the running catalog's database and the running inventory."""
        runtime = self.runtime
        inventory = InventoryAvailability(runtime.settings.inventory_url, lambda: runtime.http)
        return CatalogConsumers(runtime.db, inventory, StepReplies("catalog", runtime.broker.publish_many))

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        return await self.system.call(method, path, service="catalog", **kwargs)

    async def put(self, sku: str, product: Any = MUG) -> tuple[int, Any]:
        status, body, _ = await self.call(
            "PUT", f"/v1/products/{sku}", token=await self.system.admin_token(), json=product
        )
        return status, body

    async def get(self, sku: str) -> tuple[int, Any]:
        status, body, _ = await self.call("GET", f"/v1/products/{sku}")
        return status, body

    async def report_stock(self, as_of: datetime, **items: int) -> None:
        """A report from the warehouse to inventory (`SKU_1=3`: SKU-1 has 3 on hand)."""
        body = {
            "warehouse_id": "WH-1",
            "as_of": as_of.isoformat(),
            "items": [{"sku": sku.replace("_", "-"), "on_hand": n} for sku, n in items.items()],
        }
        status, answer, _ = await self.system.call(
            "POST", "/v1/stock", token=await self.system.client_token(), json=body
        )
        assert status == 202, answer

    async def wait_for_revision(self, sku: str, revision: int) -> None:
        """Until catalog stores inventory's `revision` for `sku` (read from its database: the SKU may not be
        a product yet)."""

        async def caught_up() -> bool:
            async with self.runtime.db.reading() as session:
                stored = await session.scalar(select(products.c.availability_revision).where(products.c.sku == sku))
            return stored == revision

        await wait_until(caught_up, what=f"catalog to learn revision {revision} of {sku}")


@pytest.fixture
def catalog(system: System) -> Catalog:
    return Catalog(system)


# Input checks and authentication do not depend on the broker or the database: the embedded stack suffices.
embedded_only = pytest.mark.parametrize("stack", ["embedded"], indirect=True)


async def test_a_product_is_created_replaced_and_read_back_and_an_unknown_one_is_404(catalog: Catalog):
    status, body = await catalog.put("SKU-1", {"name": "Blue mug", "price": "19.9"})
    expected = {
        "sku": "SKU-1",
        "name": "Blue mug",
        "price": "19.90",
        "available": False,
        "availability_revision": 0,
        "availability_checked_at": None,
    }
    assert (status, body) == (200, expected)
    assert await catalog.get("SKU-1") == (200, expected)

    status, body = await catalog.put("SKU-1", {"name": "Red mug", "price": "9999999999.99"})
    assert (status, body["name"], body["price"]) == (200, "Red mug", "9999999999.99"), "exact, however large"
    assert await catalog.get("SKU-1") == (200, body)

    assert await catalog.get("NOPE-1") == (404, {"detail": "unknown product 'NOPE-1'"})
    assert (await catalog.get("bad%20sku"))[0] == 422


BAD_PRODUCTS = {
    "price as a JSON number": ({"name": "Mug", "price": 19.9}, ["body", "price"]),
    "price as a JSON integer": ({"name": "Mug", "price": 20}, ["body", "price"]),
    "negative price": ({"name": "Mug", "price": "-1.00"}, ["body", "price"]),
    "three decimals": ({"name": "Mug", "price": "19.999"}, ["body", "price"]),
    "price not a number": ({"name": "Mug", "price": "cheap"}, ["body", "price"]),
    "eleven integer digits": ({"name": "Mug", "price": "10000000000"}, ["body", "price"]),
    "no price": ({"name": "Mug"}, ["body", "price"]),
    "blank name": ({"name": "   ", "price": "1.00"}, ["body", "name"]),
    "name too long": ({"name": "x" * 201, "price": "1.00"}, ["body", "name"]),
    **{
        f"name with {character!r}": ({"name": f"Blue{character}mug", "price": "1.00"}, ["body", "name"])
        for character in ("\n", "\r", "\v", "\x85", "\u2028", "\u2029", "\x00", "\ud800")
    },
    "an unknown field": ({"name": "Mug", "price": "1.00", "colour": "blue"}, ["body", "colour"]),
}


@embedded_only
async def test_a_bad_product_is_422_naming_the_field_and_changes_nothing(catalog: Catalog):
    await catalog.put("SKU-1")
    for case, (product, location) in BAD_PRODUCTS.items():
        for sku in ("SKU-1", "SKU-2"):  # a replacement and a creation
            status, body = await catalog.put(sku, product)
            assert status == 422, case
            assert location in [problem["loc"] for problem in body["detail"]], (case, body)
    assert (await catalog.get("SKU-1"))[1] | {"availability_checked_at": None} == {
        "sku": "SKU-1",
        "name": "Blue mug",
        "price": "19.90",
        "available": False,
        "availability_revision": 0,
        "availability_checked_at": None,
    }
    assert (await catalog.get("SKU-2"))[0] == 404
    assert (await catalog.put("bad%20sku"))[0] == 422


@embedded_only
async def test_writing_a_product_needs_the_catalog_write_scope(catalog: Catalog):
    status, body, headers = await catalog.call("PUT", "/v1/products/SKU-1", json=MUG)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await catalog.call("PUT", "/v1/products/SKU-1", token="not-a-token", json=MUG)
    assert status == 401
    status, body, _ = await catalog.call(
        "PUT", "/v1/products/SKU-1", token=await catalog.system.client_token(), json=MUG
    )
    assert status == 403
    assert "catalog:write" in body["detail"]
    user = await catalog.system.user_token()
    status, _, _ = await catalog.call("PUT", "/v1/products/SKU-1", token=user, json=MUG)
    assert status == 403
    assert (await catalog.get("SKU-1"))[0] == 404, "a refused write changes nothing"
    assert (await catalog.put("SKU-1"))[0] == 200, "the admin client has every scope"


async def test_stock_reports_make_a_product_available_then_unavailable_at_inventory_s_revision(catalog: Catalog):
    await catalog.put("SKU-1")
    await catalog.report_stock(T0, SKU_1=3, SKU_2=4)  # SKU-2 is not a product yet
    await catalog.wait_for_revision("SKU-1", 1)

    _, product = await catalog.get("SKU-1")
    assert (product["available"], product["availability_revision"]) == (True, 1)
    checked_at = datetime.fromisoformat(product["availability_checked_at"])
    assert abs(checked_at - datetime.now(UTC)) < timedelta(minutes=1)
    _, inventory, _ = await catalog.system.call("GET", "/v1/skus/SKU-1/availability")
    assert inventory["revision"] == product["availability_revision"]

    await catalog.report_stock(T0 + timedelta(minutes=1), SKU_1=0)
    await catalog.wait_for_revision("SKU-1", 2)
    _, product = await catalog.get("SKU-1")
    assert (product["available"], product["availability_revision"]) == (False, 2)
    assert (product["name"], product["price"]) == ("Blue mug", "19.90"), "availability leaves the product alone"

    # Availability learned before the product exists waits for it, unseen until then.
    await catalog.wait_for_revision("SKU-2", 1)
    assert (await catalog.get("SKU-2"))[0] == 404, "a SKU without a name is not a product yet"
    _, listing, _ = await catalog.call("GET", "/v1/products")
    assert [item["sku"] for item in listing["items"]] == ["SKU-1"]
    _, product = await catalog.put("SKU-2", {"name": "Green mug", "price": "5"})
    assert (product["available"], product["availability_revision"]) == (True, 1)


async def test_products_are_listed_page_by_page_and_filtered_by_availability_or_sku(catalog: Catalog):
    for sku in ("A-1", "A-2", "A-3", "A-4", "A-5"):
        await catalog.put(sku, {"name": f"Product {sku}", "price": "1.50"})
    await catalog.report_stock(T0, A_2=1, A_4=2, A_5=0)
    for sku in ("A-2", "A-4", "A-5"):
        await catalog.wait_for_revision(sku, 1)

    async def every_page(**params: str) -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            query = {"limit": "2", **params, **({"cursor": cursor} if cursor else {})}
            status, page, _ = await catalog.call("GET", "/v1/products", params=query)
            assert status == 200, page
            assert len(page["items"]) <= 2
            seen += [item["sku"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen
        raise AssertionError("too many pages")

    assert await every_page() == ["A-1", "A-2", "A-3", "A-4", "A-5"]
    assert await every_page(available="true") == ["A-2", "A-4"]
    assert await every_page(available="false") == ["A-1", "A-3", "A-5"]
    _, page, _ = await catalog.call("GET", "/v1/products", params={"limit": "1"})
    assert page["items"] == [
        {
            "sku": "A-1",
            "name": "Product A-1",
            "price": "1.50",
            "available": False,
            "availability_revision": 0,
            "availability_checked_at": None,
        }
    ]
    by_sku = [("sku", "A-4"), ("sku", "A-1"), ("sku", "NOPE"), ("sku", "A-4")]
    _, page, _ = await catalog.call("GET", "/v1/products", params=by_sku)
    assert [item["sku"] for item in page["items"]] == ["A-1", "A-4"], "only those asked, once each, by SKU"
    _, page, _ = await catalog.call("GET", "/v1/products", params=[*by_sku, ("available", "true")])
    assert [item["sku"] for item in page["items"]] == ["A-4"]
    for bad in ({"cursor": "%%%"}, {"limit": "0"}, {"limit": "501"}, {"available": "maybe"}, {"sku": "A 1"}):
        status, _, _ = await catalog.call("GET", "/v1/products", params=bad)
        assert status == 422, bad


def sku_processed(sku: str) -> Message[SkuProcessed]:
    envelope = Envelope.new(SKU_PROCESSED.name, SkuProcessed(sku=sku), app_id="inventory")
    return Message(SkuProcessed(sku=sku), envelope, attempt=1)


async def test_an_older_revision_arriving_late_never_overwrites_a_newer_one(catalog: Catalog):
    await catalog.put("SKU-1")
    await catalog.report_stock(T0, SKU_1=5)  # revision 1: available
    await catalog.report_stock(T0 + timedelta(minutes=1), SKU_1=0)  # revision 2: not available

    await catalog.consumers.mark_availability([sku_processed("SKU-1")])
    _, product = await catalog.get("SKU-1")
    assert (product["available"], product["availability_revision"]) == (False, 2)

    late = await store_availability(catalog.runtime.db, "SKU-1", available=True, revision=1)
    same = await store_availability(catalog.runtime.db, "SKU-1", available=True, revision=2)
    await catalog.consumers.mark_availability([sku_processed("SKU-1")])  # a duplicate delivery

    assert (late, same) == (False, False)
    assert await catalog.get("SKU-1") == (200, product), "neither the late revision nor the duplicates changed it"
    assert await store_availability(catalog.runtime.db, "SKU-1", available=True, revision=3), "a newer one does"
    _, product = await catalog.get("SKU-1")
    assert (product["available"], product["availability_revision"]) == (True, 3)

    await catalog.consumers.mark_availability([sku_processed("GHOST-1")])  # unknown to inventory: acknowledged
    async with catalog.runtime.db.reading() as session:
        assert await session.scalar(select(products.c.sku).where(products.c.sku == "GHOST-1")) is None


async def test_a_malformed_message_is_dead_lettered_and_catalog_stays_ready_and_consuming(catalog: Catalog):
    observer = catalog.system.observer
    await observer.publish(observer.envelope(SKU_PROCESSED.name, {"wrong": 1}), SKU_PROCESSED.exchange.name)

    dlq = "catalog.sku_processed.dlq"
    await wait_until(lambda: observer.depth(dlq), what="the malformed message in catalog's DLQ")
    [letter] = await observer.take(dlq, 10)
    assert letter.json() == {"wrong": 1}
    assert "sku" in letter.headers["x-reason"]
    status, ready, _ = await catalog.call("GET", "/readyz")
    assert (status, ready["service"], ready["checks"]["database"], ready["checks"]["broker"]) == (
        200,
        "catalog",
        "ok",
        "ok",
    )

    await catalog.put("SKU-1")
    await catalog.report_stock(T0, SKU_1=1)
    await catalog.wait_for_revision("SKU-1", 1)
    assert (await catalog.get("SKU-1"))[1]["available"] is True
