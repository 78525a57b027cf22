"""Handing a batch handler the messages that arrive together, while each message keeps its own outcome.

A consumer handles up to `prefetch` deliveries at once, each in its own task (consumer.py). For a batched
subscription those tasks do not call the handler themselves: each validated message joins a `Batcher`, which
runs the batch handler on everything that has joined and is not yet handled, at most `max_batch` at a time,
one batch after another. Nothing waits to fill a batch: under light load the first message runs at once,
alone, with no added latency; under load the messages that arrived while a batch ran form the next one, so
the batch grows with the load (one statement and one call for many messages where they were one each).

Each message still gets its own outcome: if a batch fails, its messages are handled again one at a time, so
that a message that can never succeed is retried or dead-lettered alone and the others are acked. A message
whose delivery was cancelled before its batch began (the consumer stopping) is left out, and goes back to
its queue as it would have unbatched.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Sequence
from typing import Any, Generic

from skuflow.messaging.broker import BatchHandler, Message, ModelT
from skuflow.messaging.timeouts import bounded

log = logging.getLogger("skuflow.messaging")

Waiting = tuple[Message[Any], "asyncio.Future[None]"]


class Batcher(Generic[ModelT]):
    def __init__(self, handler: BatchHandler[ModelT], max_batch: int, timeout: float) -> None:
        self.handler = handler
        self.max_batch = max_batch
        self.timeout = timeout  # for each call of the handler, a batch or a single message
        self.batches = 0
        self.largest = 0
        self._waiting: list[Waiting] = []
        self._running: asyncio.Task[None] | None = None

    async def handle(self, message: Message[ModelT]) -> None:
        """Handle `message` in the next batch; raises what handling it alone raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((message, future))
        if self._running is None:
            # A context of its own: the batch belongs to no one message's flow.
            self._running = asyncio.create_task(self._drain(), context=contextvars.Context())
        await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                taken, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                batch = [(message, future) for message, future in taken if not future.done()]
                if batch:
                    await self._run(batch)
        except asyncio.CancelledError:  # the loop is closing: no delivery waits for ever
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                future.cancel()
            raise
        finally:
            self._running = None

    async def _run(self, batch: list[Waiting]) -> None:
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        try:
            error = await self._call([message for message, _ in batch])
            if error is None or len(batch) == 1:
                for _, future in batch:
                    _settle(future, error)
                return
            log.info("a batch of %d failed (%r): handling its messages one at a time", len(batch), error)
            for message, future in batch:
                if not future.done():
                    _settle(future, await self._call([message]))
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise

    async def _call(self, messages: Sequence[Message[ModelT]]) -> Exception | None:
        try:
            if len(messages) == 1:
                with messages[0].flow():
                    await bounded(self.handler(messages), self.timeout)
            else:
                await bounded(self.handler(messages), self.timeout)
        except Exception as error:
            return error
        return None


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # its delivery was cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
