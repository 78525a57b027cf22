"""Group commit: the requests that arrive while one transaction is being written go together in the next.

One transaction per request makes every request pay the transaction's fixed cost: on SQLite the one writer
lock, held across a round trip through the event loop per statement; on PostgreSQL a connection, BEGIN and
COMMIT. Under load, requests then queue for the lock one by one. Here they queue for the next transaction
instead: nothing waits to fill one (a request alone goes at once, alone), and under load a transaction takes
everything that queued while the previous one ran, at most `max_batch`.

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
        self.max_batch = max_batch
        self.transactions = 0
        self.largest = 0
        self._waiting: list[tuple[Submitted[T], asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((Submitted(item), future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                taken, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                batch = [(submitted, future) for submitted, future in taken if not future.done()]
                if batch:
                    await self._run(batch)
        except asyncio.CancelledError:  # the loop is closing: no request waits for ever
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                future.cancel()
            raise
        finally:
            self._running = None

    async def _run(self, batch: list[tuple[Submitted[T], asyncio.Future[R]]]) -> None:
        self.transactions += 1
        self.largest = max(self.largest, len(batch))
        try:
            if len(batch) == 1:
                submitted, future = batch[0]
                _settle(future, await _outcome(submitted.run(self.one)))
                return
            try:
                results = await self.write([submitted for submitted, _ in batch])
            except Exception as error:
                log.info("a group of %d failed (%r): performing each alone", len(batch), error)
                for submitted, future in batch:
                    if not future.done():
                        _settle(future, await _outcome(submitted.run(self.one)))
                return
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise


async def _outcome(task: asyncio.Task[R]) -> R | Exception:
    try:
        return await task
    except Exception as error:
        return error


def _settle(future: asyncio.Future[R], result: R | Exception) -> None:
    if future.done():  # its request went away meanwhile
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
