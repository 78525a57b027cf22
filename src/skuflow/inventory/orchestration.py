"""Orchestration (`SKUFLOW_MODE=orchestration`, CONTRACT sections 1, 2 and 7): inventory drives each SKU
change through its steps and keeps track of every flow in its own database.

    recalculate_sku (inventory) --> update_sku_availability (catalog)
                                \\-> update_wishlists_for_sku (users)

A flow starts in the transaction that changed the SKU, with its first command in the outbox: a flow never
exists without its command, nor the reverse. Each `step_finished` reply moves it on in one transaction,
with the next commands in the outbox; a reply for a step already done, or for a flow no longer running, is
ignored. A step not answered within `SKUFLOW_FLOW_STEP_TIMEOUT_SECONDS` is sent again (the owners are
idempotent), and after `SKUFLOW_FLOW_STEP_ATTEMPTS` sends the step and its flow are failed; its clock is held
while its owner's queue, or the reply queue, has a backlog being worked (`StepTimeouts`). A newer change of
the same SKU supersedes a flow still running. Since all of it is in the database and the outbox, a restart
of inventory resumes every flow where it was, in either mode.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from skuflow.inventory.db import flow_steps, flows, outbox, skus
from skuflow.inventory.messages import StepFinished
from skuflow.messaging import Message, Outgoing, QueueState, current_flow, new_id, routes
from skuflow.platform.background import Periodic
from skuflow.platform.clock import Clock, utc_now
from skuflow.platform.db import Database, in_slices
from skuflow.platform.outbox import Outbox

log = logging.getLogger("skuflow.inventory.flows")

RECALCULATE = routes.RECALCULATE_SKU.name
UPDATE_CATALOG = routes.UPDATE_SKU_AVAILABILITY.name
UPDATE_WISHLISTS = routes.UPDATE_WISHLISTS_FOR_SKU.name
STEPS = (RECALCULATE, UPDATE_CATALOG, UPDATE_WISHLISTS)
# The queue each step's command waits in for its owner, from the route table.
OWNER_QUEUES = {route.message.name: route.name for route in routes.ROUTES if route.message.name in STEPS}
# Where a step's answer may wait its turn: its command in its owner's queue, then the reply in inventory's.
WATCHED = (*OWNER_QUEUES.values(), routes.FLOW_REPLIES)
SWEEP_BATCH = 500
# Seconds a sweep waits for the broker's answer about the queues before it sweeps without it.
QUEUE_READ_TIMEOUT = 2.0

QueueStates = Callable[[str], Awaitable[QueueState]]


_last_microsecond = 0


def new_flow_id() -> str:
    """Unique and time-ordered (microseconds, strictly rising in this process, then randomness), so that
    flows page in the order they began."""
    global _last_microsecond
    _last_microsecond = max(time.time_ns() // 1000, _last_microsecond + 1)
    return f"{_last_microsecond:014x}{secrets.token_hex(9)}"


@dataclass(frozen=True, slots=True)
class NewFlow:
    """A flow not yet written: its row and its first command."""

    flow: dict[str, Any]
    command: Outgoing


class Orchestrator:
    """Starts flows and moves them on; what it uses: inventory's database, its outbox and a clock."""

    def __init__(self, db: Database, outbox: Outbox, clock: Clock = utc_now) -> None:
        self.db = db
        self.outbox = outbox
        self.clock = clock

    async def start_flows(self, session: AsyncSession, names: Sequence[str]) -> None:
        """One flow per changed SKU, in the transaction that changed them, with its first command."""
        if not names:
            return
        query = select(skus.c.sku, skus.c.revision).where(skus.c.sku.in_(names))
        revisions = dict((await session.execute(query)).all())
        await self.start(session, [self.new_flow(sku, revisions[sku]) for sku in names])

    def new_flow(self, sku: str, revision: int) -> NewFlow:
        """A flow for a SKU's change to `revision`, in the current flow's context (its correlation id, and the
        causation of its first command): built where the change was decided, written by `start`."""
        context = current_flow()
        now = self.clock()
        flow = {
            "flow_id": new_flow_id(),
            "correlation_id": context.correlation_id if context else new_id(),
            "sku": sku,
            "revision": revision,
            "status": "running",
            "started_at": now,
            "updated_at": now,
        }
        return NewFlow(flow, step_command(RECALCULATE, flow))

    async def start(self, session: AsyncSession, started: Sequence[NewFlow]) -> None:
        """Write new flows with their first commands, superseding the SKUs' running flows. Of several for one
        SKU (reports recorded together), the last runs and the others are written superseded, unsent."""
        if not started:
            return
        now = self.clock()
        for names in in_slices(sorted({new.flow["sku"] for new in started})):
            await session.execute(
                flows.update()
                .where(flows.c.sku.in_(names), flows.c.status == "running")
                .values(status="superseded", updated_at=now, finished_at=now)
            )
        last = {new.flow["sku"]: new for new in started}
        rows: list[dict[str, Any]] = []
        steps: list[dict[str, Any]] = []
        commands: list[Outgoing] = []
        for new in started:
            sent = last[new.flow["sku"]] is new
            # Every row with the same keys: an executemany (or COPY) takes its columns from the first row.
            ended = {"finished_at": None} if sent else {"status": "superseded", "updated_at": now, "finished_at": now}
            traceparent = new.command.envelope.headers.get("traceparent")  # of the report that started it
            rows.append({**new.flow, **ended, "traceparent": traceparent})
            if sent:
                commands.append(new.command)
            for step in STEPS:
                first = sent and step == RECALCULATE
                steps.append(
                    {
                        "flow_id": new.flow["flow_id"],
                        "step": step,
                        "status": "pending",
                        "attempts": 1 if first else 0,
                        "sent_at": now if first else None,
                        "command_id": new.command.envelope.message_id if first else None,
                    }
                )
        await self.db.insert_many(session, flows, rows)
        await self.db.insert_many(session, flow_steps, steps)
        await self.outbox.add_many(session, commands)

    async def on_step_finished(self, messages: Sequence[Message[StepFinished]]) -> None:
        """Consumer of `inventory.flow_replies`: move each reply's flow on, the batch in one transaction and a
        fixed number of statements: the flows are read (locked in key order, as two batches of two processes
        then queue instead of deadlocking) with their steps, each reply moves them on in memory in turn (in
        its own flow context, for the commands it sends), and what changed is written back at once."""
        ordered = sorted(messages, key=lambda message: message.body.flow_id)
        async with self.db.transaction() as session:
            moves = await _Moves.read(self.db, session, [message.body for message in ordered], self.clock())
            for message in ordered:
                with message.flow():
                    moves.move_on(message.body)
            await moves.write(session)
            await self.outbox.add_many(session, moves.commands)


