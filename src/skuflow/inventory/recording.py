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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, select, tuple_
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.inventory import domain
from skuflow.inventory.db import idempotency_keys, skus, stock_levels
from skuflow.inventory.orchestration import NewFlow, Orchestrator
from skuflow.messaging import Outgoing, current_flow, routes
from skuflow.platform.db import Database, in_slices, utc
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
    load each report no longer waits for the write lock behind every other, one transaction each; and the
    group is written set-wise, a few statements whatever its size, where each report was five of its own."""

    def __init__(self, runtime: ServiceRuntime, max_batch: int = 100) -> None:
        self.runtime = runtime
        self.group: GroupCommit[Report, Answer] = GroupCommit(self._write, self._alone, max_batch)

    async def record(self, report: Report) -> Answer:
        """The report recorded with the events it causes, or nothing of it (`IdempotencyConflict`)."""
        return await self.group.submit(report)

    async def _alone(self, report: Report) -> Answer:
        async def attempt() -> Answer:
            (answer,) = await self._write([Submitted(report)])
            if isinstance(answer, Exception):
                raise answer
            return answer

        return await retrying_conflicts(attempt)

    async def _write(self, reports: Sequence[Submitted[Report]]) -> list[Answer | Exception]:
        """The reports in one transaction, in the order they came, each in its request's flow. A report
        refused before it wrote anything (its Idempotency-Key used for another request) is that report's
        answer; any other error fails the transaction, and every report is then recorded alone."""
        async with self.runtime.db.transaction() as session:
            return await _record_group(self.runtime, session, reports)


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


@dataclass(frozen=True, slots=True)
class Stored:
    """An Idempotency-Key's record: the fingerprint of the request that used it, and its answer."""

    fingerprint: str
    answer: Answer


async def _record_group(
    runtime: ServiceRuntime, session: AsyncSession, reports: Sequence[Submitted[Report]]
) -> list[Answer | Exception]:
    """Record reports in order as if one after another, in a fixed number of statements: read what they
    touch (the SKUs locked), plan each report against what the ones before it left, then write the end
    state. Each report keeps its own answer, Idempotency-Key record, and announcements in its own flow."""
    now = datetime.now(UTC)
    stored = await stored_answers(session, {(r.item.principal, r.item.idempotency_key) for r in reports})
    names = sorted({level.sku for report in reports for level in report.item.levels})
    totals = await _lock_skus(runtime.db, session, names)
    pairs = sorted({(level.warehouse_id, level.sku) for report in reports for level in report.item.levels})
    recorded = await _recorded_levels(session, pairs)
    new_pairs = set(pairs) - set(recorded)
    new_skus = set(names) - set(totals)
    announcer = Announcer.of(runtime)

    answers: list[Answer | Exception] = []
    written: dict[tuple[str, str], domain.ReportedLevel] = {}
    changed: dict[str, domain.SkuTotals] = {}
    announced: list[Announcement] = []
    keys: list[dict[str, Any]] = []
    for submitted in reports:
        report = submitted.item
        key = (report.principal, report.idempotency_key)
        earlier = stored.get(key)
        if earlier is not None:
            if earlier.fingerprint != report.fingerprint:
                answers.append(IdempotencyConflict(_key_used_for_another(report.idempotency_key)))
            else:
                answers.append(replace(earlier.answer, replayed=True))
            continue
        plan = domain.plan_report(report.levels, recorded, totals)
        for level in plan.levels:
            recorded[(level.warehouse_id, level.sku)] = domain.RecordedLevel(level.on_hand, level.as_of)
            written[(level.warehouse_id, level.sku)] = level
        totals.update(plan.changed)
        changed.update(plan.changed)
        announced += [
            submitted.context.run(announcer.announcement, sku, after.revision) for sku, after in plan.changed.items()
        ]
        flow = submitted.context.run(current_flow)
        body = {"accepted": plan.accepted, "stale": plan.stale, "correlation_id": flow.correlation_id if flow else None}
        answer = Answer(202, body)
        answers.append(answer)
        if report.idempotency_key is not None:
            stored[key] = Stored(report.fingerprint, answer)
            keys.append(
                {
                    "principal": report.principal,
                    "key": report.idempotency_key,
                    "request_hash": report.fingerprint,
                    "status": answer.status,
                    "response": answer.body,
                    "created_at": now,
                }
            )

    await _write_levels(session, written, new_pairs, now)
    await _write_totals(session, changed, new_skus, now)
    await announcer.announce(session, announced)
    if keys:
        await session.execute(idempotency_keys.insert(), keys)
    return answers


