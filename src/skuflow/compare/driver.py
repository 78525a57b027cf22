"""The workload of `skuflow compare`, driven as the warehouse, the users and the shop's admin would: through
the system's own APIs (one `ServiceClient`), and its FTP folder."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from skuflow.compare.figures import ModeFigures, NotConverged, Progress, Workload, percentiles
from skuflow.compare.system import PASSWORD, SETUP_TIMEOUT, System
from skuflow.service_client import until


class Driver:
    """The warehouse, the users and the shop's admin, through the system's own APIs."""

    def __init__(self, system: System, workload: Workload, progress: Progress) -> None:
        self.system = system
        self.client = system.client
        self.workload = workload
        self.progress = progress
        self.due_emails = 0

    async def setup(self, skus: list[str], rng: random.Random) -> None:
        """Not measured: every SKU a product in catalog and at 0 in inventory, then the users and their wishes."""
        total = len(skus) + 1 + self.workload.users
        done = 0
        for sku in skus:  # products, so that catalog lists their availability
            body = {"name": f"Item {sku}", "price": "1.00"}
            await self.client.call("PUT", "catalog", f"/v1/products/{sku}", as_client="admin", json=body)
            done += 1
            self.progress("setup", done, total)
        report = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": 0} for sku in skus]}
        await self.client.call("POST", "inventory", "/v1/stock", as_client="warehouse", json=report)
        await self._until(lambda: self._catalog_matches(skus), "catalog to learn the SKUs at 0")
        await self._until(self._flows_finished, "the flows of the SKUs at 0 to finish")  # counted before the burst
        done += 1
        self.progress("setup", done, total)
        for n in range(self.workload.users):
            email = f"user{n}@example.com"
            user = await self.client.call(
                "POST", "users", "/v1/users", json={"email": email, "name": f"User {n}", "password": PASSWORD}
            )
            form = {"grant_type": "password", "username": email, "password": PASSWORD}
            token = (await self.client.call("POST", "users", "/v1/auth/token", data=form))["access_token"]
            for sku in rng.sample(skus, min(self.workload.wishes, len(skus))):
                path = f"/v1/users/{user['id']}/wishlist/{sku}"
                await self.client.call("PUT", "users", path, headers={"Authorization": f"Bearer {token}"})
                self.due_emails += 1
            done += 1
            self.progress("setup", done, total)

    async def burst(self, skus: list[str]) -> dict[str, float]:
        """Half the SKUs over HTTP (one report each, some in flight at once), the rest in one FTP snapshot.
        Answers each HTTP-reported SKU's answer time (epoch seconds)."""
        by_http, by_ftp = skus[: len(skus) // 2], skus[len(skus) // 2 :]
        await self.client.token("warehouse")  # asked before the clock matters
        answers: dict[str, float] = {}
        gate = asyncio.Semaphore(self.workload.concurrency)

        async def report(sku: str) -> None:
            async with gate:
                body = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": 5}]}
                await self.client.call("POST", "inventory", "/v1/stock", as_client="warehouse", json=body)
                answers[sku] = time.time()
                self.progress("burst", len(answers), len(skus))

        await asyncio.gather(*(report(sku) for sku in by_http))
        snapshot = self.system.ftp.root / "outbox" / "snapshot.csv"
        partial = snapshot.with_suffix(".partial")
        partial.write_text("warehouse_id,sku,on_hand\n" + "".join(f"WH-1,{sku},5\n" for sku in by_ftp))
        partial.replace(snapshot)  # appears whole, as an upload under a temporary name does
        self.progress("burst", len(skus), len(skus))
        return answers

    async def converge(self, skus: list[str], started: float) -> None:
        async def converged() -> bool:
            matching = await self._catalog_matches(skus, available=True)
            emails = len(self.system.smtp.mails)
            self.progress("converge", matching + emails, len(skus) + self.due_emails)
            # An orchestrated flow has not converged before its orchestrator has every step's reply.
            return matching == len(skus) and emails >= self.due_emails and await self._flows_finished()

        remaining = self.workload.timeout - (time.monotonic() - started)
        try:
            await self._until(converged, "convergence", remaining)
        except NotConverged:
            matching = await self._catalog_matches(skus, available=True)
            raise NotConverged(
                f"{self.system.settings.mode} did not converge within {self.workload.timeout:g} s: catalog matched "
                f"inventory for {matching} of {len(skus)} SKUs, the SMTP sink had {len(self.system.smtp.mails)} of "
                f"{self.due_emails} due emails"
            ) from None

    async def latencies(self, figures: ModeFigures, answers: dict[str, float]) -> None:
        checked = {item["sku"]: item for item in await self.client.all("catalog", "/v1/products")}
        to_catalog = [
            (datetime.fromisoformat(checked[sku]["availability_checked_at"]).timestamp() - answered) * 1000
            for sku, answered in answers.items()
            if checked.get(sku, {}).get("availability_checked_at")
        ]
        mails = [mail for mail in self.system.smtp.mails if mail.subject.startswith("Item ")]
        to_email = [
            (mail.received_at - answers[sku]) * 1000 for mail in mails if (sku := mail.subject.split()[1]) in answers
        ]
        # The answer's time is taken when the driver has read it: in one process the system may already have
        # moved on by then, so a latency can come out a little below zero; it counts as zero.
        figures.catalog_latency_ms = percentiles([max(0.0, value) for value in to_catalog])
        figures.email_latency_ms = percentiles([max(0.0, value) for value in to_email])
        figures.emails = len(self.system.smtp.mails)

    async def _catalog_matches(self, skus: list[str], available: bool = False) -> int:
        """SKUs whose availability in catalog is inventory's, at inventory's revision (and, if asked, true)."""
        inventory = {item["sku"]: item for item in await self.client.all("inventory", "/v1/skus")}
        catalog = {item["sku"]: item for item in await self.client.all("catalog", "/v1/products")}
        return sum(
            1
            for sku in skus
            if sku in inventory
            and sku in catalog
            and catalog[sku]["availability_revision"] == inventory[sku]["revision"]
            and catalog[sku]["available"] == inventory[sku]["available"]
            and (not available or inventory[sku]["available"])
        )

    async def _flows_finished(self) -> bool:
        """No flow is running (always so in choreography, which has none)."""
        running = await self.client.call("GET", "inventory", "/v1/flows?status=running&limit=1", as_client="warehouse")
        return not running["items"]

    async def _until(
        self, condition: Callable[[], Awaitable[object]], what: str, within: float = SETUP_TIMEOUT
    ) -> None:
        await until(condition, what, within, error=NotConverged)
