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

The gathering itself (`Gathering`) knows nothing of messages: the stock reports' group commit
(`skuflow.platform.group_commit`) gathers HTTP requests the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import trace

from skuflow.messaging.broker import BatchHandler, Message, ModelT
from skuflow.messaging.timeouts import bounded

log = logging.getLogger("skuflow.messaging")

T = TypeVar("T")
R = TypeVar("R")

# The span of a batch handled together.
BatchTracing = Callable[[Sequence[Message[Any]]], contextlib.AbstractContextManager[object]]
# A batch's run: each item's result, or the exception that item alone ends with.
Run = Callable[[Sequence[T]], Awaitable[list["R | Exception"]]]


class Gathering(Generic[T, R]):
    """Items submitted while a batch runs form the next batch (at most `max_batch`); a lone item runs at once.

    `run` gets the batch and answers each item's outcome; an item whose submitter went away before its batch
    began is left out."""

    def __init__(self, run: Run[T, R], max_batch: int) -> None:
        self.run = run
        self.max_batch = max_batch
        self.batches = 0
        self.largest = 0
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """`item`'s outcome: its result, or the exception it ended with, raised here."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._running is None:
            # A context of its own: a batch belongs to none of its submitters.
            self._running = asyncio.create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                taken, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                batch = [(item, future) for item, future in taken if not future.done()]
                if batch:
                    await self._run(batch)
        except asyncio.CancelledError:  # the loop is closing: nobody waits for ever
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                future.cancel()
            raise
        finally:
            self._running = None

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        try:
            outcomes = await self.run([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its submitter went away meanwhile
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


async def each_alone(items: Sequence[T], one: Callable[[T], Awaitable[R]]) -> list[R | Exception]:
    """Each item's outcome when performed alone, one after another (after a batch of them failed)."""
    outcomes: list[R | Exception] = []
    for item in items:
        try:
            outcomes.append(await one(item))
        except Exception as error:
            outcomes.append(error)
    return outcomes


class Batcher(Generic[ModelT]):
    """The messages of one consumer, gathered for its batch handler."""

    def __init__(
        self, handler: BatchHandler[ModelT], max_batch: int, timeout: float, tracing: BatchTracing | None = None
    ) -> None:
        """`tracing`: the span of a batch handled together (`MessageTracing.batch`, partly applied)."""
        self.handler = handler
        self.tracing = tracing
        self.timeout = timeout  # for each call of the handler, a batch or a single message
        self.gathering: Gathering[Message[Any], None] = Gathering(self._run, max_batch)

    async def handle(self, message: Message[ModelT]) -> None:
        """Handle `message` in the next batch; raises what handling it alone raised."""
        await self.gathering.submit(message)

    async def _run(self, messages: Sequence[Message[ModelT]]) -> list[Exception | None]:
        if len(messages) == 1:
            return await each_alone(messages, self._alone)
        try:
            with self.tracing(messages) if self.tracing is not None else contextlib.nullcontext():
                await bounded(self.handler(messages), self.timeout)
        except Exception as error:
            log.info("a batch of %d failed (%r): handling its messages one at a time", len(messages), error)
            return await each_alone(messages, self._alone)
        return [None] * len(messages)

    async def _alone(self, message: Message[ModelT]) -> None:
        """In its own flow and under its own processing span (the batch runs in a context of its own)."""
        with message.flow(), trace.use_span(message.span) if message.span is not None else contextlib.nullcontext():
            await bounded(self.handler((message,)), self.timeout)