class _Moves:
    """Flows and their steps as a batch of replies leaves them: read once, changed in memory, written once."""

    def __init__(self, flows: dict[str, dict[str, Any]], steps: dict[tuple[str, str], dict[str, Any]], now: datetime):
        self.flows = flows
        self.steps = steps
        self.now = now
        self.availability: dict[str, dict[str, Any]] = {}  # sku -> what recalculation found, for its flows
        self.changed_flows: set[str] = set()
        self.changed_steps: set[tuple[str, str]] = set()
        self.commands: list[Outgoing] = []

    @classmethod
    async def read(cls, db: Database, session: AsyncSession, replies: Sequence[StepFinished], now: datetime) -> _Moves:
        ids = sorted({reply.flow_id for reply in replies})
        query = db.for_update(select(flows).where(flows.c.flow_id.in_(ids)).order_by(flows.c.flow_id))
        found = {row.flow_id: dict(row._mapping) for row in await session.execute(query)}
        steps = {
            (row.flow_id, row.step): dict(row._mapping)
            for row in await session.execute(select(flow_steps).where(flow_steps.c.flow_id.in_(list(found))))
        }
        moves = cls(found, steps, now)
        recalculated = sorted(
            {found[r.flow_id]["sku"] for r in replies if r.step == RECALCULATE and r.flow_id in found}
        )
        if recalculated:
            query = select(skus.c.sku, skus.c.available_for_sale, skus.c.recalculated_revision)
            moves.availability = {
                row.sku: {
                    "available_for_sale": row.available_for_sale,
                    "recalculated_revision": row.recalculated_revision,
                }
                for row in await session.execute(query.where(skus.c.sku.in_(recalculated)))
            }
        return moves

    def move_on(self, reply: StepFinished) -> None:
        flow = self.flows.get(reply.flow_id)
        if flow is None:
            log.warning("step_finished for unknown flow %s (%s): ignored", reply.flow_id, reply.step)
            return
        step = self.steps.get((reply.flow_id, reply.step))
        if step is None or step["attempts"] == 0 or reply.sku != flow["sku"]:
            log.warning("an answer flow %s did not ask for (%s, %s): ignored", reply.flow_id, reply.step, reply.sku)
            return
        if flow["status"] != "running" or step["status"] != "pending":
            # A repeat, or an answer after the flow failed or was superseded: the flow's outcome stands.
            log.info("late or repeated %s for flow %s (%s): ignored", reply.step, reply.flow_id, flow["status"])
            return
        if not reply.ok:
            self._fail(flow, reply.step, reply.error or "the step failed")
            return
        self._set_step(flow, reply.step, status="done", finished_at=self.now)
        if reply.step == RECALCULATE:
            self._after_recalculation(flow)
        elif all(self.steps[(reply.flow_id, name)]["status"] == "done" for name in STEPS):
            self._set_flow(flow, status="completed", finished_at=self.now)
        else:
            self._set_flow(flow)

    def _after_recalculation(self, flow: dict[str, Any]) -> None:
        """Send catalog and users what recalculation found, with the revision it was found at."""
        # Flows are only started for SKUs that exist, and SKUs are never deleted.
        self._set_flow(flow, **self.availability[flow["sku"]])
        for step in (UPDATE_CATALOG, UPDATE_WISHLISTS):
            command = step_command(step, flow)
            self.commands.append(command)
            self._set_step(flow, step, attempts=1, sent_at=self.now, command_id=command.envelope.message_id)

    def _fail(self, flow: dict[str, Any], step: str, error: str) -> None:
        self._set_step(flow, step, status="failed", finished_at=self.now, error=error)
        self._set_flow(flow, status="failed", error=f"{step}: {error}", finished_at=self.now)
        log.error("flow %s failed at %s: %s", flow["flow_id"], step, error)

    def _set_flow(self, flow: dict[str, Any], **values: Any) -> None:
        flow.update(values, updated_at=self.now)
        self.changed_flows.add(flow["flow_id"])

    def _set_step(self, flow: dict[str, Any], step: str, **values: Any) -> None:
        self.steps[(flow["flow_id"], step)].update(values)
        self.changed_steps.add((flow["flow_id"], step))

    async def write(self, session: AsyncSession) -> None:
        if self.changed_steps:
            await session.execute(
                flow_steps.update()
                .where(flow_steps.c.flow_id == bindparam("key_flow"), flow_steps.c.step == bindparam("key_step"))
                .values({name: bindparam(name) for name in _STEP_STATE}),
                [
                    {
                        "key_flow": flow_id,
                        "key_step": step,
                        **{name: self.steps[(flow_id, step)][name] for name in _STEP_STATE},
                    }
                    for flow_id, step in sorted(self.changed_steps)
                ],
            )
        if self.changed_flows:
            await session.execute(
                flows.update()
                .where(flows.c.flow_id == bindparam("key_flow"))
                .values({name: bindparam(name) for name in _FLOW_STATE}),
                [
                    {"key_flow": flow_id, **{name: self.flows[flow_id][name] for name in _FLOW_STATE}}
                    for flow_id in sorted(self.changed_flows)
                ],
            )


