"""Orchestration (`SKUFLOW_MODE=orchestration`, CONTRACT sections 1, 2 and 7): inventory drives each SKU
change through its steps and keeps track of every flow in its own database.

    recalculate_sku (inventory) --> update_sku_availability (catalog)
                                \\-> update_wishlists_for_sku (users)

A flow starts in the transaction that changed the SKU, with its first command in the outbox: a flow never
exists without its command, nor the reverse. Each `step_finished` reply moves it on in one transaction,
with the next commands in the outbox; a reply for a step already done, or for a flow no longer running, is
ignored. A step not answered within `SKUFLOW_FLOW_STEP_TIMEOUT_SECONDS` is sent again (the owners are
idempotent), and after `SKUFLOW_FLOW_STEP_ATTEMPTS` sends the step and its flow are failed. A newer change of
the same SKU supersedes a flow still running. Since all of it is in the database and the outbox, a restart
of inventory resumes every flow where it was, in either mode.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.inventory.db import flow_steps, flows, outbox, skus
from skuflow.messaging import COMMANDS, FLOW_ID, Message, Outgoing, current_flow, new_id
from skuflow.platform.background import Periodic
from skuflow.platform.flows import StepFinished
from skuflow.platform.runtime import ServiceRuntime

log = logging.getLogger("skuflow.inventory.flows")

RECALCULATE = "recalculate_sku"
UPDATE_CATALOG = "update_sku_availability"
UPDATE_WISHLISTS = "update_wishlists_for_sku"
STEPS = (RECALCULATE, UPDATE_CATALOG, UPDATE_WISHLISTS)
OWNERS = {RECALCULATE: "inventory", UPDATE_CATALOG: "catalog", UPDATE_WISHLISTS: "users"}
STEP_FINISHED = "step_finished"
SWEEP_BATCH = 500


_last_microsecond = 0


def new_flow_id() -> str:
    """Unique and time-ordered (microseconds, strictly rising in this process, then randomness), so that
    flows page in the order they began."""
    global _last_microsecond
    _last_microsecond = max(time.time_ns() // 1000, _last_microsecond + 1)
    return f"{_last_microsecond:014x}{secrets.token_hex(9)}"


async def start_flows(runtime: ServiceRuntime, session: AsyncSession, names: Sequence[str]) -> None:
    """One flow per changed SKU, in the transaction that changed them, with its first command."""
    if not names:
        return
    now = datetime.now(UTC)
    revisions = dict((await session.execute(select(skus.c.sku, skus.c.revision).where(skus.c.sku.in_(names)))).all())
    await session.execute(
        flows.update()
        .where(flows.c.sku.in_(names), flows.c.status == "running")
        .values(status="superseded", updated_at=now, finished_at=now)
    )
    context = current_flow()
    correlation_id = context.correlation_id if context else new_id()
    started: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    commands: list[Outgoing] = []
    for sku in names:
        flow = {
            "flow_id": new_flow_id(),
            "correlation_id": correlation_id,
            "sku": sku,
            "revision": revisions[sku],
            "status": "running",
            "started_at": now,
            "updated_at": now,
        }
        started.append(flow)
        commands.append(_command(runtime, RECALCULATE, flow))
        for step in STEPS:
            first = step == RECALCULATE
            steps.append(
                {
                    "flow_id": flow["flow_id"],
                    "step": step,
                    "status": "pending",
                    "attempts": 1 if first else 0,
                    "sent_at": now if first else None,
                    "command_id": commands[-1].envelope.message_id if first else None,
                }
            )
    await runtime.db.insert_many(session, flows, started)
    await runtime.db.insert_many(session, flow_steps, steps)
    await _send(runtime, session, commands)


async def on_step_finished(runtime: ServiceRuntime, message: Message[StepFinished]) -> None:
    """Consumer of `inventory.flow_replies`: move the flow on."""
    reply = message.body
    now = datetime.now(UTC)
    async with runtime.db.transaction() as session:
        flow = (
            await session.execute(runtime.db.for_update(select(flows).where(flows.c.flow_id == reply.flow_id)))
        ).first()
        if flow is None:
            log.warning("step_finished for unknown flow %s (%s): ignored", reply.flow_id, reply.step)
            return
        step = (
            await session.execute(
                select(flow_steps).where(flow_steps.c.flow_id == reply.flow_id, flow_steps.c.step == reply.step)
            )
        ).first()
        if step is None or step.attempts == 0 or reply.sku != flow.sku:
            log.warning("an answer flow %s did not ask for (%s, %s): ignored", flow.flow_id, reply.step, reply.sku)
            return
        if flow.status != "running" or step.status != "pending":
            # A repeat, or an answer after the flow failed or was superseded: the flow's outcome stands.
            log.info("late or repeated %s for flow %s (%s): ignored", reply.step, reply.flow_id, flow.status)
            return
        if not reply.ok:
            await _fail(session, flow.flow_id, reply.step, reply.error or "the step failed", now)
            return
        await _set_step(session, flow.flow_id, reply.step, status="done", finished_at=now)
        if reply.step == RECALCULATE:
            await _after_recalculation(runtime, session, flow, now)
        elif await _all_done(session, flow.flow_id):
            await session.execute(
                flows.update()
                .where(flows.c.flow_id == flow.flow_id, flows.c.status == "running")
                .values(status="completed", updated_at=now, finished_at=now)
            )
        else:
            await session.execute(flows.update().where(flows.c.flow_id == flow.flow_id).values(updated_at=now))


async def _after_recalculation(runtime: ServiceRuntime, session: AsyncSession, flow: Any, now: datetime) -> None:
    """Send catalog and users what recalculation found, with the revision it was found at."""
    sku = (
        await session.execute(
            select(skus.c.available_for_sale, skus.c.recalculated_revision).where(skus.c.sku == flow.sku)
        )
    ).first()
    assert sku is not None  # flows are only started for SKUs that exist, and SKUs are never deleted
    values = {"available_for_sale": sku.available_for_sale, "recalculated_revision": sku.recalculated_revision}
    await session.execute(flows.update().where(flows.c.flow_id == flow.flow_id).values(**values, updated_at=now))
    row = {**flow._mapping, **values}
    commands = [_command(runtime, step, row) for step in (UPDATE_CATALOG, UPDATE_WISHLISTS)]
    for step, command in zip((UPDATE_CATALOG, UPDATE_WISHLISTS), commands, strict=True):
        await _set_step(session, flow.flow_id, step, attempts=1, sent_at=now, command_id=command.envelope.message_id)
    await _send(runtime, session, commands)


async def _all_done(session: AsyncSession, flow_id: str) -> bool:
    waiting = await session.scalar(
        select(func.count())
        .select_from(flow_steps)
        .where(flow_steps.c.flow_id == flow_id, flow_steps.c.status != "done")
    )
    return not waiting


async def _fail(session: AsyncSession, flow_id: str, step: str, error: str, now: datetime) -> None:
    await _set_step(session, flow_id, step, status="failed", finished_at=now, error=error)
    await session.execute(
        flows.update()
        .where(flows.c.flow_id == flow_id, flows.c.status == "running")
        .values(status="failed", error=f"{step}: {error}", updated_at=now, finished_at=now)
    )
    log.error("flow %s failed at %s: %s", flow_id, step, error)


async def _set_step(session: AsyncSession, flow_id: str, step: str, **values: Any) -> None:
    await session.execute(
        flow_steps.update().where(flow_steps.c.flow_id == flow_id, flow_steps.c.step == step).values(**values)
    )


def _command(runtime: ServiceRuntime, step: str, flow: Any) -> Outgoing:
    """The command of `step` for a flow (a row of `flows`, or the same keys): first send or a resend."""
    body: dict[str, Any] = {"sku": flow["sku"]}
    if step != RECALCULATE:
        body |= {"available_for_sale": flow["available_for_sale"], "revision": flow["recalculated_revision"]}
    headers = {FLOW_ID: flow["flow_id"]}
    envelope = runtime.broker.envelope(step, body, correlation_id=flow["correlation_id"], headers=headers)
    return Outgoing(envelope, COMMANDS.name, f"{OWNERS[step]}.{step}")


async def _send(runtime: ServiceRuntime, session: AsyncSession, commands: list[Outgoing]) -> None:
    assert runtime.outbox is not None
    await runtime.outbox.add_many(session, commands)


class StepTimeouts:
    """Sends a step's command again when it was not answered in time; fails the flow after the last try.

    Runs in every mode, so that flows started before a switch to choreography still end."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.timeout = timedelta(seconds=runtime.settings.flow_step_timeout_seconds)
        self.attempts = runtime.settings.flow_step_attempts
        self.interval = min(1.0, runtime.settings.flow_step_timeout_seconds / 4)
        self.resent = 0
        self.failed = 0
        self._periodic = Periodic("flow step timeouts", self.drain, self.interval)

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def drain(self) -> None:
        """Sweep until no overdue step is left (a sweep handles at most SWEEP_BATCH)."""
        while await self.sweep() == SWEEP_BATCH:
            pass

    async def sweep(self) -> int:
        """Handle the steps overdue now; answers how many."""
        async with self.runtime.db.one_worker("skuflow-flow-step-timeouts") as mine:
            return await self._sweep() if mine else 0

    async def _sweep(self) -> int:
        now = datetime.now(UTC)
        cutoff = now - self.timeout
        db = self.runtime.db
        # A step's clock runs from when its command left the outbox (a big import's commands may wait
        # there a while); from when it was written once the relay has purged the row.
        command = outbox.alias("command")
        query = (
            select(flow_steps.c.flow_id, flow_steps.c.step, flow_steps.c.attempts, flows)
            .join(flows, flows.c.flow_id == flow_steps.c.flow_id)
            .outerjoin(command, command.c.message_id == flow_steps.c.command_id)
            .where(
                and_(
                    flows.c.status == "running",
                    flow_steps.c.status == "pending",
                    flow_steps.c.attempts > 0,
                    or_(
                        and_(command.c.id.is_(None), flow_steps.c.sent_at < cutoff),
                        command.c.published_at < cutoff,
                    ),
                )
            )
            .limit(SWEEP_BATCH)
        )
        if not db.is_sqlite:
            # Several inventory processes: each takes other steps. The flow is locked too, first, as a
            # reply's transaction locks it, so that the two queue instead of deadlocking.
            query = query.with_for_update(of=(flows, flow_steps), skip_locked=True)
        async with db.transaction() as session:
            overdue = (await session.execute(query)).all()
            resends = []
            for row in overdue:
                if row.attempts >= self.attempts:
                    error = f"no step_finished after {row.attempts} attempts of {self.timeout.total_seconds():g} s"
                    await _fail(session, row.flow_id, row.step, error, now)
                    self.failed += 1
                    continue
                resend = _command(self.runtime, row.step, row._mapping)
                await session.execute(
                    update(flow_steps)
                    .where(flow_steps.c.flow_id == row.flow_id, flow_steps.c.step == row.step)
                    .values(attempts=flow_steps.c.attempts + 1, sent_at=now, command_id=resend.envelope.message_id)
                )
                resends.append(resend)
                log.warning("flow %s: %s unanswered; sent again (%d)", row.flow_id, row.step, row.attempts + 1)
            await _send(self.runtime, session, resends)
            self.resent += len(resends)
        return len(overdue)
