"""The workload, driven as the warehouse, the users and the shop's admin would: through the system's own APIs
(one `ServiceClient`) and its FTP folder. Setup is not measured; a phase changes SKUs from 0 to available
and is measured until the system has converged."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from skuflow.bench.e2e.figures import BenchError, NotConverged, PhaseFigures, Progress, Samples, Workload, percentiles
from skuflow.bench.e2e.system import PASSWORD, SETUP_TIMEOUT, Mailbox
from skuflow.embedded.ftp import FtpServer
from skuflow.service_client import ServiceClient, ServiceError, until

ON_HAND = 5  # what a phase reports: available
SETUP_IN_FLIGHT = 16  # setup requests at once (not measured)
USERS_IN_FLIGHT = 2  # users signing up at once: argon2 takes at most a few hashes per client address at once
BUSY_RETRIES = 20  # a 503 (argon2's queue full, inventory's backlog at its bound) is tried again, after Retry-After
RESET_BATCH = 500  # SKUs per report when setting every SKU back to 0 between phases


@dataclass
class Sent:
    """When each SKU's change was sent (epoch seconds) and how long each HTTP report took to answer."""

    at: dict[str, float] = field(default_factory=dict)
    answers_ms: list[float] = field(default_factory=list)
    reports: int = 0
    refused: int = 0  # answers 503 (backpressure): each report sent again after its Retry-After
    by_http: set[str] = field(default_factory=set)

    def refusal(self) -> None:
        self.refused += 1

    def timed(self) -> dict[str, float]:
        """The SKUs a latency is taken of: each HTTP report's; a phase of a snapshot alone, from its appearance."""
        return {sku: at for sku, at in self.at.items() if sku in self.by_http} if self.by_http else self.at


class UnderTest(Protocol):
    """What the driver needs of a system under test: skuflow's (`system.System`) or the raw baseline's."""

    mode: str
    client: ServiceClient
    mailbox: Mailbox
    ftp: FtpServer | None

    async def settled(self, every: float, within: float = SETUP_TIMEOUT) -> dict[str, Samples]: ...

    async def catalog_acked(self) -> float: ...

    async def flows_finished(self) -> bool: ...


