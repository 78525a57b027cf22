"""What the services count, as an operator reads it on /metrics: the figures `skuflow compare` reports."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services.conftest import MODES, System
from tests.support.waiting import wait_until

pytestmark = pytest.mark.parametrize("mode", MODES)


async def scrape(system: System, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with system.http.get(f"{getattr(system, service).url}/metrics") as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


async def test_deliveries_per_queue_publishes_per_route_and_calls_between_services(system: System, mode: str):
    token = await system.client_token()
    body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-M", "on_hand": 2}]}
    status, _, _ = await system.call("POST", "/v1/stock", token=token, json=body)
    assert status == 202

    async def catalog_acked() -> bool:
        queue = "catalog.sku_processed" if mode == "choreography" else "catalog.update_sku_availability"
        return value(await scrape(system, "catalog"), "skuflow_queue_messages_total", queue=queue, outcome="acked") >= 1

    await wait_until(catalog_acked, what="catalog to take its message")
    inventory, catalog = await scrape(system, "inventory"), await scrape(system, "catalog")
    published = "skuflow_published_messages_total"
    calls = value(catalog, "skuflow_http_client_requests_total", target="inventory", route="/v1/skus")
    if mode == "choreography":
        assert value(inventory, published, exchange="sku_processed", type="sku_processed") == 1
        assert value(inventory, published, exchange="commands") == 0
        assert calls == 1  # catalog asked inventory
    else:
        assert value(inventory, published, exchange="sku_processed") == 0
        assert value(inventory, published, routing_key="inventory.recalculate_sku", type="recalculate_sku") == 1
        assert calls == 0  # the command carried what catalog needed
    # Inventory verified the warehouse's token with users, over HTTP, once (then cached).
    assert value(inventory, "skuflow_http_client_requests_total", target="users", route="/v1/auth/verify") == 1