# What a reply may change of a step and of a flow, written back whole.
_STEP_STATE = ("status", "attempts", "sent_at", "command_id", "finished_at", "error")
_FLOW_STATE = ("status", "available_for_sale", "recalculated_revision", "error", "updated_at", "finished_at")


async def fail(session: AsyncSession, flow_id: str, step: str, error: str, now: datetime) -> None:
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


def step_command(step: str, flow: Any) -> Outgoing:
    """The command of `step` for a flow (a row of `flows`, or the same keys): first send or a resend."""
    ids = {"flow_id": flow["flow_id"], "correlation_id": flow["correlation_id"]}
    if step == RECALCULATE:
        return routes.recalculate_sku(flow["sku"], **ids)
    news = {"available_for_sale": flow["available_for_sale"], "revision": flow["recalculated_revision"], **ids}
    if step == UPDATE_CATALOG:
        return routes.update_sku_availability(flow["sku"], **news)
    return routes.update_wishlists_for_sku(flow["sku"], **news)


class StepTimeouts:
    """Sends a step's command again when it was not answered in time; fails the flow after the last try.

    A step is overdue when its command left the outbox a timeout ago AND neither its owner's queue nor the
    reply queue was seen busy (messages ready, and a consumer) within the last timeout; the reply queue holds
    only the steps whose owner has a consumer (one that is down has no reply on its way). A busy queue means the
    command, or its reply, is waiting its turn, not lost: resending it would only lengthen the line (under a
    burst every step would be resent, and the duplicates, and their replies, would make the backlog worse: the
    run collapses). The wait in a queue is unbounded, as Temporal's schedule-to-start; only the time the owner
    works is bounded. A queue with no consumer (the owner is down) holds nothing: flows are resent and fail,
    visibly. A consumer that is stuck with its queue full holds its steps for as long: that shows in the
    queue's depth and consumers, not in failed flows.

    Runs in every mode, so that flows started before a switch to choreography still end."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        timeout_seconds: float,
        attempts: int,
        *,
        queue_state: QueueStates,
        clock: Clock = utc_now,
    ) -> None:
        """`queue_state`: the broker's answer about a queue (`Broker.queue_state`)."""
        self.db = db
        self.outbox = outbox
        self.queue_state = queue_state
        self.clock = clock
        self.timeout = timedelta(seconds=timeout_seconds)
        self.attempts = attempts
        self.interval = min(1.0, timeout_seconds / 4)
        self.resent = 0
        self.failed = 0
        self.held = 0  # steps past their timeout at the last sweep, held by a busy queue
        self._busy_at: dict[str, datetime] = {}  # queue -> when a sweep last saw it busy
        self._consumed: set[str] = set()  # the queues with a consumer at the last read
        self._unread = False  # whether the last read of the queues failed (logged once, until one succeeds)
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
        async with self.db.one_worker("skuflow-flow-step-timeouts") as mine:
            return await self._sweep() if mine else 0

    async def _sweep(self) -> int:
        now = self.clock()
        cutoff = now - self.timeout
        db = self.db
        await self._look_at_queues(now)
        held = [step for step, queue in OWNER_QUEUES.items() if self._waits_its_turn(queue, cutoff)]
        # A step's clock runs from when its command left the outbox (a big import's commands may wait
        # there a while); from when it was written once the relay has purged the row.
        command = outbox.alias("command")
        late = and_(
            flows.c.status == "running",
            flow_steps.c.status == "pending",
            flow_steps.c.attempts > 0,
            or_(
                and_(command.c.id.is_(None), flow_steps.c.sent_at < cutoff),
                command.c.published_at < cutoff,
            ),
        )
        steps = (
            select(flow_steps.c.flow_id, flow_steps.c.step, flow_steps.c.attempts, flows)
            .join(flows, flows.c.flow_id == flow_steps.c.flow_id)
            .outerjoin(command, command.c.message_id == flow_steps.c.command_id)
        )
        query = (steps.where(late, flow_steps.c.step.not_in(held)) if held else steps.where(late)).limit(SWEEP_BATCH)
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
                    await fail(session, row.flow_id, row.step, error, now)
                    self.failed += 1
                    continue
                resend = step_command(row.step, row._mapping)
                if row.traceparent:  # published in the flow's trace, beside its first send
                    traced = resend.envelope.with_headers(traceparent=row.traceparent)
                    resend = Outgoing(traced, resend.exchange, resend.routing_key)
                await session.execute(
                    update(flow_steps)
                    .where(flow_steps.c.flow_id == row.flow_id, flow_steps.c.step == row.step)
                    .values(attempts=flow_steps.c.attempts + 1, sent_at=now, command_id=resend.envelope.message_id)
                )
                resends.append(resend)
                log.warning("flow %s: %s unanswered; sent again (%d)", row.flow_id, row.step, row.attempts + 1)
            await self.outbox.add_many(session, resends)
            self.resent += len(resends)
        still = 0
        if held:  # for the gauge only: read beside the writers (SQLite's write lock is inventory's bottleneck)
            async with db.reading() as session:
                counted = steps.with_only_columns(func.count()).where(late, flow_steps.c.step.in_(held))
                still = await session.scalar(counted) or 0
        self.held = still
        return len(overdue)

    def _waits_its_turn(self, queue: str, cutoff: datetime) -> bool:
        """Whether the answer of a step whose command goes to `queue` may be waiting behind others (seen so
        since `cutoff`): the command in `queue`, or, its owner there to have answered, the reply."""

        def busy(name: str) -> bool:
            return self._busy_at.get(name, cutoff) > cutoff

        return busy(queue) or (queue in self._consumed and busy(routes.FLOW_REPLIES))

    async def _look_at_queues(self, now: datetime) -> None:
        """Note which of the watched queues are busy now: messages ready, and a consumer working through them.
        Unread (the broker unreachable), a queue is not seen busy: its steps' clocks run again a timeout after
        it was."""
        try:
            async with asyncio.timeout(QUEUE_READ_TIMEOUT):
                states = await asyncio.gather(*(self.queue_state(queue) for queue in WATCHED))
        except Exception as error:
            if not self._unread:
                log.warning("cannot read the flow steps' queues (%r): their backlogs hold no step's clock", error)
            self._unread = True
            return
        if self._unread:
            log.info("the flow steps' queues are read again")
        self._unread = False
        self._consumed = {queue for queue, state in zip(WATCHED, states, strict=True) if state.consumers > 0}
        for queue, state in zip(WATCHED, states, strict=True):
            if state.ready > 0 and state.consumers > 0:
                self._busy_at[queue] = now
