"""Inventory's message handlers: recalculating a SKU's availability (in either coordination style) and
moving the orchestrated flows on as the steps' owners reply."""

from __future__ import annotations

from collections.abc import Sequence

from skuflow.inventory.messages import RecalculateSku, SkuProcessed, StepFinished
from skuflow.inventory.orchestration import Orchestrator
from skuflow.inventory.recalculation import recalculate
from skuflow.inventory.recording import Announcer
from skuflow.messaging import Message
from skuflow.platform.clock import Clock, utc_now
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies


class InventoryConsumers:
    """What the handlers use: inventory's database, the announcer of changes (a repair is one), the
    orchestrator, the replies of the step inventory owns, and a clock."""

    def __init__(
        self,
        db: Database,
        announcer: Announcer,
        orchestrator: Orchestrator,
        replies: StepReplies,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.announcer = announcer
        self.orchestrator = orchestrator
        self.replies = replies
        self.clock = clock

    async def recalculate_availability(self, messages: Sequence[Message[SkuProcessed]]) -> None:
        """`inventory.sku_processed` (choreography): one transaction for the batch."""
        await recalculate(self.db, self.announcer, [message.body.sku for message in messages], self.clock())

    async def recalculate_for_flow(self, messages: Sequence[Message[RecalculateSku]]) -> None:
        """`inventory.recalculate_sku` (orchestration): recalculate, then reply with each revision."""
        revisions = await recalculate(self.db, self.announcer, [message.body.sku for message in messages], self.clock())
        replies = []
        for message in messages:
            sku = message.body.sku
            if sku in revisions:
                replies.append(self.replies.reply(message, "recalculate_sku", sku, revisions[sku]))
            else:
                replies.append(self.replies.reply(message, "recalculate_sku", sku, 0, error=f"unknown SKU {sku!r}"))
        await self.replies.send(replies)

    async def on_step_finished(self, messages: Sequence[Message[StepFinished]]) -> None:
        """`inventory.flow_replies`: each reply moves its flow on."""
        await self.orchestrator.on_step_finished(messages)
