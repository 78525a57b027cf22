"""Faults under a steady load, on RabbitMQ and PostgreSQL, in both styles: afterwards nothing is lost or
doubled (issue 9's chaos suite, first part).

A warehouse sends stock reports one after another for a few SKUs from two warehouses, each with an
Idempotency-Key, sending the same request again until it is accepted (as a real client must), while users
wait for some of the SKUs. A fault strikes in the middle. Once the queues drain: catalog's availability is
inventory's for every SKU, inventory holds every accepted number (no report lost), and the emails follow
CONTRACT section 7 (one per not-available -> available transition at most, none at a revision that was not
available, one at least when the SKU ended available; no email sent twice).

CI runs the load for SKUFLOW_CHAOS_SECONDS (4 s) with outages of SKUFLOW_CHAOS_OUTAGE_SECONDS (3 s); set them
higher to soak (e.g. 60 and 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from skuflow.catalog.db import products
from skuflow.inventory.db import stock_levels
from skuflow.platform.serving import bind
from skuflow.users.db import notifications, sku_availability
from tests.conftest import Stack
from tests.services.conftest import MODES, System
from tests.services.test_flow_properties import History
from tests.support.servers import serve
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.amqp,
    pytest.mark.parametrize("stack", ["production"], indirect=True),
    pytest.mark.parametrize("mode", MODES),
]

LOAD_SECONDS = float(os.environ.get("SKUFLOW_CHAOS_SECONDS", "4"))
OUTAGE_SECONDS = float(os.environ.get("SKUFLOW_CHAOS_OUTAGE_SECONDS", "3"))
SKUS = [f"C-{n}" for n in range(6)]


@pytest.fixture
def patient(stack: Stack) -> None:
    """Retries that outlast the outages: 0.5 + 1 + 2 + 4 + 8 s before a message is dead-lettered."""
    stack.overrides |= {"retry_delays": (0.5, 1.0, 2.0, 4.0, 8.0)}


@dataclass
class Load:
    system: System
    seed: int = 11
    model: dict[str, History] = field(default_factory=lambda: {sku: History() for sku in SKUS})
    accepted: dict[tuple[str, str], int] = field(default_factory=dict)  # (warehouse, sku) -> on_hand
    sent: int = 0
    resent: int = 0  # requests sent again after a failure (same Idempotency-Key)

    async def run(self, seconds: float) -> None:
        rng = random.Random(self.seed)
        token = await self.system.client_token()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sku, warehouse, on_hand = rng.choice(SKUS), rng.choice((1, 2)), rng.choice((0, 0, 1, 3))
            await self._report(token, sku, warehouse, on_hand)
            await asyncio.sleep(0.02)

    async def _report(self, token: str, sku: str, warehouse: int, on_hand: int) -> None:
        body = {"warehouse_id": f"WH-{warehouse}", "items": [{"sku": sku, "on_hand": on_hand}]}
        headers = {"Idempotency-Key": uuid.uuid4().hex, "Authorization": f"Bearer {token}"}
        self.sent += 1
        give_up = time.monotonic() + 60
        while True:
            try:
                async with self.system.http.post(
                    f"{self.system.inventory.url}/v1/stock", json=body, headers=headers
                ) as response:
                    if response.status == 202:
                        break
                    assert response.status >= 500, await response.text()
            except OSError:
                pass  # inventory is down: the warehouse tries again, with the same key
            assert time.monotonic() < give_up, "a report not accepted within 60 s"
            self.resent += 1
            await asyncio.sleep(0.1)
        self.model[sku].report(warehouse, on_hand)
        self.accepted[f"WH-{warehouse}", sku] = on_hand

    @contextlib.asynccontextmanager
    async def running(self, seconds: float = LOAD_SECONDS) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(seconds))
        try:
            yield
        finally:
            await task


async def wishers(system: System) -> dict[str, list[str]]:
    """Three users, each wishing for half the SKUs; answers user id -> SKUs."""
    wishes = {}
    for n in range(3):
        user, token = await system.sign_up(f"chaos{n}@example.com")
        wishes[user] = SKUS[n : n + 3]
        for sku in wishes[user]:
            status, _, _ = await system.call("PUT", f"/v1/users/{user}/wishlist/{sku}", token=token, service="users")
            assert status == 201
    return wishes


async def check_nothing_lost_or_doubled(system: System, load: Load, wishes: dict[str, list[str]]) -> None:
    reported = [sku for sku in SKUS if load.model[sku].states]

    async def converged() -> bool:
        async with system.catalog.app.state.runtime.db.reading() as session:
            rows = {r.sku: r for r in await session.execute(select(products).where(products.c.sku.in_(reported)))}
        async with system.users.app.state.runtime.db.reading() as session:
            known = dict((await session.execute(select(sku_availability.c.sku, sku_availability.c.revision))).all())
        return all(
            sku in rows
            and rows[sku].availability_revision == len(load.model[sku].states)
            and rows[sku].available == load.model[sku].states[-1]
            and known.get(sku) == len(load.model[sku].states)
            for sku in reported
        )

    await wait_until(converged, timeout=90, what="catalog and users to converge on inventory")
    async with system.inventory.app.state.runtime.db.reading() as session:
        levels = {(r.warehouse_id, r.sku): r.on_hand for r in await session.execute(select(stock_levels))}
    assert levels == load.accepted, "every accepted report is recorded, and nothing else"

    async def all_sent() -> bool:
        async with system.users.app.state.runtime.db.reading() as session:
            pending = (await session.execute(select(notifications).where(notifications.c.sent_at.is_(None)))).all()
        return not pending

    await wait_until(all_sent, timeout=90, what="every due email to be sent")
    async with system.users.app.state.runtime.db.reading() as session:
        sent = (await session.execute(select(notifications))).all()
    for user, skus in wishes.items():
        for sku in skus:
            history = load.model[sku]
            revisions = [row.revision for row in sent if row.user_id == user and row.sku == sku]
            assert len(revisions) == len(set(revisions)), "no transition emailed twice"
            assert all(history.states[r - 1] for r in revisions), "emails only at revisions that were available"
            assert len(revisions) <= history.becomes_available()
            if history.states and history.states[-1]:
                assert revisions, f"{sku} ended available: its wisher was emailed"
    message_ids = [mail.message_id for mail in system.smtp.mails]
    assert len(message_ids) == len(set(message_ids)) == len(sent), "each email accepted once"
    revisions = sum(len(history.states) for history in load.model.values())
    print(  # the figures of a run (pytest -s): what was sent, and that nothing was lost or doubled
        f"\n[chaos {system.stack.name} {system.inventory.app.state.runtime.settings.mode}] reports sent "
        f"{load.sent} (sent again after a failure: {load.resent}), SKU changes {revisions}, emails {len(sent)}; "
        "lost: 0, duplicated effects: 0"
    )


async def test_inventory_down_for_a_while(patient: None, system: System):
    wishes = await wishers(system)
    load = Load(system)
    async with load.running():
        await asyncio.sleep(LOAD_SECONDS / 3)
        port = int(system.inventory.url.rsplit(":", 1)[1])
        settings = system.inventory.app.state.runtime.settings
        await system.inventory.stop()  # its API, its consumers, its relay: all gone
        await asyncio.sleep(OUTAGE_SECONDS)
        from skuflow.inventory.service import build_app

        system.inventory = await serve(build_app(settings), bind("127.0.0.1", port))
    assert load.resent > 0, "the outage was felt"
    await check_nothing_lost_or_doubled(system, load, wishes)


async def test_smtp_down_then_back(patient: None, system: System):
    wishes = await wishers(system)
    load = Load(system)
    port = system.smtp.port
    await system.smtp.stop()
    async with load.running():
        await asyncio.sleep(LOAD_SECONDS / 2)
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - LOAD_SECONDS / 2))
    assert system.users.app.state.runtime.reports["email"]()["failed_attempts"] > 0, "the outage was felt"
    await system.smtp.start(port=port)
    await check_nothing_lost_or_doubled(system, load, wishes)


async def test_duplicate_deliveries_change_nothing(patient: None, system: System):
    wishes = await wishers(system)
    load = Load(system)
    rng = random.Random(5)
    async with load.running():
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline:  # a broker redelivering, a producer publishing twice
            envelope = system.observer.envelope("sku_processed", {"sku": rng.choice(SKUS)})
            await system.observer.publish(envelope, "sku_processed")
            await system.observer.publish(envelope, "sku_processed")  # the very same message, twice
            await asyncio.sleep(0.05)
    await check_nothing_lost_or_doubled(system, load, wishes)
