"""Users' message handlers: learning a SKU's availability, in either coordination style, for the wishlists.

Choreography: a `sku_processed` event makes users ask inventory for the SKU's availability. Orchestration:
the `update_wishlists_for_sku` command carries it, and users replies once it is recorded. Either way the
recording is `wishlists.record_availability`: only a newer revision changes anything, and a transition to
available makes one email due per wishlisting user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from skuflow.messaging import Message
from skuflow.platform.availability import Availability, AvailabilitySource
from skuflow.platform.clock import Clock, utc_now
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies
from skuflow.users.messages import SkuProcessed, UpdateWishlistsForSku
from skuflow.users.wishlists import record_availability

log = logging.getLogger("skuflow.users")


class UsersConsumers:
    """What the handlers use: users' database, inventory's availability, the replies of the step users owns,
    `emails_due` (wakes the mailer once emails are committed) and a clock."""

    def __init__(
        self,
        db: Database,
        inventory: AvailabilitySource,
        replies: StepReplies,
        emails_due: Callable[[], None],
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.inventory = inventory
        self.replies = replies
        self.emails_due = emails_due
        self.clock = clock

    async def learn_availability(self, messages: Sequence[Message[SkuProcessed]]) -> None:
        """`users.sku_processed` (choreography): ask inventory, then record what is new."""
        for message in messages:
            sku = message.body.sku
            news = await self.inventory.availability(sku)  # unreachable or failing: retried later
            if news is None:
                log.warning("inventory does not know SKU %s: nothing to update", sku)
                continue
            await self._record(sku, news)

    async def update_wishlists(self, messages: Sequence[Message[UpdateWishlistsForSku]]) -> None:
        """`users.update_wishlists_for_sku` (orchestration): record the availability the command carries (a
        stale or repeated one changes nothing), then reply."""
        for message in messages:
            command = message.body
            await self._record(command.sku, Availability(command.available_for_sale > 0, command.revision))
            await self.replies.finish(message, "update_wishlists_for_sku", command.sku, command.revision)

    async def _record(self, sku: str, news: Availability) -> None:
        await record_availability(self.db, sku, news, self.emails_due, now=self.clock())
