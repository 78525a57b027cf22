"""The step timeouts' hold, with the time set by the test: a step's clock is held while its owner's queue, or
the reply queue, was seen busy within the last timeout, and runs when the queues cannot be read (said once).
The hold behind a real backlog, on both brokers: tests/services/test_orchestration.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from skuflow.inventory.db import flow_steps, outbox, skus
from skuflow.inventory.orchestration import OWNER_QUEUES, RECALCULATE, Orchestrator, StepTimeouts
from skuflow.inventory.service import MIGRATIONS
from skuflow.messaging import QueueState, routes
from skuflow.platform.db import Database
from skuflow.platform.outbox import Outbox

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TIMEOUT = 10.0


class Queues:
    """What the broker answers about the flow steps' queues: a state for each, or an error (unreachable)."""

    def __init__(self) -> None:
        self.states: dict[str, QueueState] = {}
        self.unreachable = False

    async def queue_state(self, queue: str) -> QueueState:
        if self.unreachable:
            raise ConnectionError("the broker is unreachable")
        return self.states.get(queue, QueueState(ready=0, consumers=1))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}", MIGRATIONS)
    await db.migrate()
    async with db.transaction() as session:
        await session.execute(
            skus.insert().values(sku="SKU-1", on_hand=5, safety_stock=0, revision=1, updated_at=START)
        )
    yield db
    await db.close()


async def started(db: Database) -> None:
    """A flow whose first command (recalculate_sku) the relay published at START."""
    box = Outbox(db, outbox)
    async with db.transaction() as session:
        await Orchestrator(db, box, clock=lambda: START).start_flows(session, ["SKU-1"])
        await session.execute(update(outbox).values(published_at=START))


async def attempts(db: Database) -> int:
    async with db.reading() as session:
        return int(await session.scalar(select(flow_steps.c.attempts).where(flow_steps.c.step == RECALCULATE)) or 0)


async def test_a_step_is_held_a_timeout_after_its_queue_was_last_seen_busy_and_an_unread_queue_holds_nothing(
    db: Database, caplog: pytest.LogCaptureFixture
):
    queues, clock = Queues(), Clock()
    timeouts = StepTimeouts(db, Outbox(db, outbox), TIMEOUT, 5, queue_state=queues.queue_state, clock=clock)
    await started(db)
    queue = OWNER_QUEUES[RECALCULATE]

    queues.states[queue] = QueueState(ready=300, consumers=2)
    clock.now = START + timedelta(seconds=11)
    assert (await timeouts.sweep(), timeouts.held, await attempts(db)) == (0, 1, 1)

    queues.states[queue] = QueueState(ready=0, consumers=2)  # drained: the clock runs again a timeout later
    clock.now = START + timedelta(seconds=20)
    assert (await timeouts.sweep(), timeouts.held, await attempts(db)) == (0, 1, 1)
    clock.now = START + timedelta(seconds=22)
    assert (await timeouts.sweep(), timeouts.held, await attempts(db)) == (1, 0, 2)

    # Unreachable: no queue is seen busy; the clocks run as without the hold. Said once, not every sweep.
    async with db.transaction() as session:
        await session.execute(update(outbox).values(published_at=clock.now))
    queues.unreachable = True
    with caplog.at_level(logging.INFO, logger="skuflow.inventory.flows"):
        for seconds in (25, 28, 33):
            clock.now = START + timedelta(seconds=seconds)
            await timeouts.sweep()
        assert await attempts(db) == 3
        queues.unreachable = False
        await timeouts.sweep()
    said = [record.getMessage() for record in caplog.records if "flow steps' queues" in record.getMessage()]
    assert len(said) == 2, said
    assert said[0].startswith("cannot read the flow steps' queues (ConnectionError(")
    assert said[1] == "the flow steps' queues are read again"


async def test_a_queue_with_messages_and_no_consumer_holds_nothing(db: Database):
    """The owner is down: its steps are sent again and their flows fail, visibly."""
    queues, clock = Queues(), Clock()
    timeouts = StepTimeouts(db, Outbox(db, outbox), TIMEOUT, 5, queue_state=queues.queue_state, clock=clock)
    await started(db)
    queues.states[OWNER_QUEUES[RECALCULATE]] = QueueState(ready=300, consumers=0)
    clock.now = START + timedelta(seconds=11)
    assert (await timeouts.sweep(), timeouts.held, await attempts(db)) == (1, 0, 2)


async def test_a_backlog_of_replies_holds_a_step_whose_owner_is_there(db: Database):
    """The owner answered, and its reply waits its turn in inventory's queue: a resend would only add a
    reply behind it."""
    queues, clock = Queues(), Clock()
    timeouts = StepTimeouts(db, Outbox(db, outbox), TIMEOUT, 5, queue_state=queues.queue_state, clock=clock)
    await started(db)
    queues.states[routes.FLOW_REPLIES] = QueueState(ready=3000, consumers=1)
    clock.now = START + timedelta(seconds=11)
    assert (await timeouts.sweep(), timeouts.held, await attempts(db)) == (0, 1, 1)
    queues.states[routes.FLOW_REPLIES] = QueueState(ready=0, consumers=1)
    clock.now = START + timedelta(seconds=22)
    assert (await timeouts.sweep(), timeouts.held, await attempts(db)) == (1, 0, 2)


async def test_a_backlog_of_replies_does_not_hold_a_step_whose_owner_is_down(db: Database):
    """Other owners' replies keep the reply queue busy; this step's owner, with no consumer, sends none."""
    queues, clock = Queues(), Clock()
    timeouts = StepTimeouts(db, Outbox(db, outbox), TIMEOUT, 5, queue_state=queues.queue_state, clock=clock)
    await started(db)
    queues.states[routes.FLOW_REPLIES] = QueueState(ready=3000, consumers=1)
    queues.states[OWNER_QUEUES[RECALCULATE]] = QueueState(ready=0, consumers=0)
    clock.now = START + timedelta(seconds=11)
    assert (await timeouts.sweep(), timeouts.held, await attempts(db)) == (1, 0, 2)
