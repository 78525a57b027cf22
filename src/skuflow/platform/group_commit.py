"""Group commit: the requests that arrive while one transaction is being written go together in the next.

One transaction per request makes every request pay the transaction's fixed cost: on SQLite the one writer
lock, held across a round trip through the event loop per statement; on PostgreSQL a connection, BEGIN and
COMMIT. Under load, requests then queue for the lock one by one. Here they queue for the next transaction
instead (gathered as a batched consumer gathers its messages: `skuflow.messaging.batching.Gathering`): a
request alone goes at once, alone, and under load a transaction takes everything that queued while the
previous one ran, at most `max_batch`.

`write` performs a batch in one transaction and answers each item's result, or the exception that item alone
raised before writing anything (it is then left out of the transaction, and the others commit). If the
transaction itself fails, each of its items is performed alone by `one`, so that an item that cannot succeed
fails alone. Each item runs in the context (flow ids, ...) of the request that submitted it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from skuflow.messaging.batching import Gathering, each_alone

log = logging.getLogger("skuflow.group_commit")

T = TypeVar("T")
R = TypeVar("R")


class Submitted(Generic[T]):
    """An item, with the context of the request that submitted it."""

    __slots__ = ("context", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.context = contextvars.copy_context()

    def run(self, work: Callable[[T], Coroutine[Any, Any, R]]) -> asyncio.Task[R]:
        """`work(item)` as a task in the submitter's context."""
        return asyncio.get_running_loop().create_task(work(self.item), context=self.context.copy())


Write = Callable[[Sequence[Submitted[T]]], Awaitable[list["R | Exception"]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Write[T, R], one: Callable[[T], Coroutine[Any, Any, R]], max_batch: int = 100) -> None:
        self.write = write
        self.one = one
        self.gathering: Gathering[Submitted[T], R] = Gathering(self._run, max_batch)

    async def submit(self, item: T) -> R:
        return await self.gathering.submit(Submitted(item))

    async def _run(self, batch: Sequence[Submitted[T]]) -> list[R | Exception]:
        if len(batch) == 1:
            return await each_alone(batch, self._alone)
        try:
            return await self.write(batch)
        except Exception as error:
            log.info("a group of %d failed (%r): performing each alone", len(batch), error)
            return await each_alone(batch, self._alone)

    async def _alone(self, submitted: Submitted[T]) -> R:
        return await submitted.run(self.one)
