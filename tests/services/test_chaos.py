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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from sqlalchemy import select

from skuflow.catalog.db import products
from skuflow.embedded.smtp import ReceivedMail
from skuflow.inventory.db import stock_levels
from skuflow.platform.db import Database
from skuflow.platform.serving import bind
from skuflow.users.db import notifications, sku_availability
from tests.conftest import WAREHOUSE_SECRET
from tests.services.conftest import MODES, System
from tests.services.test_flow_properties import History
from tests.support.servers import serve
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.amqp,
    pytest.mark.parametrize("stack", ["production"], indirect=True),
]

LOAD_SECONDS = float(os.environ.get("SKUFLOW_CHAOS_SECONDS", "4"))
OUTAGE_SECONDS = float(os.environ.get("SKUFLOW_CHAOS_OUTAGE_SECONDS", "3"))
SKUS = [f"C-{n}" for n in range(6)]


@dataclass
class Target:
    """The system under load, wherever it runs: its URLs, its databases (read to check), its sink's mails."""

    label: str
    http: aiohttp.ClientSession
    urls: dict[str, str]
    databases: dict[str, Database]
    mails: Callable[[], list[ReceivedMail]]
    warehouse_secret: str = WAREHOUSE_SECRET
    _token: str | None = None

    async def token(self) -> str:
        if self._token is None:
            form = {
                "grant_type": "client_credentials",
                "client_id": "warehouse",
                "client_secret": self.warehouse_secret,
            }
            async with self.http.post(f"{self.urls['users']}/v1/auth/token", data=form) as response:
                assert response.status == 200, await response.text()
                self._token = str((await response.json())["access_token"])
        return self._token


def target_of(system: System) -> Target:
    """The services of this process (a test may replace one: the URLs and databases stay the same)."""
    return Target(
        label=f"{system.stack.name} {system.inventory.app.state.runtime.settings.mode}",
        http=system.http,
        urls={name: getattr(system, name).url for name in ("inventory", "catalog", "users")},
        databases={name: getattr(system, name).app.state.runtime.db for name in ("inventory", "catalog", "users")},
        mails=lambda: system.smtp.mails,
    )


@dataclass
class Load:
    target: Target
    seed: int = 11
    model: dict[str, History] = field(default_factory=lambda: {sku: History() for sku in SKUS})
    accepted: dict[tuple[str, str], int] = field(default_factory=dict)  # (warehouse, sku) -> on_hand
    sent: int = 0
    resent: int = 0  # requests sent again after a failure (same Idempotency-Key)

    async def run(self, seconds: float, until: asyncio.Event | None = None) -> None:
        """Report for `seconds`, and on until `until` is set if one is given (within two minutes more)."""
        rng = random.Random(self.seed)
        token = await self.target.token()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or (until is not None and not until.is_set()):
            assert time.monotonic() < deadline + 120, "the load's end was never signalled"
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
                async with self.target.http.post(
                    f"{self.target.urls['inventory']}/v1/stock", json=body, headers=headers
                ) as response:
                    if response.status == 202:
                        break
                    assert response.status >= 500, await response.text()
            except (OSError, aiohttp.ClientError):
                pass  # inventory is down: the warehouse tries again, with the same key
            assert time.monotonic() < give_up, "a report not accepted within 60 s"
            self.resent += 1
            await asyncio.sleep(0.1)
        self.model[sku].report(warehouse, on_hand)
        self.accepted[f"WH-{warehouse}", sku] = on_hand

    @contextlib.asynccontextmanager
    async def running(self, seconds: float = LOAD_SECONDS, until: asyncio.Event | None = None) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(seconds, until))
        try:
            yield
        except BaseException:  # the faults went wrong: stop the load rather than wait for its end
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        await task


