"""The acks of one AMQP channel's deliveries, coalesced: one `basic.ack multiple` for many.

A consumer with a prefetch of 100 settles up to 100 deliveries at about the same time; acking each alone
costs a frame, a write and the broker's work per message, and the broker shares the machine. Here the acks
that become due in one turn of the event loop go out together: one `basic.ack` with `multiple=True` for
the longest run of settled deliveries at the front of the channel's window, and one `basic.ack` of its own
for each settled delivery behind one still being handled, so that a slow message never holds back the
acks of those after it (which would fill the prefetch window and stall the consumer).

Delivery tags count up per channel, in delivery order; a reopened channel starts again, so a consumer
keeps one `ChannelAcks` per channel it consumes on, and an ack on a closed channel fails as a lone ack
would: the broker delivers the message again.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiormq.abc import AbstractChannel


class ChannelAcks:
    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._window: deque[int] = deque()  # delivered, not yet covered by a multiple ack, in tag order
        self._due: set[int] = set()  # settled, ack not yet written
        self._written: set[int] = set()  # acked or rejected alone, still in the window behind an unsettled one
        self._flush: asyncio.Task[None] | None = None

    def delivered(self, tag: int) -> None:
        """Called for every delivery, in delivery order, before it is handled."""
        self._window.append(tag)

    async def ack(self, tag: int) -> None:
        """Ack `tag` with the others due in this turn of the loop; returns once the ack is written."""
        self._due.add(tag)
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._write_due())
        await asyncio.shield(self._flush)

    async def reject(self, tag: int) -> None:
        """Reject `tag` without requeueing (the queue dead-letters it), at once."""
        self._written.add(tag)
        await self.channel.basic_reject(tag, requeue=False)

    async def _write_due(self) -> None:
        await asyncio.sleep(0)  # let the other handlers finishing in this turn add their acks
        self._flush = None  # acks due from here on go in the next write
        front = None
        while self._window and (self._window[0] in self._due or self._window[0] in self._written):
            tag = self._window.popleft()
            if tag in self._due:
                self._due.discard(tag)
                front = tag
            else:
                self._written.discard(tag)
        behind, self._due = self._due, set()
        self._written |= behind
        acks = ([(front, True)] if front is not None else []) + [(tag, False) for tag in sorted(behind)]
        for n, (tag, multiple) in enumerate(acks, 1):
            # The writer sends frames in order: waiting for the last one's write covers them all.
            await self.channel.basic_ack(tag, multiple=multiple, wait=n == len(acks))
