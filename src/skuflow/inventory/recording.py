"""Recording what the warehouse reports, each report in one unit of work with the events it causes.

One transaction writes the stock levels, the SKUs' new totals and revisions, one `sku_processed` outbox
row per changed SKU, and the idempotency record: all of it, or (on any error) none of it. On PostgreSQL
the SKU rows are locked in a fixed order, so concurrent reports for the same SKUs queue instead of
losing an update.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, select, tuple_
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.inventory import domain
from skuflow.inventory.db import idempotency_keys, skus, stock_levels
from skuflow.inventory.orchestration import Orchestrator
from skuflow.messaging import current_flow, routes
from skuflow.platform.db import Database, utc
from skuflow.platform.group_commit import GroupCommit, Submitted
from skuflow.platform.outbox import Outbox
from skuflow.platform.runtime import ServiceRuntime
from skuflow.platform.settings import Mode

log = logging.getLogger("skuflow.inventory")

T = TypeVar("T")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    """A stock report as recorded: its levels, who sent it, and its Idempotency-Key (if any) with the
    fingerprint of the request that used it."""

    levels: Sequence[domain.ReportedLevel]
    principal: str
    idempotency_key: str | None
    fingerprint: str

    @classmethod
    def of(
        cls,
        levels: Sequence[domain.ReportedLevel],
        *,
        principal: str,
        idempotency_key: str | None,
        request: Any,
    ) -> Report:
        encoded = json.dumps(request, sort_keys=True, default=str).encode()
        return cls(levels, principal, idempotency_key, hashlib.sha256(encoded).hexdigest())


class Recorder:
    """Records stock reports, those that arrive together in one transaction (platform/group_commit.py): under
    load each report no longer waits for the write lock behind every other, one transaction each."""

    def __init__(self, runtime: ServiceRuntime, max_batch: int = 100) -> None:
        self.runtime = runtime
        self.group: GroupCommit[Report, Answer] = GroupCommit(self._write, self._alone, max_batch)

    async def record(self, report: Report) -> Answer:
        """The report recorded with the events it causes, or nothing of it (`IdempotencyConflict`)."""
        return await self.group.submit(report)

    async def _alone(self, report: Report) -> Answer:
        async def attempt() -> Answer:
            async with self.runtime.db.transaction() as session:
                return await self._record(session, report)

        return await retrying_conflicts(attempt)

    async def _write(self, reports: Sequence[Submitted[Report]]) -> list[Answer | Exception]:
        """The reports in one transaction, each in its request's flow. A report refused before it wrote
        anything (its Idempotency-Key used for another request) is that report's answer; any other error
        fails the transaction, and every report is then recorded alone."""
        answers: list[Answer | Exception] = []
        async with self.runtime.db.transaction() as session:
            for submitted in reports:
                try:
                    answers.append(await submitted.run(lambda report: self._record(session, report)))
                except IdempotencyConflict as conflict:
                    answers.append(conflict)
        return answers

    async def _record(self, session: AsyncSession, report: Report) -> Answer:
        key = report.idempotency_key
        if key is not None:
            earlier = await _earlier_answer(session, report.principal, key, report.fingerprint)
            if earlier is not None:
                return earlier
        answer = await _record(self.runtime, session, report.levels)
        if key is not None:
            await session.execute(
                idempotency_keys.insert().values(
                    principal=report.principal,
                    key=key,
                    request_hash=report.fingerprint,
                    status=answer.status,
                    response=answer.body,
                    created_at=datetime.now(UTC),
                )
            )
        return answer


async def retrying_conflicts(attempt: Callable[[], Awaitable[T]], tries: int = 3) -> T:
    """Run a unit of work again when a concurrent one committed the same new key first (PostgreSQL).

    Nothing of the losing attempt was committed; on the next try it sees the winner's rows (a new SKU, an
    idempotency record) and proceeds as if it had come second.
    """
    for number in range(1, tries + 1):
        try:
            return await attempt()
        except DBAPIError as error:
            if not _is_conflict(error) or number == tries:
                raise
            log.info(
                "concurrent write conflicted (%s); trying again (%d/%d)", type(error.orig).__name__, number + 1, tries
            )
    raise AssertionError("unreachable")


def _is_conflict(error: DBAPIError) -> bool:
    """A duplicate key, or PostgreSQL breaking a deadlock or a serialization conflict: worth another try."""
    if isinstance(error, IntegrityError):
        return True
    code = getattr(error.orig, "sqlstate", None) or getattr(getattr(error.orig, "__cause__", None), "sqlstate", None)
    return code in ("40P01", "40001")


async def _earlier_answer(session: AsyncSession, principal: str, key: str, fingerprint: str) -> Answer | None:
    row = (
        await session.execute(
            select(idempotency_keys).where(idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used for a different request")
    return Answer(row.status, dict(row.response), replayed=True)


async def _record(runtime: ServiceRuntime, session: AsyncSession, levels: Sequence[domain.ReportedLevel]) -> Answer:
    now = datetime.now(UTC)
    names = sorted({level.sku for level in levels})
    totals = await _lock_skus(runtime.db, session, names)
    pairs = [(level.warehouse_id, level.sku) for level in levels]
    recorded = {
        (row.warehouse_id, row.sku): domain.RecordedLevel(row.on_hand, utc(row.as_of))
        for row in await session.execute(
            select(stock_levels).where(tuple_(stock_levels.c.warehouse_id, stock_levels.c.sku).in_(pairs))
        )
    }
    plan = domain.plan_report(levels, recorded, totals)

    # Every write in (sku, warehouse) order: concurrent reports then take their locks in the same order.
    ordered = sorted(plan.levels, key=lambda level: (level.sku, level.warehouse_id))
    new_rows = [level for level in ordered if (level.warehouse_id, level.sku) in plan.new_levels]
    moved_rows = [level for level in ordered if (level.warehouse_id, level.sku) not in plan.new_levels]
    if new_rows:
        await session.execute(
            stock_levels.insert(),
            [
                {
                    "warehouse_id": lv.warehouse_id,
                    "sku": lv.sku,
                    "on_hand": lv.on_hand,
                    "as_of": lv.as_of,
                    "updated_at": now,
                }
                for lv in new_rows
            ],
        )
    if moved_rows:
        await session.execute(
            stock_levels.update()
            .where(and_(stock_levels.c.warehouse_id == bindparam("w"), stock_levels.c.sku == bindparam("s")))
            .values(on_hand=bindparam("on_hand"), as_of=bindparam("as_of"), updated_at=now),
            [{"w": lv.warehouse_id, "s": lv.sku, "on_hand": lv.on_hand, "as_of": lv.as_of} for lv in moved_rows],
        )
    created = sorted(sku for sku in plan.changed if totals.get(sku, domain.SkuTotals(0, 0)).revision == 0)
    updated = sorted(sku for sku in plan.changed if sku not in created)
    if created:
        await session.execute(
            skus.insert(),
            [
                {
                    "sku": sku,
                    "on_hand": plan.changed[sku].on_hand,
                    "safety_stock": 0,
                    "revision": plan.changed[sku].revision,
                    "updated_at": now,
                }
                for sku in created
            ],
        )
    if updated:
        await session.execute(
            skus.update()
            .where(skus.c.sku == bindparam("s"))
            .values(on_hand=bindparam("on_hand"), revision=bindparam("revision"), updated_at=now),
            [
                {"s": sku, "on_hand": plan.changed[sku].on_hand, "revision": plan.changed[sku].revision}
                for sku in updated
            ],
        )
    await announce_changes(runtime, session, list(plan.changed))
    flow = current_flow()
    body = {"accepted": plan.accepted, "stale": plan.stale, "correlation_id": flow.correlation_id if flow else None}
    return Answer(202, body)


async def _lock_skus(db: Database, session: AsyncSession, names: Sequence[str]) -> dict[str, domain.SkuTotals]:
    """The SKUs' current totals, their rows locked in name order against concurrent writers.

    A SKU that does not exist yet has no row to lock: a concurrent first report of it is caught by the
    primary key, and `retrying_conflicts` runs the loser again.
    """
    query = select(skus.c.sku, skus.c.on_hand, skus.c.revision).where(skus.c.sku.in_(names)).order_by(skus.c.sku)
    return {row.sku: domain.SkuTotals(row.on_hand, row.revision) for row in await session.execute(db.for_update(query))}


async def set_safety_stock(runtime: ServiceRuntime, sku: str, safety_stock: int) -> None:
    """Create the SKU if needed (revision 1) or change its safety stock (revision + 1, announced)."""

    async def attempt() -> None:
        now = datetime.now(UTC)
        async with runtime.db.transaction() as session:
            query = runtime.db.for_update(select(skus.c.safety_stock).where(skus.c.sku == sku))
            current = (await session.execute(query)).scalar()
            if current is None:
                await session.execute(
                    skus.insert().values(sku=sku, on_hand=0, safety_stock=safety_stock, revision=1, updated_at=now)
                )
            elif current == safety_stock:
                return  # the same safety stock again: nothing changed, nothing to announce
            else:
                await session.execute(
                    skus.update()
                    .where(skus.c.sku == sku)
                    .values(safety_stock=safety_stock, revision=skus.c.revision + 1, updated_at=now)
                )
            await announce_changes(runtime, session, [sku])

    await retrying_conflicts(attempt)


class Announcer:
    """Tells the rest of the system that SKUs changed, in the transaction that changed them: one
    `sku_processed` event each (choreography), or one flow each, started with its first command
    (orchestration). What it uses: the mode, inventory's outbox and the orchestrator."""

    def __init__(self, mode: Mode, outbox: Outbox, orchestrator: Orchestrator) -> None:
        self.mode = mode
        self.outbox = outbox
        self.orchestrator = orchestrator

    async def changed(self, session: AsyncSession, names: Sequence[str]) -> None:
        if self.mode == "orchestration":
            await self.orchestrator.start_flows(session, names)
        else:
            await self.outbox.add_many(session, [routes.sku_processed(sku) for sku in names])

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> Announcer:
        """The announcer of inventory's runtime (the API and the feed record through the runtime)."""
        assert runtime.outbox is not None
        return cls(runtime.settings.mode, runtime.outbox, Orchestrator(runtime.db, runtime.outbox))


async def announce_changes(runtime: ServiceRuntime, session: AsyncSession, names: Sequence[str]) -> None:
    await Announcer.of(runtime).changed(session, names)