async def wishers(target: Target) -> dict[str, list[str]]:
    """Three users, each wishing for half the SKUs; answers user id -> SKUs."""
    wishes = {}
    users = target.urls["users"]
    for n in range(3):
        email, password = f"chaos{n}@example.com", "correct horse battery"
        async with target.http.post(
            f"{users}/v1/users", json={"email": email, "name": f"c{n}", "password": password}
        ) as r:
            assert r.status == 201, await r.text()
            user = (await r.json())["id"]
        form = {"grant_type": "password", "username": email, "password": password}
        async with target.http.post(f"{users}/v1/auth/token", data=form) as r:
            token = (await r.json())["access_token"]
        wishes[user] = SKUS[n : n + 3]
        for sku in wishes[user]:
            url = f"{users}/v1/users/{user}/wishlist/{sku}"
            async with target.http.put(url, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 201, await r.text()
    return wishes


async def check_nothing_lost_or_doubled(target: Target, load: Load, wishes: dict[str, list[str]]) -> None:
    reported = [sku for sku in SKUS if load.model[sku].states]
    catalog, users, inventory = (target.databases[name] for name in ("catalog", "users", "inventory"))

    async def converged() -> bool:
        async with catalog.reading() as session:
            rows = {r.sku: r for r in await session.execute(select(products).where(products.c.sku.in_(reported)))}
        async with users.reading() as session:
            known = dict((await session.execute(select(sku_availability.c.sku, sku_availability.c.revision))).all())
        return all(
            sku in rows
            and rows[sku].availability_revision == len(load.model[sku].states)
            and rows[sku].available == load.model[sku].states[-1]
            and known.get(sku) == len(load.model[sku].states)
            for sku in reported
        )

    await wait_until(converged, timeout=90, what="catalog and users to converge on inventory")
    async with inventory.reading() as session:
        levels = {(r.warehouse_id, r.sku): r.on_hand for r in await session.execute(select(stock_levels))}
    assert levels == load.accepted, "every accepted report is recorded, and nothing else"

    async def all_sent() -> bool:
        async with users.reading() as session:
            pending = (await session.execute(select(notifications).where(notifications.c.sent_at.is_(None)))).all()
        return not pending

    await wait_until(all_sent, timeout=90, what="every due email to be sent")
    async with users.reading() as session:
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
    message_ids = [mail.message_id for mail in target.mails()]
    assert len(message_ids) == len(set(message_ids)) == len(sent), "each email accepted once"
    revisions = sum(len(history.states) for history in load.model.values())
    print(  # the figures of a run (pytest -s): what was sent, and that nothing was lost or doubled
        f"\n[chaos {target.label}] reports sent "
        f"{load.sent} (sent again after a failure: {load.resent}), SKU changes {revisions}, emails {len(sent)}; "
        "lost: 0, duplicated effects: 0"
    )


@pytest.mark.parametrize("mode", MODES)
async def test_inventory_down_for_a_while(patient: None, system: System):
    target = target_of(system)
    wishes = await wishers(target)
    load = Load(target)
    async with load.running():
        await asyncio.sleep(LOAD_SECONDS / 3)
        port = int(system.inventory.url.rsplit(":", 1)[1])
        settings = system.inventory.app.state.runtime.settings
        await system.inventory.stop()  # its API, its consumers, its relay: all gone
        await asyncio.sleep(OUTAGE_SECONDS)
        from skuflow.inventory.service import build_app

        system.inventory = await serve(build_app(settings), bind("127.0.0.1", port))
    assert load.resent > 0, "the outage was felt"
    await check_nothing_lost_or_doubled(target, load, wishes)


@pytest.mark.parametrize("mode", MODES)
async def test_smtp_down_then_back(patient: None, system: System):
    target = target_of(system)
    wishes = await wishers(target)
    load = Load(target)
    port = system.smtp.port
    await system.smtp.stop()
    async with load.running():
        await asyncio.sleep(LOAD_SECONDS / 2)
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - LOAD_SECONDS / 2))
    email_check = await system.users.app.state.runtime.reports["email"]()
    assert email_check.details["failed_attempts"] > 0, "the outage was felt"
    await system.smtp.start(port=port)
    await check_nothing_lost_or_doubled(target, load, wishes)


@pytest.mark.parametrize("mode", MODES)
async def test_duplicate_deliveries_change_nothing(patient: None, system: System):
    target = target_of(system)
    wishes = await wishers(target)
    load = Load(target)
    rng = random.Random(5)
    async with load.running():
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline:  # a broker redelivering, a producer publishing twice
            envelope = system.observer.envelope("sku_processed", {"sku": rng.choice(SKUS)})
            await system.observer.publish(envelope, "sku_processed")
            await system.observer.publish(envelope, "sku_processed")  # the very same message, twice
            await asyncio.sleep(0.05)
    await check_nothing_lost_or_doubled(target, load, wishes)


async def test_messages_dead_lettered_by_an_outage_are_replayed_once_it_is_over(system: System):
    """Choreography (where catalog and users call inventory): they cannot reach it, so the event about SKU-P
    exhausts its retries and lands in their dead letters. Once inventory is reachable again, a replay brings
    them up to date."""
    from skuflow.catalog.service import build_app as catalog_app
    from skuflow.users.service import build_app as users_app
    from tests.support.proxy import TcpProxy

    proxy = TcpProxy("127.0.0.1", int(system.inventory.url.rsplit(":", 1)[1]))
    await proxy.start()
    try:
        for name, build in (("catalog", catalog_app), ("users", users_app)):
            old = getattr(system, name)
            port = int(old.url.rsplit(":", 1)[1])
            settings = old.app.state.runtime.settings.model_copy(
                update={"inventory_url": f"http://127.0.0.1:{proxy.port}"}
            )
            await old.stop()
            setattr(system, name, await serve(build(settings), bind("127.0.0.1", port)))
        user, token = await system.sign_up("patient@example.com")
        status, _, _ = await system.call("PUT", f"/v1/users/{user}/wishlist/SKU-P", token=token, service="users")
        assert status == 201
        await proxy.cut()  # the network between them and inventory fails

        warehouse = await system.client_token()
        body = {"warehouse_id": "WH-1", "items": [{"sku": "SKU-P", "on_hand": 4}]}
        status, _, _ = await system.call("POST", "/v1/stock", token=warehouse, json=body)
        assert status == 202
        for queue in ("catalog.sku_processed.dlq", "users.sku_processed.dlq"):
            await wait_until(lambda q=queue: _depth_is(system, q, 1), what=f"the event in {queue}")

        await proxy.start()  # the network is back
        admin = await system.admin_token()
        for service in ("catalog", "users"):
            path = f"/v1/admin/dead-letters/{service}.sku_processed/replay"
            status, answer, _ = await system.call("POST", path, token=admin, service=service)
            assert (status, answer["replayed"]) == (200, 1)
        await wait_until(lambda: len(system.smtp.mails) == 1, what="the email, after the replay")
        async with system.catalog.app.state.runtime.db.reading() as session:
            row = (await session.execute(select(products).where(products.c.sku == "SKU-P"))).one()
        assert (row.available, row.availability_revision) == (True, 1)
    finally:
        await proxy.cut()


async def _depth_is(system: System, queue: str, count: int) -> bool:
    return await system.observer.depth(queue) == count
