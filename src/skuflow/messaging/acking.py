"""The acks of one AMQP channel's deliveries, coalesced: one `basic.ack multiple` for many.

A consumer with a prefetch of 100 settles up to 100 deliveries at about the same time; acking each alone
costs a frame, a write and the broker's work per message, and the broker shares the machine. Here the acks
that become due in one turn of the event loop go out together: one `basic.ack` with `multiple=True` for
the longest run of settled deliveries at the front of the channel's window, and one `basic.ack` of its own
for each settled delivery behind one still being handled, so that a slow message never holds back the
acks of those after it (which would fill the prefetch window and stall the consumer).

The broker must see each tag settled once, and a reject before any multiple ack that would cover it: every
write (a flush, a reject) computes and queues its frames under one lock, so the frames reach the channel in
the order they were decided, whatever else waits on the connection's write queue. A tag settled twice by
mistake is ignored here rather than sent (the broker would close the channel).

Delivery tags count up per channel, in delivery order; a reopened channel starts again, so a consumer
keeps one `ChannelAcks` per channel it consumes on, and an ack on a closed channel fails as a lone ack
would: the broker delivers the message again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiormq.abc import AbstractChannel

log = logging.getLogger("skuflow.messaging.acking")


class ChannelAcks:
    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._window: deque[int] = deque()  # delivered, not yet covered by a multiple ack, in tag order
        self._open: set[int] = set()  # delivered, not yet settled (acked or rejected)
        self._due: set[int] = set()  # settled by an ack, not yet written
        self._written: set[int] = set()  # written alone (an ack or a reject), still in the window
        self._lock = asyncio.Lock()  # one write at a time: frames in the order they were decided
        self._flush: asyncio.Task[None] | None = None

    def delivered(self, tag: int) -> None:
        """Called for every delivery, in delivery order, before it is handled."""
        self._window.append(tag)
        self._open.add(tag)

    async def ack(self, tag: int) -> None:
        """Ack `tag` with the others due in this turn of the loop; returns once the ack is written."""
        if not self._settles(tag):
            return
        self._due.add(tag)
        flush = self._flush
        if flush is None or flush.done():
            flush = self._flush = asyncio.ensure_future(self._write_due())
            flush.add_done_callback(_retrieved)  # seen even when every waiter has gone (a stop)
        await asyncio.shield(flush)

    async def reject(self, tag: int) -> None:
        """Reject `tag` without requeueing (the queue dead-letters it), before any later multiple ack."""
        if not self._settles(tag):
            return
        async with self._lock:
            self._written.add(tag)
            await self.channel.basic_reject(tag, requeue=False)

    def _settles(self, tag: int) -> bool:
        if tag not in self._open:
            log.debug("delivery %d on channel %s settled twice: ignored", tag, self.channel.number)
            return False
        self._open.discard(tag)
        return True

    async def _write_due(self) -> None:
        await asyncio.sleep(0)  # let the other handlers finishing in this turn add their acks
        async with self._lock:
            self._flush = None  # acks due from here on go in the next write
            front = None
            while self._window and self._window[0] not in self._open:
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
                # Queued in order under the lock; waiting for the last one's write covers them all.
                await self.channel.basic_ack(tag, multiple=multiple, wait=n == len(acks))


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("acks not written (the channel closed?): %r", task.exception())
