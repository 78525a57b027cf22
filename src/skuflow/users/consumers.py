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
from skuflow.platform.availability import Availability, AvailabilitySource, newest
from skuflow.platform.clock import Clock, utc_now
from skuflow.platform.db import Database
from skuflow.platform.flows import StepReplies
from skuflow.users.messages import SkuProcessed, UpdateWishlistsForSku
from skuflow.users.wishlists import record_availabilities

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
        """`users.sku_processed` (choreography): ask inventory (one call for the batch), then record what is
        new (one transaction)."""
        skus = {message.body.sku for message in messages}
        news = await self.inventory.availabilities(list(skus))  # unreachable or failing: retried later
        for sku in skus - news.keys():
            log.warning("inventory does not know SKU %s: nothing to update", sku)
        await self._record(news)

    async def update_wishlists(self, messages: Sequence[Message[UpdateWishlistsForSku]]) -> None:
        """`users.update_wishlists_for_sku` (orchestration): record the availability the commands carry (a
        stale or repeated one changes nothing), then reply."""
        news = newest(
            (message.body.sku, Availability(message.body.available_for_sale > 0, message.body.revision))
            for message in messages
        )
        await self._record(news)
        await self.replies.finish_each(messages, "update_wishlists_for_sku")

    async def _record(self, news: dict[str, Availability]) -> None:
        if news:
            await record_availabilities(self.db, news, self.emails_due, self.clock())
