"""Retention: after SKUFLOW_RETENTION_DAYS inventory forgets idempotency keys, flows that ended and all but
the newest ledger entry of each warehouse file; never a running flow, never stock numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from skuflow.inventory.db import idempotency_keys, skus, warehouse_files
from skuflow.inventory.retention import Retention
from tests.services.conftest import System
from tests.services.test_orchestration import flow_status_is, flows_of
from tests.support.waiting import wait_until


@pytest.fixture
def mode() -> str:
    return "orchestration"  # so that there are flows to forget


async def report(system: System, sku: str, correlation_id: str) -> None:
    body = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": 3}]}
    headers = {"X-Correlation-ID": correlation_id, "Idempotency-Key": f"key-{sku}"}
    status, answer, _ = await system.call(
        "POST", "/v1/stock", token=await system.client_token(), json=body, headers=headers
    )
    assert status == 202, answer


async def test_what_ended_before_the_retention_is_forgotten_and_nothing_else(system: System):
    runtime = system.inventory_runtime
    await report(system, "SKU-DONE", "ended-1")
    await wait_until(lambda: flow_status_is(system, "ended-1", "completed"), what="the first flow")
    await system.catalog.stop()  # the second flow cannot finish: it stays running
    await report(system, "SKU-OPEN", "open-1")
    await wait_until(lambda: flow_status_is(system, "open-1", "running"), what="the second flow")
    now = datetime.now(UTC)
    ledger = [  # oldest first
        ("/snap.csv", "a", "imported"),
        ("/outbox/d1.csv", "b", "imported"),
        ("/snap.csv", "c", "imported"),
        ("/snap.csv", "d", "rejected"),  # after the newest import: kept, so that d is not examined again
        ("/outbox/bad.csv", "e", "rejected"),
        ("/outbox/bad.csv", "f", "rejected"),  # never imported: the newest entry is kept
    ]
    async with runtime.db.transaction() as session:
        for path, content_hash, status in ledger:
            await session.execute(warehouse_files.insert().values(**_ledger_entry(path, content_hash, status, now)))

    retention = Retention(runtime, batch=1)  # every kind takes several batches
    assert await retention.purge() == {"idempotency_keys": 0, "flows": 0, "warehouse_files": 0}, "all is recent"

    later = now + timedelta(days=runtime.settings.retention_days, minutes=1)
    assert await retention.purge(now=later) == {"idempotency_keys": 2, "flows": 1, "warehouse_files": 2}
    assert await flows_of(system, "ended-1") == []
    assert await flow_status_is(system, "open-1", "running"), "a running flow stays, however old"
    async with runtime.db.reading() as session:
        kept = (await session.execute(select(warehouse_files.c.path, warehouse_files.c.content_hash))).all()
        assert sorted(kept) == [
            ("/outbox/bad.csv", "f"),
            ("/outbox/d1.csv", "b"),
            ("/snap.csv", "c"),
            ("/snap.csv", "d"),
        ]
        assert await session.scalar(select(func.count()).select_from(idempotency_keys)) == 0
        assert sorted(await session.scalars(select(skus.c.sku))) == ["SKU-DONE", "SKU-OPEN"]
    assert await retention.purge(now=later) == {"idempotency_keys": 0, "flows": 0, "warehouse_files": 0}

    _, body, _ = await system.call("GET", "/readyz", token=await system.admin_token())
    assert body["checks"]["retention"] == "ok"
    assert body["details"]["retention"] == {
        "days": runtime.settings.retention_days,
        "deleted": {"idempotency_keys": 0, "flows": 0, "warehouse_files": 0},
    }, "the service's own retention found nothing yet; this test's purges were its own"


def _ledger_entry(path: str, content_hash: str, status: str, at: datetime) -> dict[str, object]:
    return {
        "path": path,
        "content_hash": content_hash,
        "size": 10,
        "status": status,
        "lines": 1,
        "accepted": 1,
        "stale": 0,
        "bad_lines": 0,
        "changed_skus": 1,
        "correlation_id": f"file-{content_hash}",
        "started_at": at,
        "finished_at": at,
    }