class Driver:
    def __init__(self, system: UnderTest, workload: Workload, progress: Progress) -> None:
        self.system = system
        self.client = system.client
        self.workload = workload
        self.progress = progress
        self.wishes: dict[str, int] = {}  # SKU -> users wishing for it: the emails its change is due

    async def setup(self, skus: list[str], rng: random.Random) -> None:
        """Every SKU a product in catalog and at 0 in inventory, then the users and their wishes."""
        done = 0
        total = len(skus) + 1 + self.workload.users

        def step() -> None:
            nonlocal done
            done += 1
            self.progress("setup", done, total)

        async def product(sku: str) -> None:
            body = {"name": f"Item {sku}", "price": "1.00"}  # the email's subject names the SKU by this
            await self.client.call("PUT", "catalog", f"/v1/products/{sku}", as_client="admin", json=body)
            step()

        for client in ("admin", "warehouse"):  # once each, before requests in flight would each ask for one
            await _patiently(functools.partial(self._token, client))
        await _bounded([product(sku) for sku in skus], SETUP_IN_FLIGHT)
        await self.report_all(skus, on_hand=0)
        await self._until(lambda: self._catalog_matches(skus), "catalog to learn the SKUs at 0")
        step()
        choices = self.choose_wishes(skus, rng)

        async def user(n: int, wished: list[str]) -> None:
            email = f"user{n}@example.com"
            body = {"email": email, "name": f"User {n}", "password": PASSWORD}
            created = await _patiently(lambda: self.client.call("POST", "users", "/v1/users", json=body))
            form = {"grant_type": "password", "username": email, "password": PASSWORD}
            answer = await _patiently(lambda: self.client.call("POST", "users", "/v1/auth/token", data=form))
            token = answer["access_token"]
            for sku in wished:
                path = f"/v1/users/{created['id']}/wishlist/{sku}"
                await self.client.call("PUT", "users", path, headers={"Authorization": f"Bearer {token}"})
            step()

        await _bounded([user(n, wished) for n, wished in enumerate(choices)], USERS_IN_FLIGHT)

    def choose_wishes(self, skus: list[str], rng: random.Random) -> list[list[str]]:
        """Each user's wished SKUs (the same for a given seed, whatever the system), counted per SKU."""
        choices = [rng.sample(skus, min(self.workload.wishes, len(skus))) for _ in range(self.workload.users)]
        for wished in choices:
            for sku in wished:
                self.wishes[sku] = self.wishes.get(sku, 0) + 1
        return choices

    async def reset(self, skus: list[str]) -> None:
        """Between phases (not measured): every SKU back to 0, and catalog knowing it."""
        await self.report_all(skus, on_hand=0)

        async def none_available() -> bool:
            page = await self.client.call("GET", "catalog", "/v1/products?available=true&limit=1")
            return not page["items"]

        await self._until(none_available, "catalog to learn the SKUs at 0 again")

    async def report_all(self, skus: list[str], on_hand: int) -> None:
        for start in range(0, len(skus), RESET_BATCH):
            items = [{"sku": sku, "on_hand": on_hand} for sku in skus[start : start + RESET_BATCH]]
            report = {"warehouse_id": "WH-1", "items": items}
            await self.client.call("POST", "inventory", "/v1/stock", as_client="warehouse", json=report)

    async def change(self, phase: str, by_http: list[str], by_ftp: list[str]) -> Sent:
        """The measured change: `by_http` in reports of `batch` SKUs (`concurrency` in flight, started at
        `rate` a second if given), then `by_ftp` as one snapshot. The send times are taken just before
        each request leaves, and when the snapshot appears whole in the FTP folder."""
        await self.client.token("warehouse")  # asked before the clock matters
        sent = Sent(by_http=set(by_http))
        gate = asyncio.Semaphore(self.workload.concurrency)
        size = self.workload.batch
        reports = [by_http[start : start + size] for start in range(0, len(by_http), size)]
        total = len(by_http) + len(by_ftp)
        begun = time.monotonic()

        async def report(n: int, skus: list[str]) -> None:
            if self.workload.rate is not None:  # open loop: each report at its time, late if the gate is full
                await asyncio.sleep(max(0.0, begun + n / self.workload.rate - time.monotonic()))
            async with gate:
                body = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": ON_HAND} for sku in skus]}
                now, started = time.time(), time.monotonic()
                await _patiently(
                    lambda: self.client.call("POST", "inventory", "/v1/stock", as_client="warehouse", json=body),
                    sent.refusal,
                )
                sent.answers_ms.append((time.monotonic() - started) * 1000)
                for sku in skus:
                    sent.at[sku] = now
                sent.reports += 1
                self.progress(f"{phase}: report", len(sent.at), total)

        await asyncio.gather(*(report(n, skus) for n, skus in enumerate(reports)))
        if by_ftp:
            if self.system.ftp is None:
                raise BenchError("this system has no FTP feed")
            snapshot = self.system.ftp.root / "outbox" / "snapshot.csv"
            partial = snapshot.with_suffix(".partial")
            partial.write_text("warehouse_id,sku,on_hand\n" + "".join(f"WH-1,{sku},{ON_HAND}\n" for sku in by_ftp))
            now = time.time()
            partial.replace(snapshot)  # appears whole, as an upload under a temporary name does
            for sku in by_ftp:
                sent.at[sku] = now
            self.progress(f"{phase}: report", total, total)
        return sent

    async def converge(self, phase: str, skus: list[str], started: float, mails_before: int) -> None:
        """Until catalog shows every SKU available, the sink has every due email and no flow runs. Each look
        costs the system two small requests: one unavailable product (LIMIT 1) and catalog's /metrics (for
        the progress bar: its deliveries acked; the raw flow's, a count of its available products); the bench
        then waits `poll` seconds."""
        due = sum(self.wishes.get(sku, 0) for sku in skus)
        baseline = await self.system.catalog_acked()

        async def converged() -> bool:
            emails = len(self.system.mailbox.accepted) - mails_before
            acked = min(len(skus), int(await self.system.catalog_acked() - baseline))
            self.progress(f"{phase}: converge", acked + min(emails, due), len(skus) + due)
            if emails < due:
                return False
            page = await self.client.call("GET", "catalog", "/v1/products?available=false&limit=1")
            # An orchestrated flow has not converged before its orchestrator has every step's reply.
            return not page["items"] and await self.system.flows_finished()

        remaining = self.workload.timeout - (time.monotonic() - started)
        try:
            await until(converged, "convergence", remaining, every=self.workload.poll, error=NotConverged)
        except NotConverged:
            unavailable = len(await self.client.all("catalog", "/v1/products?available=false"))
            emails = len(self.system.mailbox.accepted) - mails_before
            raise NotConverged(
                f"{self.system.mode} did not converge within {self.workload.timeout:g} s: catalog showed "
                f"{len(skus) - unavailable} of {len(skus)} SKUs available, the SMTP sink had {emails} of "
                f"{due} due emails"
            ) from None
        self.progress(f"{phase}: converge", len(skus) + due, len(skus) + due)

    async def figures(self, figures: PhaseFigures, skus: list[str], sent: Sent, mails_before: int) -> None:
        """Latencies and throughput from what the system recorded: catalog's `availability_checked_at` and
        the sink's acceptance times; converged at the last of them (not at the poll that saw it)."""
        checked = {
            item["sku"]: datetime.fromisoformat(item["availability_checked_at"]).timestamp()
            for item in await self.client.all("catalog", "/v1/products?available=true")
            if item["availability_checked_at"]
        }
        mails = [(sku, at) for sku, at in self.system.mailbox.accepted[mails_before:] if sku in sent.at]
        timed = sent.timed()
        # The clocks are one machine's, read in two processes: a latency a hair below zero counts as zero.
        figures.catalog_latency_ms = percentiles(
            [max(0.0, (checked[sku] - at) * 1000) for sku, at in timed.items() if sku in checked]
        )
        to_email = [max(0.0, (when - timed[sku]) * 1000) for sku, when in mails if sku in timed]
        figures.email_latency_ms = percentiles(to_email)
        figures.answer_ms = percentiles(sent.answers_ms)
        figures.skus, figures.reports, figures.refused = len(skus), sent.reports, sent.refused
        figures.emails = len(self.system.mailbox.accepted) - mails_before
        figures.due_emails = sum(self.wishes.get(sku, 0) for sku in skus)
        first = min(sent.at.values())
        last = max([checked.get(sku, first) for sku in skus] + [when for _, when in mails])
        figures.converge_seconds = max(last - first, 1e-6)
        figures.changes_per_second = len(skus) / figures.converge_seconds

    async def _token(self, client: str) -> dict[str, Any]:
        return {"access_token": await self.client.token(client)}

    async def _catalog_matches(self, skus: list[str]) -> bool:
        """Every SKU's availability in catalog is inventory's, at inventory's revision."""
        inventory = {item["sku"]: item for item in await self.client.all("inventory", "/v1/skus")}
        catalog = {item["sku"]: item for item in await self.client.all("catalog", "/v1/products")}
        return all(
            sku in inventory
            and sku in catalog
            and catalog[sku]["availability_revision"] == inventory[sku]["revision"]
            and catalog[sku]["available"] == inventory[sku]["available"]
            for sku in skus
        )

    async def _until(self, condition: Callable[[], Awaitable[object]], what: str) -> None:
        await until(condition, what, SETUP_TIMEOUT, every=max(self.workload.poll, 0.5), error=NotConverged)


async def _patiently(
    request: Callable[[], Awaitable[dict[str, Any]]], refused: Callable[[], None] | None = None
) -> dict[str, Any]:
    """The request, sent again after each 503 as its Retry-After asks (as a warehouse would), at most
    BUSY_RETRIES times; `refused` is told of each 503."""
    for _ in range(BUSY_RETRIES):
        try:
            return await request()
        except ServiceError as error:
            if error.retry_after is None:
                raise
            if refused is not None:
                refused()
            await asyncio.sleep(error.retry_after)
    return await request()


async def _bounded(calls: list[Awaitable[Any]], at_once: int) -> None:
    gate = asyncio.Semaphore(at_once)

    async def one(call: Awaitable[Any]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(call) for call in calls))
