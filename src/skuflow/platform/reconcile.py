"""Reconciliation: re-checking what a service holds of inventory's availability, and repairing drift.

Drift should never happen (every change is announced, every consumer is idempotent and keeps the newest
revision), but a message can be lost outside the system's guarantees: a queue purged by hand, a dead letter
never replayed, a database restored from a backup. Every `SKUFLOW_RECONCILE_SECONDS` (and on demand:
`skuflow reconcile`, `POST /v1/admin/reconcile`), each service asks inventory again for the SKUs whose
availability it last checked longer ago than that, and repairs what differs, logging each repair. The
service says which SKUs to look at and how to repair them; the loop and the asking are here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from skuflow.platform import telemetry
from skuflow.platform.availability import AvailabilitySource
from skuflow.platform.background import Periodic

log = logging.getLogger("skuflow.reconcile")

BATCH = 500


@dataclass(frozen=True, slots=True)
class Held:
    """What a service holds of a SKU's availability (revision 0: it never learned it)."""

    sku: str
    available: bool
    revision: int


# (checked before, SKUs after this one, at most) -> SKUs to re-check, in SKU order
Older = Callable[[datetime, str, int], Awaitable[list[Held]]]
Repair = Callable[[Held, bool, int], Awaitable[None]]  # (held, inventory's availability, its revision)
Checked = Callable[[list[str], datetime], Awaitable[None]]  # mark SKUs checked now


class Reconciliation:
    def __init__(
        self,
        service: str,
        every: timedelta,
        inventory: AvailabilitySource,
        older: Older,
        repair: Repair,
        checked: Checked,
    ) -> None:
        self.service = service
        self.inventory = inventory
        self.older, self.repair, self.checked = older, repair, checked
        self.every = every
        self.repaired = 0
        self.last: dict[str, Any] | None = None
        self._periodic = Periodic(
            f"{service} reconciliation", self.run_once, self.every.total_seconds(), at_start=False
        )

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def run_once(self, older_than: timedelta | None = None) -> dict[str, Any]:
        """Re-check every SKU last checked before `older_than` ago (default SKUFLOW_RECONCILE_SECONDS)."""
        with telemetry.work_span(self.service, "reconcile") as span:
            last = await self._run_once(older_than)
            if span is not None:
                span.set_attributes(
                    {f"skuflow.reconcile.{name}": value for name, value in last.items() if name != "at"}
                )
            return last

    async def _run_once(self, older_than: timedelta | None) -> dict[str, Any]:
        now = datetime.now(UTC)
        cutoff = now - (self.every if older_than is None else older_than)
        checked = repaired = unknown = 0
        after = ""
        while batch := await self.older(cutoff, after, BATCH):
            after = batch[-1].sku
            for held in batch:
                answer = await self.inventory.availability(held.sku)
                if answer is None:
                    unknown += 1
                    continue
                available, revision = answer
                if (available, revision) != (held.available, held.revision):
                    log.warning(
                        "%s: drift on SKU %s: held %s at revision %d, inventory has %s at revision %d; repairing",
                        self.service,
                        held.sku,
                        "available" if held.available else "not available",
                        held.revision,
                        "available" if available else "not available",
                        revision,
                    )
                    await self.repair(held, available, revision)
                    repaired += 1
            await self.checked([held.sku for held in batch], now)
            checked += len(batch)
        self.repaired += repaired
        self.last = {"at": now.isoformat(), "checked": checked, "repaired": repaired, "unknown_to_inventory": unknown}
        if checked:
            log.info("%s: reconciliation checked %d SKUs, repaired %d", self.service, checked, repaired)
        return self.last