def _key_used_for_another(key: str | None) -> str:
    return f"Idempotency-Key {key!r} was already used for a different request"


async def stored_answers(session: AsyncSession, keys: set[tuple[str, str | None]]) -> dict[Any, Stored]:
    """The recorded answers of those (principal, Idempotency-Key) pairs that have one."""
    wanted = [(principal, key) for principal, key in keys if key is not None]
    if not wanted:
        return {}
    query = select(idempotency_keys).where(tuple_(idempotency_keys.c.principal, idempotency_keys.c.key).in_(wanted))
    return {
        (row.principal, row.key): Stored(row.request_hash, Answer(row.status, dict(row.response)))
        for row in await session.execute(query)
    }


async def _recorded_levels(
    session: AsyncSession, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], domain.RecordedLevel]:
    found: dict[tuple[str, str], domain.RecordedLevel] = {}
    for some in in_slices(pairs):
        wanted = tuple_(stock_levels.c.warehouse_id, stock_levels.c.sku).in_(some)
        for row in await session.execute(select(stock_levels).where(wanted)):
            found[(row.warehouse_id, row.sku)] = domain.RecordedLevel(row.on_hand, utc(row.as_of))
    return found


async def _write_levels(
    session: AsyncSession,
    written: dict[tuple[str, str], domain.ReportedLevel],
    new_pairs: set[tuple[str, str]],
    now: datetime,
) -> None:
    """Each level's last number, in (sku, warehouse) order: concurrent reports then take their locks in
    the same order."""
    ordered = sorted(written.values(), key=lambda level: (level.sku, level.warehouse_id))
    new_rows = [level for level in ordered if (level.warehouse_id, level.sku) in new_pairs]
    moved_rows = [level for level in ordered if (level.warehouse_id, level.sku) not in new_pairs]
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


async def _write_totals(
    session: AsyncSession, changed: dict[str, domain.SkuTotals], new_skus: set[str], now: datetime
) -> None:
    """The changed SKUs' last totals and revisions; those not yet recorded created."""
    created = sorted(sku for sku in changed if sku in new_skus)
    updated = sorted(sku for sku in changed if sku not in new_skus)
    if created:
        await session.execute(
            skus.insert(),
            [
                {
                    "sku": sku,
                    "on_hand": changed[sku].on_hand,
                    "safety_stock": 0,
                    "revision": changed[sku].revision,
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
            [{"s": sku, "on_hand": changed[sku].on_hand, "revision": changed[sku].revision} for sku in updated],
        )


async def _lock_skus(db: Database, session: AsyncSession, names: Sequence[str]) -> dict[str, domain.SkuTotals]:
    """The SKUs' current totals, their rows locked in name order against concurrent writers.

    A SKU that does not exist yet has no row to lock: a concurrent first report of it is caught by the
    primary key, and `retrying_conflicts` runs the loser again.
    """
    totals: dict[str, domain.SkuTotals] = {}
    for some in in_slices(names):  # names sorted: the slices lock in name order too
        query = select(skus.c.sku, skus.c.on_hand, skus.c.revision).where(skus.c.sku.in_(some)).order_by(skus.c.sku)
        for row in await session.execute(db.for_update(query)):
            totals[row.sku] = domain.SkuTotals(row.on_hand, row.revision)
    return totals


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


Announcement = Outgoing | NewFlow


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

    def announcement(self, sku: str, revision: int) -> Announcement:
        """What announces a SKU's change to `revision`, built in the current flow, whose ids it carries."""
        if self.mode == "orchestration":
            return self.orchestrator.new_flow(sku, revision)
        return routes.sku_processed(sku)

    async def announce(self, session: AsyncSession, announcements: Sequence[Announcement]) -> None:
        """Write announcements built by `announcement`, all in a few statements."""
        if self.mode == "orchestration":
            await self.orchestrator.start(session, [a for a in announcements if isinstance(a, NewFlow)])
        else:
            await self.outbox.add_many(session, [a for a in announcements if isinstance(a, Outgoing)])

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> Announcer:
        """The announcer of inventory's runtime (the API and the feed record through the runtime)."""
        assert runtime.outbox is not None
        return cls(runtime.settings.mode, runtime.outbox, Orchestrator(runtime.db, runtime.outbox))


async def announce_changes(runtime: ServiceRuntime, session: AsyncSession, names: Sequence[str]) -> None:
    await Announcer.of(runtime).changed(session, names)
